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

pub(crate) mod copy;
pub(crate) mod engine;
pub(crate) mod memory;
pub(crate) mod queue;
pub(crate) mod soft;

use core::ptr::NonNull;

use kernel::{
    bindings,
    prelude::*,
    sync::Arc, //
};

use crate::{
    mm::{
        notifier::CpuPage,
        PinnedWrite, //
    },
    svm::MirrorVm,
    uapi, //
};

/// Size of a small GPU page.
pub(crate) const PAGE_SIZE_4K: usize = 1 << 12;
/// Size of a huge GPU page (a PDE maps it whole).
pub(crate) const PAGE_SIZE_2M: usize = 1 << 21;

/// What a GPU page-table entry points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PteAddr {
    /// A system page.
    System(CpuPage),
    /// A page of device memory, by index.
    Vram(usize),
}

/// A GPU page-table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pte {
    /// The page it maps.
    pub(crate) addr: PteAddr,
    /// Writable.
    pub(crate) writable: bool,
    /// Part of a 2 MiB mapping.
    pub(crate) huge: bool,
    /// Atomics may use it: device memory, memory the device has exclusive
    /// access to, or memory whose atomics the range's policy leaves to
    /// the system.
    pub(crate) atomic: bool,
}

/// A GPU page fault: an entry of the replayable fault buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Fault {
    /// The faulting address.
    pub(crate) addr: usize,
    /// A write (or atomic) access.
    pub(crate) write: bool,
    /// An atomic access.
    pub(crate) atomic: bool,
}

/// What a submitted command reports to its fault handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum JobEvent {
    /// Stalled on faults: serve them, then [`GpuJob::replay`] (or
    /// [`GpuJob::cancel`]).
    Faulted,
    /// Finished: see [`GpuJob::finish`].
    Done,
}

/// A command running on a GPU, as its fault handler sees it: on real
/// hardware, the channel's completion and the replayable fault buffer.
pub(crate) trait GpuJob: Send + Sync {
    /// Waits for the next event; on [`JobEvent::Faulted`] the faults are in
    /// `faults` (which has room for [`FAULT_BATCH`]). With `interruptible`,
    /// a signal makes it return `EINTR`.
    fn wait(&self, faults: &mut KVec<Fault>, interruptible: bool) -> Result<JobEvent>;

    /// Resumes the job after its faults were served.
    fn replay(&self);

    /// Stops the job as soon as it can; it still reports
    /// [`JobEvent::Done`].
    fn cancel(&self);

    /// After [`JobEvent::Done`]: how it ended, and the old value of an
    /// atomic.
    fn finish(&self) -> (Result, u64);
}

/// Most faults a GPU reports at once: its fault buffer's size.
pub(crate) const FAULT_BATCH: usize = 64;

/// The block the GPU reports one fault for: a miss anywhere in it is one
/// entry of the fault buffer (as a GPU TLB reports a big page once).
pub(crate) const FAULT_GRANULE: usize = 64 << 10;

/// A GPU address space: its page table, TLB and command submission. The
/// SVM core serializes the page-table calls with its own lock.
pub(crate) trait GpuVm: Sized + Send + Sync + Unpin + 'static {
    /// A submitted command.
    type Job: GpuJob;

    /// The device's command processor, which runs the commands.
    type Engine: Send + Sync;

    /// Most bytes one READ command may carry; the ioctl splits longer ones.
    const MAX_READ: usize;

    /// Submits `cmd` (validated) to `engine`, to run on the address space
    /// `vm`; a READ lands in `dst`, the pinned user buffer of at least
    /// `cmd.len` bytes.
    fn submit(
        engine: &Self::Engine,
        vm: Arc<MirrorVm<Self>>,
        cmd: uapi::drm_nsvm_cmd,
        dst: Option<PinnedWrite>,
    ) -> Result<Arc<Self::Job>>;

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

/// A page the copy engine reads or writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MemPage {
    /// A system page.
    System(NonNull<bindings::page>),
    /// A page of device memory, by index.
    Vram(usize),
}

/// One page copy of a batch; no source means zeroes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CopyOp {
    /// Where from; `None` to zero `dst`.
    pub(crate) src: Option<MemPage>,
    /// Where to.
    pub(crate) dst: MemPage,
}

/// Most 2 MiB chunks a device memory may have.
pub(crate) const MAX_CHUNKS: usize = 4096;

/// A GPU's memory and its copy engine.
///
/// Device memory is managed in 2 MiB chunks (by `crate::vram`); a chunk
/// becomes usable once [`DeviceMemory::populate`] returned for it.
pub(crate) trait DeviceMemory: Send + Sync + Sized + 'static {
    /// Readies chunk `chunk` (`PAGE_SIZE_2M` bytes from page index
    /// `chunk * 512`). May sleep; idempotent.
    fn populate(&self, chunk: usize) -> Result;

    /// Runs a batch of page copies on the copy engine and waits for it.
    ///
    /// # Safety
    ///
    /// Every system page stays allocated for the call and nothing else
    /// writes a destination; device pages are in populated chunks.
    unsafe fn copy(&self, ops: &[CopyOp]) -> Result;
}
