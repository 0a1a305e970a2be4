//! `Snapshot::build` on a synthetic cluster of 10 000 apps / 100 000 tasks (goal ≤ 100 ms), the
//! decode of that Marathon answer, and the snapshot's memory measured with a counting allocator.
//!
//! `cargo bench --bench snapshot` (add `-- --quick` for a fast pass).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};

use criterion::{Criterion, criterion_group, criterion_main};
use ferryman::config::Config;
use ferryman::discovery::decode;
use ferryman::model::Snapshot;

#[path = "support/synth.rs"]
mod synth;

/// Counts live heap bytes, so the size of what a build keeps can be read off.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwards the caller's layout to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as `GlobalAlloc::realloc`, forwarded.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn bench(c: &mut Criterion) {
    let shape = synth::Shape::LARGE;
    let body = serde_json::to_vec(&synth::marathon_apps(shape)).expect("synthetic JSON serialises");
    let config = Config::default();

    let before = LIVE.load(Ordering::Relaxed);
    let state = Arc::new(decode::marathon_apps(&body).expect("synthetic answer decodes"));
    let state_bytes = LIVE.load(Ordering::Relaxed) - before;

    let empty = Snapshot::empty();
    let (before, allocs) = (LIVE.load(Ordering::Relaxed), ALLOCS.load(Ordering::Relaxed));
    let first = Snapshot::build(&state, &config, &empty);
    let snapshot_bytes = LIVE.load(Ordering::Relaxed) - before;
    let build_allocs = ALLOCS.load(Ordering::Relaxed) - allocs;
    eprintln!(
        "synthetic cluster: {} apps, {} tasks, answer {} bytes; ClusterState {:.1} MiB; \
         snapshot {:.1} MiB in {} allocations; {} VIPs, {} services, {} backends",
        shape.apps,
        state.tasks.len(),
        body.len(),
        state_bytes as f64 / 1048576.0,
        snapshot_bytes as f64 / 1048576.0,
        build_allocs,
        first.counts.vips,
        first.counts.services,
        first.counts.backends,
    );

    let mut g = c.benchmark_group("snapshot");
    g.sample_size(10);
    g.bench_function("build_10k_apps_100k_tasks_first", |b| {
        b.iter(|| black_box(Snapshot::build(&state, &config, &empty)))
    });
    g.bench_function("build_10k_apps_100k_tasks_steady", |b| {
        b.iter(|| black_box(Snapshot::build(&state, &config, &first)))
    });
    g.bench_function("clone_state_100k_tasks", |b| {
        b.iter(|| black_box((*state).clone()))
    });
    g.bench_function("decode_marathon_100k_tasks", |b| {
        b.iter(|| black_box(decode::marathon_apps(&body).expect("decodes")))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
