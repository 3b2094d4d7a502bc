// SPDX-License-Identifier: GPL-2.0

//! The software copy engine's channels: one batch of page copies shared
//! by the submitting thread and helper CPUs.
//!
//! A GPU's copy engines run beside the CPU, and a GPU has several; the
//! software GPU's counterpart is a batch cut into slices of
//! [`SLICE_PAGES`] copies that the caller and up to `channels - 1`
//! helpers on an unbound workqueue claim one at a time. The caller
//! copies from the start and never waits for a helper that has not begun:
//! slices nobody claimed are its own. It then waits only for the slices
//! helpers are copying (at most one each), spinning for a short while
//! first, since waking a sleeping task can take longer than a slice.
//!
//! A helper takes no lock and does not allocate, so a batch finishes even
//! when no helper ever runs (no free CPU, no worker under memory
//! pressure): the caller then copies it alone.
//!
//! A helper may run after its batch is done (and find nothing to claim).
//! Helpers therefore go to the device's own [`HelperQueue`], an
//! [`OwnedQueue`] whose drop waits for every queued helper: none runs once
//! the device, and with it the module's code, is gone.

use kernel::{
    new_work,
    prelude::*,
    processor::cpu_relax,
    sync::{
        atomic::{
            Acquire,
            Atomic,
            Relaxed,
            Release, //
        },
        Arc, Completion,
    },
    time::{
        Instant,
        Monotonic, //
    },
    workqueue::{
        Work,
        WorkItem, //
    },
};

use super::{
    queue::OwnedQueue,
    CopyOp, //
};

/// Copies a channel claims at a time: 64 KiB.
pub(crate) const SLICE_PAGES: usize = 16;

/// Most channels a device may have.
pub(crate) const MAX_CHANNELS: u32 = 8;

/// How long the caller spins for the helpers' last slices before it
/// sleeps, in microseconds.
const SPIN_US: i64 = 200;

/// Something that copies one page at a time, from any CPU.
pub(crate) trait CopyPage: Sync + 'static {
    /// Runs `op`.
    ///
    /// # Safety
    ///
    /// As for [`super::DeviceMemory::copy`].
    unsafe fn copy_page(&self, op: &CopyOp) -> Result;
}

/// The unbound workqueue of a copy engine's helpers, and how many helpers
/// a batch may have.
pub(crate) struct HelperQueue {
    queue: OwnedQueue,
    helpers: usize,
}

impl HelperQueue {
    /// Allocates the queue of an engine with `channels` channels: the
    /// caller's and `channels - 1` helpers.
    pub(crate) fn new(channels: u32) -> Result<Self> {
        Ok(Self {
            queue: OwnedQueue::new_unbound(c"nsvm_copy")?,
            helpers: (channels as usize).saturating_sub(1),
        })
    }
}

/// Runs `ops` on `mem`, spread over the caller and the helpers of
/// `helpers` (at most one per other CPU), and waits for them; the first
/// error wins, the rest of the batch still runs. Without `helpers` (or
/// when there is only one slice), the caller copies alone.
///
/// # Safety
///
/// As for [`super::DeviceMemory::copy`].
pub(crate) unsafe fn run<M: CopyPage>(
    mem: &M,
    ops: &[CopyOp],
    helpers: Option<&HelperQueue>,
) -> Result {
    let slices = ops.len().div_ceil(SLICE_PAGES);
    let cpus = kernel::cpu::nr_cpu_ids() as usize;
    let n = helpers.map_or(0, |q| q.helpers.min(cpus - 1).min(slices.saturating_sub(1)));
    let batch = match (n, helpers) {
        (1.., Some(queue)) => Arc::pin_init(Batch::new(mem, ops), GFP_KERNEL)
            .ok()
            .map(|b| (b, queue)),
        _ => None,
    };
    let Some((batch, queue)) = batch else {
        // SAFETY: By the safety requirements.
        return ops.iter().try_for_each(|op| unsafe { mem.copy_page(op) });
    };
    for _ in 0..n {
        let shared = batch.clone();
        let helper = Arc::pin_init(
            pin_init!(Helper::<M> {
                batch: shared,
                work <- new_work!("nsvm::copy::Helper::work"),
            }),
            GFP_KERNEL,
        );
        // Without a helper, the caller copies more itself.
        if let Ok(helper) = helper {
            // A new work item is not queued yet: this cannot fail.
            let _ = queue.queue.enqueue(helper);
        }
    }
    batch.copy_slices();
    batch.wait();
    match batch.err.load(Relaxed) {
        0 => Ok(()),
        e => Err(Error::from_errno(e)),
    }
}

/// A batch in flight.
///
/// # Invariants
///
/// `mem` and the `len` ops at `ops` are valid, and the copies allowed
/// (the safety requirements of [`run`]), while a slice is claimed and not
/// finished: [`run`] returns only once `finished` reached the number of
/// slices, and a slice is claimed (`next`) before its ops are read.
#[pin_data]
struct Batch<M: CopyPage> {
    mem: *const M,
    ops: *const CopyOp,
    len: usize,
    /// The next slice to claim.
    next: Atomic<usize>,
    /// Slices copied.
    finished: Atomic<usize>,
    /// The first error's code, or 0.
    err: Atomic<i32>,
    /// Completed when the last slice is finished.
    #[pin]
    done: Completion,
}

// SAFETY: `mem` and `ops` are only used while valid (type invariants), to
// copy pages, which any CPU may do (`M: Sync`, and `CopyOp`s are read
// only); the rest is atomics and a completion.
unsafe impl<M: CopyPage> Send for Batch<M> {}
// SAFETY: As above.
unsafe impl<M: CopyPage> Sync for Batch<M> {}

impl<M: CopyPage> Batch<M> {
    fn new(mem: &M, ops: &[CopyOp]) -> impl PinInit<Self> {
        let (mem, ptr, len): (*const M, _, _) = (mem, ops.as_ptr(), ops.len());
        pin_init!(Self {
            mem,
            ops: ptr,
            len,
            next: Atomic::new(0),
            finished: Atomic::new(0),
            err: Atomic::new(0),
            done <- Completion::new(),
        })
    }

    fn slices(&self) -> usize {
        self.len.div_ceil(SLICE_PAGES)
    }

    /// Copies slices until none is left to claim.
    fn copy_slices(&self) {
        let slices = self.slices();
        loop {
            let i = self.next.fetch_add(1, Relaxed);
            if i >= slices {
                return;
            }
            let first = i * SLICE_PAGES;
            let n = SLICE_PAGES.min(self.len - first);
            // SAFETY: Slice `i` is claimed and not finished, so `mem` and
            // `ops` are valid (type invariants); `first + n <= len`.
            let (mem, ops) = unsafe {
                (
                    &*self.mem,
                    core::slice::from_raw_parts(self.ops.add(first), n),
                )
            };
            // SAFETY: The copies are allowed (type invariants).
            if let Err(e) = ops.iter().try_for_each(|op| unsafe { mem.copy_page(op) }) {
                let _ = self.err.cmpxchg(0, e.to_errno(), Relaxed);
            }
            // Release: the copies and the error happen before the caller
            // sees the slice finished.
            if self.finished.fetch_add(1, Release) + 1 == slices {
                self.done.complete_all();
            }
        }
    }

    /// Waits until every slice is finished (all are claimed).
    fn wait(&self) {
        let slices = self.slices();
        let start = Instant::<Monotonic>::now();
        while self.finished.load(Acquire) < slices {
            if start.elapsed().as_micros_ceil() > SPIN_US {
                self.done.wait_for_completion();
                return;
            }
            cpu_relax();
        }
    }
}

/// A helper channel: one work item on a [`HelperQueue`].
#[pin_data]
struct Helper<M: CopyPage> {
    batch: Arc<Batch<M>>,
    #[pin]
    work: Work<Helper<M>>,
}

kernel::impl_has_work! {
    impl{M: CopyPage} HasWork<Helper<M>> for Helper<M> { self.work }
}

impl<M: CopyPage> WorkItem for Helper<M> {
    type Pointer = Arc<Helper<M>>;

    fn run(this: Arc<Helper<M>>) {
        this.batch.copy_slices();
    }
}
