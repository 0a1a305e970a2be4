//! `BPF_MAP_UPDATE_BATCH` / `BPF_MAP_DELETE_BATCH` (Linux 5.6+), which aya 0.14 does not wrap:
//! one syscall for many elements instead of one per element. The kernel applies the elements in
//! order, each exactly as a single update or delete would, so a concurrent BPF lookup sees the
//! same sequence of states as with single writes.
#![allow(unsafe_code)] // the bpf(2) syscall

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use aya::Pod;

const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

/// `union bpf_attr`'s member for the `BPF_MAP_*_BATCH` commands.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Runs one batch command; `Ok(n)` when all `n` elements were applied, else the error and how
/// many were applied before it.
fn batch(
    cmd: libc::c_long,
    fd: BorrowedFd<'_>,
    keys: *const u8,
    values: *const u8,
    n: usize,
) -> Result<(), (io::Error, usize)> {
    let count = u32::try_from(n).map_err(|_| (io::Error::from(io::ErrorKind::InvalidInput), 0))?;
    let mut attr = BatchAttr {
        keys: keys as u64,
        values: values as u64,
        count,
        map_fd: fd.as_raw_fd() as u32,
        ..BatchAttr::default()
    };
    // SAFETY: `attr` is a valid `bpf_attr` prefix of the size passed; `keys` points to `n` keys
    // and `values` (when not null) to `n` values of the map's sizes, all alive for the call; the
    // kernel writes back only `attr.count`.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            &mut attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>() as libc::c_uint,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err((io::Error::last_os_error(), attr.count as usize))
    }
}

/// Writes `keys[i] → values[i]` for every i, in order. `values` holds `values_per_key` values
/// per key (the CPU count for per-CPU maps, else 1).
pub fn update<K: Pod, V: Pod>(
    fd: BorrowedFd<'_>,
    keys: &[K],
    values: &[V],
    values_per_key: usize,
) -> io::Result<()> {
    assert_eq!(
        keys.len() * values_per_key,
        values.len(),
        "one value (set) per key"
    );
    if keys.is_empty() {
        return Ok(());
    }
    batch(
        BPF_MAP_UPDATE_BATCH,
        fd,
        keys.as_ptr().cast(),
        values.as_ptr().cast(),
        keys.len(),
    )
    .map_err(|(e, done)| {
        io::Error::new(
            e.kind(),
            format!("batch update stopped after {done} of {}: {e}", keys.len()),
        )
    })
}

/// Deletes every key of `keys`, in order; keys that are not there are skipped.
pub fn delete<K: Pod>(fd: BorrowedFd<'_>, keys: &[K]) -> io::Result<()> {
    let mut rest = keys;
    while !rest.is_empty() {
        match batch(
            BPF_MAP_DELETE_BATCH,
            fd,
            rest.as_ptr().cast(),
            std::ptr::null(),
            rest.len(),
        ) {
            Ok(()) => return Ok(()),
            // The kernel stops at a missing key: skip it and go on after it.
            Err((e, done)) if e.raw_os_error() == Some(libc::ENOENT) && done < rest.len() => {
                rest = &rest[done + 1..];
            }
            Err((e, done)) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("batch delete stopped after {done} of {}: {e}", rest.len()),
                ));
            }
        }
    }
    Ok(())
}
