// SPDX-License-Identifier: GPL-2.0

//! The GPU hardware interface the SVM core programs.
//!
//! The SVM core (`svm.rs`) does not know which GPU it drives: it maps and
//! unmaps GPU page-table entries, flushes the GPU TLB and serves the faults
//! the GPU raises, all through [`GpuVm`]. The software GPU ([`soft`])
//! implements it with a page table in kernel memory; a Nouveau/Nova backend
//! would implement it with GMMU page tables, the replayable fault buffer and
//! the copy engine.
//!
//! Page-table memory is allocated outside the SVM lock ([`GpuVm::reserve`]):
//! the lock is taken by invalidation callbacks, which may run from reclaim,
//! so nothing under it may allocate with `GFP_KERNEL`.

pub(crate) mod engine;
pub(crate) mod soft;

use kernel::prelude::*;

use crate::mm::notifier::CpuPage;

/// Size of a small GPU page.
pub(crate) const PAGE_SIZE_4K: usize = 1 << 12;
/// Size of a huge GPU page (a PDE maps it whole).
pub(crate) const PAGE_SIZE_2M: usize = 1 << 21;

/// A GPU page-table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pte {
    /// The system page it maps.
    pub(crate) page: CpuPage,
    /// Writable.
    pub(crate) writable: bool,
    /// Part of a 2 MiB mapping.
    pub(crate) huge: bool,
}

/// A GPU address space: its page table and TLB. The SVM core serializes
/// every call with its own lock.
pub(crate) trait GpuVm: Send + Sync + Unpin + 'static {
    /// Page-table memory reserved for one [`GpuVm::map`] call.
    type Reservation;

    /// Allocates what mapping `[start, end)` may need. May sleep; called
    /// without the SVM lock.
    fn reserve(start: usize, end: usize) -> Result<Self::Reservation>;

    /// Maps `ptes` from `start` on (one per 4 KiB page; `None` leaves the
    /// entry unmapped). Does not allocate.
    fn map(&mut self, res: Self::Reservation, start: usize, ptes: &[Option<Pte>]) -> usize;

    /// Unmaps `[start, end)`; returns how many entries were dropped.
    fn unmap(&mut self, start: usize, end: usize) -> usize;

    /// Makes the entries of `[start, end)` read-only; returns how many lost
    /// write access.
    fn protect(&mut self, start: usize, end: usize) -> usize;

    /// Flushes the GPU TLB for `[start, end)`.
    fn flush_tlb(&mut self, start: usize, end: usize);

    /// The entry mapping `va`, if any.
    fn lookup(&self, va: usize) -> Option<Pte>;
}
