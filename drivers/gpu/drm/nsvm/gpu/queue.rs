// SPDX-License-Identifier: GPL-2.0

//! A workqueue the driver owns.
//!
//! Work queued to a system workqueue can still be running module code
//! (the tail of its `run()`: a wake-up, the drop of its last references)
//! after whatever waited for it has returned, and nothing makes module
//! unload wait for it. Work on an [`OwnedQueue`] cannot outlive the queue:
//! dropping it waits for every queued item. The GPU's engines keep theirs
//! in the device, so none of their work survives the device.
//!
//! The kernel crate has no owned workqueue type in 7.3; this wraps
//! `alloc_workqueue()` and `destroy_workqueue()`.

use core::{
    ops::Deref,
    ptr::NonNull, //
};

use kernel::{
    bindings,
    cpu::CpuId,
    prelude::*,
    workqueue::{
        HasDelayedWork,
        Queue,
        RawWorkItem,
        Work, //
    },
};

/// A workqueue, destroyed (after its last queued item ran) when dropped:
/// unbound ([`OwnedQueue::new_unbound`]) or per CPU
/// ([`OwnedQueue::new_percpu`]).
///
/// Must not be dropped by one of its own work items: destroying a queue
/// waits for its items. A delayed item whose timer is pending is not yet
/// queued: its owner flushes it ([`flush_delayed`]) before the queue goes.
///
/// # Invariants
///
/// `raw` is from `alloc_workqueue()` and destroyed only by [`Drop`].
pub(crate) struct OwnedQueue {
    raw: NonNull<bindings::workqueue_struct>,
}

// SAFETY: A workqueue may be used and destroyed from any thread.
unsafe impl Send for OwnedQueue {}
// SAFETY: Queueing work is thread-safe.
unsafe impl Sync for OwnedQueue {}

impl OwnedQueue {
    /// Allocates an unbound queue called `name` (`/sys/bus/workqueue`,
    /// the kworkers' names).
    pub(crate) fn new_unbound(name: &'static CStr) -> Result<Self> {
        Self::alloc(name, bindings::wq_flags_WQ_UNBOUND)
    }

    /// Allocates a queue called `name` whose items run on the CPU they are
    /// queued on ([`OwnedQueue::enqueue_on`]; [`Queue::enqueue`]: the
    /// caller's), in the CPU's ordinary-priority workers, which every
    /// per-CPU queue of that priority shares.
    ///
    /// Concurrency management runs one item at a time per CPU, in one
    /// worker, while items do not sleep: an item queued by a running item
    /// runs next in the same worker, with no context switch (the shape of
    /// an interrupt's bottom half run where the interrupt was taken). An
    /// item must then not run long without returning: items behind it wait
    /// (the engine's jobs give their CPU up after a time slice).
    pub(crate) fn new_percpu(name: &'static CStr) -> Result<Self> {
        Self::alloc(name, bindings::wq_flags_WQ_PERCPU)
    }

    fn alloc(name: &'static CStr, flags: bindings::wq_flags) -> Result<Self> {
        // SAFETY: "%s" takes one string, `name`, which is NUL-terminated and
        // which `alloc_workqueue()` copies; the flags are valid; 0 is the
        // default limit of concurrent items.
        let raw = unsafe {
            bindings::alloc_workqueue_noprof(
                kernel::str::as_char_ptr_in_const_context(c"%s"),
                flags,
                0,
                name.as_char_ptr(),
            )
        };
        // INVARIANT: From `alloc_workqueue()`.
        Ok(Self {
            raw: NonNull::new(raw).ok_or(ENOMEM)?,
        })
    }

    /// Queues `w` to run on `cpu` (for an unbound queue: near it), as
    /// `queue_work_on()` does; fails, giving `w` back, if it is queued
    /// already. The kernel crate's [`Queue`] has no such call in 7.3.
    ///
    /// A CPU that is offline, or goes offline, still runs the item: its
    /// pool's workers then run it elsewhere.
    pub(crate) fn enqueue_on<W, const ID: u64>(&self, cpu: CpuId, w: W) -> W::EnqueueOutput
    where
        W: RawWorkItem<ID> + Send + 'static,
    {
        let raw = self.raw.as_ptr();
        // SAFETY: As in `Queue::enqueue()`, which differs only in the CPU:
        // the closure returns `false` only if the `work_struct` is queued
        // already; `W` is `Send` and `'static`; `queue_work_on()` uses the
        // pointer only while `__enqueue()` keeps it valid (until the item
        // runs, if it returns true). `raw` is a live workqueue (type
        // invariants) and `cpu` a valid CPU id.
        unsafe {
            w.__enqueue(move |work| {
                bindings::queue_work_on(cpu.as_u32() as kernel::ffi::c_int, raw, work)
            })
        }
    }

    /// Waits until every item queued so far has run (`flush_workqueue()`).
    pub(crate) fn flush(&self) {
        // SAFETY: `raw` is a live workqueue (type invariants).
        unsafe { bindings::__flush_workqueue(self.raw.as_ptr()) };
    }
}

/// Fires the timer of `item`'s delayed work `ID` now if it is pending and
/// waits until the item's last queueing has run (`flush_delayed_work()`):
/// after it, unless something queues the item again, nothing of it is
/// left on any queue or timer. The kernel crate has no such call in 7.3.
pub(crate) fn flush_delayed<T: HasDelayedWork<T, ID>, const ID: u64>(item: &T) {
    let this = core::ptr::from_ref(item).cast_mut();
    // SAFETY: `this` points at a valid `T`, borrowed for the call.
    let work = unsafe { T::raw_get_work(this) };
    // SAFETY: `work` points at the `Work` field of the `T` above.
    let work = unsafe { Work::raw_get(work) };
    // SAFETY: `HasDelayedWork` promises that the `work_struct` is the `work`
    // field of a `delayed_work` inside `item`: both pointers are in bounds
    // of `item`'s allocation.
    let dwork = unsafe { kernel::container_of!(work, bindings::delayed_work, work) };
    // SAFETY: `dwork` was initialised by `DelayedWork::new()` (`T` is
    // pinned-initialised with it) and stays valid for the call.
    unsafe { bindings::flush_delayed_work(dwork) };
}

impl Deref for OwnedQueue {
    type Target = Queue;

    fn deref(&self) -> &Queue {
        // SAFETY: `raw` is a live workqueue until `self` is dropped (type
        // invariants), which the borrow outlives.
        unsafe { Queue::from_raw(self.raw.as_ptr()) }
    }
}

impl Drop for OwnedQueue {
    fn drop(&mut self) {
        // SAFETY: `raw` is live, and nothing queues to it any more: queueing
        // needs a borrow of `self`, which is going, and the owners of
        // delayed items flushed their timers (type documentation). This
        // waits for every queued item.
        unsafe { bindings::destroy_workqueue(self.raw.as_ptr()) };
    }
}

#[kunit_tests(nsvm_queue)]
mod tests {
    use super::*;
    use kernel::{
        impl_has_work, new_work,
        sync::{
            atomic::{
                Atomic,
                Relaxed, //
            },
            Arc,
        },
        time::{
            delay::fsleep,
            Delta, //
        },
        workqueue::{
            Work,
            WorkItem, //
        },
    };

    /// A work item that sleeps, then says it is done.
    #[pin_data]
    struct Slow {
        done: Atomic<bool>,
        #[pin]
        work: Work<Slow>,
    }

    impl_has_work! {
        impl HasWork<Self> for Slow { self.work }
    }

    impl WorkItem for Slow {
        type Pointer = Arc<Slow>;

        fn run(this: Arc<Slow>) {
            fsleep(Delta::from_millis(20));
            this.done.store(true, Relaxed);
        }
    }

    /// Dropping the queue returns only after every queued item ran: what
    /// the engines rely on for module unload.
    #[test]
    fn drop_waits_for_queued_work() -> Result {
        let queue = OwnedQueue::new_unbound(c"nsvm_kunit")?;
        let mut items = KVec::new();
        for _ in 0..4 {
            let item = Arc::pin_init(
                pin_init!(Slow {
                    done: Atomic::new(false),
                    work <- new_work!("Slow::work"),
                }),
                GFP_KERNEL,
            )?;
            assert!(queue.enqueue(item.clone()).is_ok());
            items.push(item, GFP_KERNEL)?;
        }
        drop(queue);
        for item in &items {
            assert!(item.done.load(Relaxed));
        }
        Ok(())
    }
}
