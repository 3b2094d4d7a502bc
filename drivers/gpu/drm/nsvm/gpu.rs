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
pub(crate) mod fault;
pub(crate) mod memory;
pub(crate) mod queue;
pub(crate) mod soft;

use core::ptr::NonNull;

use kernel::{
    bindings,
    dma_fence::DmaFence,
    prelude::*,
    sync::{
        aref::ARef,
        Arc, //
    },
    time::{
        Instant,
        Monotonic, //
    },
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

/// Mapped 4 KiB entries of a GPU address space, by what they map.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Entries {
    /// Entries of system pages.
    pub(crate) system: usize,
    /// Entries of device memory.
    pub(crate) vram: usize,
}

/// A GPU page-table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pte {
    /// The page it maps.
    pub(crate) addr: PteAddr,
    /// Writable.
    pub(crate) writable: bool,
    /// A 2 MiB mapping: in a [`Mapping`], one big-page entry for the whole
    /// 2 MiB; from [`GpuVm::lookup`], a page of one.
    pub(crate) huge: bool,
    /// Atomics may use it: device memory, memory the device has exclusive
    /// access to, or memory whose atomics the range's policy leaves to
    /// the system.
    pub(crate) atomic: bool,
}

/// A GPU page-table entry to write at `va`: a 4 KiB page or, with
/// [`Pte::huge`], the 2 MiB from `va` (2 MiB-aligned) as one big-page entry,
/// whose `addr` is the first of 512 contiguous pages (a PMD-mapped THP).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Mapping {
    /// Where.
    pub(crate) va: usize,
    /// The entry.
    pub(crate) pte: Pte,
}

impl Mapping {
    /// Bytes it maps.
    pub(crate) fn size(&self) -> usize {
        if self.pte.huge {
            PAGE_SIZE_2M
        } else {
            PAGE_SIZE_4K
        }
    }

    /// The mapping of `maps` (ascending, not overlapping) that maps `va`.
    pub(crate) fn covering(maps: &[Mapping], va: usize) -> Option<&Mapping> {
        let i = maps.partition_point(|m| m.va <= va).checked_sub(1)?;
        let m = &maps[i];
        (va - m.va < m.size()).then_some(m)
    }
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

/// An entry of the device's replayable fault buffer: which GPU address
/// space faulted, on which channel, the access and when.
#[derive(Clone, Copy)]
pub(crate) struct FaultEntry {
    /// The faulting address space (the mirror's client id).
    pub(crate) asid: u64,
    /// The faulting channel ([`GpuChannel::id`]).
    pub(crate) chid: u64,
    /// Which of the channel's stalls raised it: a cancel of the entry
    /// ([`GpuChannel::cancel`]) fails the channel only while that stall
    /// lasts, not a later job's.
    pub(crate) tag: u64,
    /// The access.
    pub(crate) fault: Fault,
    /// When it was raised (the hardware entry's timestamp).
    pub(crate) raised: Instant<Monotonic>,
}

/// The handler of the replayable-fault interrupt (an interrupt's top half:
/// it must not sleep, and may run with locks of the fault buffer held).
pub(crate) trait FaultIrq: Send + Sync {
    /// Entries are waiting in the fault buffer.
    fn fault_irq(&self);
}

/// The device's replayable fault buffer and interrupt lines, as the fault
/// handler sees them (on NVIDIA: the `FAULT_BUFFER` ring with its GET/PUT
/// registers, the replayable-fault and non-stall interrupts, and the
/// `GP100_VMM_VN_FAULT_REPLAY` method).
///
/// The buffer has a fixed size: a fault raised while it is full is
/// dropped, and the access raises it again after the next replay.
pub(crate) trait GpuFaults: Send + Sync + 'static {
    /// Installs `irq` as the replayable-fault interrupt's handler, in
    /// place of any before it, until [`GpuFaults::shutdown`] frees it.
    ///
    /// The interrupt is level-triggered: it is raised on the CPU of the
    /// access that wrote an entry, and again by a [`GpuFaults::take`] that
    /// leaves entries behind.
    fn request_irq(&self, irq: Arc<dyn FaultIrq>);

    /// Moves the entries of the oldest entry's address space (at most
    /// `out`'s capacity) to `out`, oldest first; `false` if there are none,
    /// or once [`GpuFaults::shutdown`] was called. Entries of other
    /// address spaces stay, and raise the interrupt again for another
    /// worker.
    fn take(&self, out: &mut KVec<FaultEntry>) -> bool;

    /// Restarts every stalled access, on every channel: those still
    /// missing fault again.
    fn replay(&self);

    /// Frees the interrupt ([`GpuFaults::request_irq`]): when this returns,
    /// no call of its handler runs and none follows, and
    /// [`GpuFaults::take`] takes nothing more. Wakes every
    /// [`GpuFaults::wait_event`]: the device is going (its removal, or its
    /// teardown after the last file). From then on no job is accepted.
    fn shutdown(&self);

    /// Whether [`GpuFaults::shutdown`] was called.
    fn is_shut_down(&self) -> bool;

    /// Completions and channel failures so far: the non-stall interrupt's
    /// counter.
    fn events(&self) -> u64;

    /// Sleeps until [`GpuFaults::events`] differs from `seen`, for at most
    /// `jiffies`; `true` if a signal interrupted it.
    fn wait_event(&self, seen: u64, jiffies: kernel::time::Jiffies) -> bool;

    /// Faults dropped because the buffer was full.
    fn overflows(&self) -> u64;

    /// Stalled jobs resumed after a replay, and the nanoseconds from the
    /// replays to their resumption, in total.
    fn resumes(&self) -> (u64, u64);

    /// Times a channel gave its CPU up at the end of a time slice, its job
    /// going on behind the work queued there.
    fn yields(&self) -> u64;
}

/// Why a channel stopped taking work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ChannelError {
    /// The error code: `EFAULT` for an unservable fault, `ESRCH` once the
    /// address space is gone, `ETIMEDOUT` for a hung job, ...
    pub(crate) err: Error,
    /// The fault that could not be served, if that was the reason.
    pub(crate) fault: Option<Fault>,
}

/// What a channel has done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ChannelStatus {
    /// Sequence number of the last job submitted (jobs count from 1).
    pub(crate) submitted: u64,
    /// Sequence number of the last job completed: jobs complete in order.
    pub(crate) completed: u64,
    /// Why the channel failed, if it did: its remaining jobs were
    /// cancelled and it takes no more.
    pub(crate) error: Option<ChannelError>,
}

/// A job submitted to a channel.
pub(crate) trait GpuJob: Send + Sync {
    /// Waits until the job ended; with `interruptible`, `EINTR` on a
    /// signal (the job keeps running).
    fn wait(&self, interruptible: bool) -> Result;

    /// The job's sequence number on its channel (jobs count from 1).
    fn seqno(&self) -> u64;

    /// After [`GpuJob::wait`]: how it ended (`ECANCELED` if its channel
    /// failed or stopped first), the commands it completed and the old
    /// value of its last atomic.
    fn finish(&self) -> (Result, usize, u64);
}

/// A GPU channel: a ring of jobs that run in order, beside the other
/// channels (an NVIDIA channel with its GPFIFO, bound to one GPU address
/// space). A job's commands run in order and end with the write of its
/// fence: a GPU write to the address space, which can fault like any
/// other.
pub(crate) trait GpuChannel: Send + Sync {
    /// The submitted job type.
    type Job: GpuJob;

    /// The channel's id, unique on the device: what its fault buffer
    /// entries name.
    fn id(&self) -> u64;

    /// Fails the channel with `why` (the first failure sticks): its
    /// running job stops within a lock run and the queued ones are
    /// cancelled (`GP100_VMM_VN_FAULT_CANCEL` and a channel kill).
    fn fail(&self, why: ChannelError);

    /// Cancels the faulting access of the entry tagged `tag`: fails the
    /// channel with `why` if it is still stalled on the stall that raised
    /// it. An entry can outlive its stall (a replay for another fault, a
    /// second worker serving the same fault): its failure must not fail
    /// the job that runs by then.
    fn cancel(&self, tag: u64, why: ChannelError);

    /// The channel's progress and failure.
    fn status(&self) -> ChannelStatus;

    /// After [`GpuChannel::fail`]: waits until no job of the channel runs
    /// any more.
    fn wait_idle(&self);
}

/// Most faults a GPU reports at once: its fault buffer's size.
pub(crate) const FAULT_BATCH: usize = 64;

/// The block the GPU reports one fault for: a miss anywhere in it is one
/// entry of the fault buffer (as a GPU TLB reports a big page once).
pub(crate) const FAULT_GRANULE: usize = 64 << 10;

/// A GPU address space: its page table, TLB and command submission. The
/// SVM core serializes the page-table calls with its own lock.
pub(crate) trait GpuVm: Sized + Send + Sync + Unpin + 'static {
    /// A channel of the device, bound to one address space.
    type Channel: GpuChannel;

    /// The device's command processor, which runs the channels.
    type Engine: Send + Sync;

    /// The device's fault buffer.
    type Faults: GpuFaults;

    /// Most bytes one READ command may carry; the ioctl splits longer ones.
    const MAX_READ: usize;

    /// Queues a job of `cmds` (validated, at most `DRM_NSVM_EXEC_MAX_CMDS`)
    /// on `chan` of `engine`, then the write of the 64-bit `fence` value at
    /// its address, if any; a READ lands in `dst`. The job, and the jobs
    /// behind it, start once every fence of `deps` signaled; a failed
    /// channel cancels a waiting job. `ECANCELED` once the channel failed,
    /// `EAGAIN` when it has too many jobs queued.
    fn submit(
        engine: &Self::Engine,
        chan: &Arc<Self::Channel>,
        deps: KVec<ARef<DmaFence>>,
        cmds: KVec<uapi::drm_nsvm_cmd>,
        fence: Option<(usize, u64)>,
        dst: Option<PinnedWrite>,
    ) -> Result<Arc<<Self::Channel as GpuChannel>::Job>>;

    /// A new channel of `engine` on the address space `vm`, whose faults
    /// name `asid`; a job that makes no progress for `timeout` fails the
    /// channel with `ETIMEDOUT`.
    fn channel(
        engine: &Self::Engine,
        vm: Arc<MirrorVm<Self>>,
        asid: u64,
        timeout: kernel::time::Delta,
    ) -> Result<Arc<Self::Channel>>;

    /// The fault buffer of `engine`.
    fn faults(engine: &Self::Engine) -> Arc<Self::Faults>;

    /// Page-table memory reserved for one [`GpuVm::map`] call.
    type Reservation;

    /// Allocates what writing the entries `maps` names may need: for each,
    /// its address and whether it is a 2 MiB one ([`Mapping`]), ascending.
    /// May sleep; called without the SVM lock.
    fn reserve(maps: impl IntoIterator<Item = (usize, bool)>) -> Result<Self::Reservation>;

    /// Writes `maps` (ascending, not overlapping; as reserved in `res`)
    /// over what is mapped there. A big-page entry replaces the 4 KiB
    /// entries of its 2 MiB; a 4 KiB entry inside a big page first splits
    /// it into the 512 entries it maps. Returns how many 4 KiB pages it
    /// mapped. Does not allocate.
    fn map(&mut self, res: Self::Reservation, maps: &[Mapping]) -> usize;

    /// Unmaps `[start, end)`, and whole any big page it touches (a
    /// big-page entry cannot be split without allocating); returns how
    /// many 4 KiB pages were unmapped.
    fn unmap(&mut self, start: usize, end: usize) -> usize;

    /// Makes the entries of `[start, end)` read-only, and whole any big
    /// page it touches; returns how many 4 KiB pages lost write access.
    fn protect(&mut self, start: usize, end: usize) -> usize;

    /// Flushes the GPU TLB for `[start, end)`.
    fn flush_tlb(&mut self, start: usize, end: usize);

    /// The entry mapping `va`, if any.
    fn lookup(&self, va: usize) -> Option<Pte>;

    /// How many 4 KiB entries are mapped, by what they map.
    fn entries(&self) -> Entries;
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
