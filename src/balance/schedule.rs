//! The turn schedule of (weighted) round robin, built once per backend set.
//!
//! Slot `i` with weight `w` appears `w` times in one cycle (after reducing all weights by their
//! gcd), at the virtual times `(k + ½) / w` for `k = 0..w`, and the cycle lists the entries in
//! order of those times (earliest deadline first, ties to the heavier slot, then the lower
//! index). That spreads each backend's turns evenly over the cycle, as nginx's smooth weighted
//! round robin does (`5,1,1` → `a a a b c a a`, never five `a` in a row), but it is computed up
//! front, so a pick is one atomic `fetch_add` on a cursor into the schedule instead of a
//! read-modify-write of every backend's current weight under a lock.

/// Longest schedule kept. When the gcd-reduced weights sum to more, they are scaled down to about
/// this sum (each weight > 0 keeps at least one turn): shares are then exact to within one turn
/// per slot per cycle. 4096 `u32`s = 16 KiB per VIP at most (more only with > 4096 backends).
pub const MAX_SCHEDULE: u64 = 4096;

/// Slot indexes in turn order for `weights` (one per slot; 0 = never scheduled). Empty when
/// every weight is 0.
pub fn build(weights: &[u32]) -> Box<[u32]> {
    let scaled = normalise(weights);
    let total: u64 = scaled.iter().map(|&w| u64::from(w)).sum();
    // (slot, k): the k-th turn of the slot, due at (2k + 1) / (2w).
    let mut turns: Vec<(u32, u32)> = Vec::with_capacity(total as usize);
    for (i, &w) in scaled.iter().enumerate() {
        turns.extend((0..w).map(|k| (i as u32, k)));
    }
    turns.sort_unstable_by(|&(i, k), &(j, m)| {
        let (wi, wj) = (u64::from(scaled[i as usize]), u64::from(scaled[j as usize]));
        // (2k+1)/wi vs (2m+1)/wj, cross-multiplied (no overflow: k < wi ≤ 2^32).
        let due_i = u128::from(2 * u64::from(k) + 1) * u128::from(wj);
        let due_j = u128::from(2 * u64::from(m) + 1) * u128::from(wi);
        due_i.cmp(&due_j).then(wj.cmp(&wi)).then(i.cmp(&j))
    });
    turns.into_iter().map(|(i, _)| i).collect()
}

/// Weights divided by their gcd, then scaled so that they sum to about [`MAX_SCHEDULE`] if they
/// sum to more (weights > 0 stay ≥ 1).
fn normalise(weights: &[u32]) -> Vec<u32> {
    let g = weights.iter().fold(0u32, |g, &w| gcd(g, w)).max(1);
    let reduced: Vec<u32> = weights.iter().map(|&w| w / g).collect();
    let total: u64 = reduced.iter().map(|&w| u64::from(w)).sum();
    if total <= MAX_SCHEDULE {
        return reduced;
    }
    reduced
        .iter()
        .map(|&w| match w {
            0 => 0,
            // ≤ MAX_SCHEDULE, fits.
            w => (u64::from(w) * MAX_SCHEDULE / total).max(1) as u32,
        })
        .collect()
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(s: &[u32], n: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for &i in s {
            c[i as usize] += 1;
        }
        c
    }

    #[test]
    fn one_cycle_holds_each_slot_weight_times_after_gcd() {
        assert_eq!(counts(&build(&[1, 2, 3]), 3), [1, 2, 3]);
        assert_eq!(counts(&build(&[10, 20, 0, 30]), 4), [1, 2, 0, 3]);
        assert_eq!(counts(&build(&[1, 1, 1]), 3), [1, 1, 1]);
        assert!(build(&[0, 0]).is_empty());
        assert!(build(&[]).is_empty());
    }

    #[test]
    fn turns_are_interleaved() {
        let s = build(&[5, 1, 1]);
        assert_eq!(&*s, &[0, 0, 0, 1, 2, 0, 0]);
        // Weights 3:1 → the light slot is never more than 3 turns away.
        let s = build(&[3, 1]);
        assert_eq!(&*s, &[0, 0, 1, 0]);
        // Equal weights → plain round robin in slot order.
        assert_eq!(&*build(&[2, 2, 2]), &[0, 1, 2]);
    }

    #[test]
    fn huge_weights_are_scaled_with_every_live_slot_kept() {
        let s = build(&[u32::MAX, 1, u32::MAX / 2, 0]);
        assert!(s.len() as u64 <= MAX_SCHEDULE + 4, "{}", s.len());
        let c = counts(&s, 4);
        assert!(c[1] >= 1 && c[3] == 0);
        let ratio = c[0] as f64 / c[2] as f64;
        assert!((ratio - 2.0).abs() < 0.01, "{c:?}");
    }
}
