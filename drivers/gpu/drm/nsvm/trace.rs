// SPDX-License-Identifier: GPL-2.0

//! Tracepoints: `<tracefs>/events/nsvm/`.
//!
//! The events are defined in C (`nsvm_trace.h`, instantiated in `trace.c`);
//! each function here calls its C wrapper, which tests the event's static
//! key, so a disabled event costs one call. Emitted per fault batch, per
//! GPU fault of a batch, per migration step sequence, per invalidation that
//! dropped or protected entries, and per eviction: never per page.

use kernel::prelude::*;

use crate::gpu::Fault;

#[allow(
    dead_code,
    unreachable_pub,
    clippy::all,
    clippy::undocumented_unsafe_blocks,
    reason = "generated bindgen code"
)]
mod sys {
    include!("trace_bindings.rs");
}

/// Why pages moved (`nsvm_migrate`'s `cause`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Cause {
    /// A MIGRATE ioctl, or a GPU fault in a range that asks for it.
    Request = 0,
    /// A CPU fault on a device page.
    CpuFault = 1,
}

/// The errno of `r` as the events show it: 0 or negative.
fn ret<T>(r: &Result<T>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.to_errno(),
    }
}

/// `nsvm_gpu_fault`: one fault of a batch.
pub(crate) fn gpu_fault(client: u64, f: &Fault) {
    // SAFETY: The wrapper takes integers only and may be called anywhere.
    unsafe { sys::nsvm_trace_gpu_fault(client, f.addr as u64, f.write, f.atomic) }
}

/// `nsvm_fault_batch`: a batch of `faults` faults from `first` to `last`
/// was served with result `r`.
pub(crate) fn fault_batch<T>(client: u64, faults: &[Fault], r: &Result<T>) {
    let (first, last) = faults.iter().fold((u64::MAX, 0), |(lo, hi), f| {
        (lo.min(f.addr as u64), hi.max(f.addr as u64))
    });
    // SAFETY: As in `gpu_fault()`.
    unsafe { sys::nsvm_trace_fault_batch(client, faults.len() as u32, first, last, ret(r)) }
}

/// `nsvm_migrate`: `[start, end)` moved to the device (`to_device`) or to
/// system memory, `migrated` pages moved and `failed` did not.
pub(crate) fn migrate(
    dev: u32,
    (start, end): (usize, usize),
    to_device: bool,
    cause: Cause,
    migrated: u64,
    failed: u64,
) {
    // SAFETY: As in `gpu_fault()`.
    unsafe {
        sys::nsvm_trace_migrate(
            dev,
            start as u64,
            end as u64,
            to_device,
            cause as u32,
            migrated,
            failed,
        )
    }
}

/// `nsvm_invalidate`: `pages` GPU entries of `[start, end)` were dropped
/// (or write-protected).
pub(crate) fn invalidate(client: u64, start: usize, end: usize, write_protect: bool, pages: usize) {
    // SAFETY: As in `gpu_fault()`.
    unsafe {
        sys::nsvm_trace_invalidate(
            client,
            start as u64,
            end as u64,
            write_protect,
            pages as u64,
        )
    }
}

/// `nsvm_evict`: chunk `chunk` of device `dev` was evicted, `r` the pages
/// moved to system memory or the error. (Evictions are not also
/// `nsvm_migrate` events: they move device pages, wherever mapped.)
pub(crate) fn evict(dev: u32, chunk: usize, r: &Result<usize>) {
    let pages = r.as_ref().map_or(0, |n| *n as u64);
    // SAFETY: As in `gpu_fault()`.
    unsafe { sys::nsvm_trace_evict(dev, chunk as u32, pages, ret(r)) }
}
