// SPDX-License-Identifier: GPL-2.0

//! Exec queues and user fences.
//!
//! A file's exec queues are GPU channels bound to its mirror
//! ([`GpuChannel`]): `QUEUE_CREATE` makes one, `SUBMIT` queues a job on it
//! and returns, the jobs of a queue run in order and the queues beside each
//! other. A job completes by writing a 64-bit value to a user address (a
//! GPU write through the mirror, which can fault like any other), and
//! `WAIT` sleeps until the value at an address compares as asked.
//!
//! No `dma_fence` is signalled from this work: a job may page-fault, and
//! serving a fault allocates memory, so a fence it signalled could deadlock
//! reclaim (Documentation/driver-api/dma-buf.rst, "Recoverable Hardware
//! Page Faults Implications"). Completion is a value in memory, as with
//! Xe's user fences.
//!
//! A queue fails for good when one of its jobs does (an unservable fault,
//! the address space gone, a job that hangs): it records why
//! ([`ChannelError`]), cancels the jobs behind, refuses new ones with
//! `ECANCELED`, and a wait naming it returns the error at once.

use kernel::{
    new_mutex,
    prelude::*,
    sync::{
        Arc,
        Mutex, //
    },
    time::{
        msecs_to_jiffies,
        Delta,
        Instant,
        Monotonic, //
    },
    uaccess::{
        UserPtr,
        UserSlice, //
    },
};

use crate::{
    gpu::{
        ChannelError,
        GpuChannel,
        GpuFaults,
        GpuVm, //
    },
    uapi,
};

/// Exec queues a file may have.
pub(crate) const MAX_QUEUES: usize = 64;

/// Longest job timeout a queue may ask for.
pub(crate) const MAX_TIMEOUT_MS: u32 = 3_600_000;

/// A queue of the file, or the channel of a running EXEC (id 0).
struct Queue<V: GpuVm> {
    id: u32,
    chan: Arc<V::Channel>,
}

/// The queues of a mirror, under [`Queues::table`].
struct Table<V: GpuVm> {
    queues: KVec<Queue<V>>,
    next_id: u32,
}

/// The exec queues of one mirror.
///
/// `"Mirror::queues"` is taken before a channel's own lock and held only
/// to look a channel up, add or remove it.
#[pin_data]
pub(crate) struct Queues<V: GpuVm> {
    #[pin]
    table: Mutex<Table<V>>,
}

impl<V: GpuVm> Queues<V> {
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            table <- new_mutex!(
                Table {
                    queues: KVec::new(),
                    next_id: 1,
                },
                "Mirror::queues"
            ),
        })
    }

    /// Adds `chan` as a new exec queue; returns its id. `ENOSPC` past
    /// [`MAX_QUEUES`].
    pub(crate) fn create(&self, chan: Arc<V::Channel>) -> Result<u32> {
        let mut t = self.table.lock();
        if t.queues.iter().filter(|q| q.id != 0).count() >= MAX_QUEUES {
            return Err(ENOSPC);
        }
        let (id, next) = free_id(t.next_id, |id| t.queues.iter().any(|q| q.id == id));
        t.next_id = next;
        t.queues.push(Queue { id, chan }, GFP_KERNEL)?;
        Ok(id)
    }

    /// Adds the channel of an EXEC, for the fault handler to find.
    pub(crate) fn add_exec(&self, chan: Arc<V::Channel>) -> Result {
        self.table
            .lock()
            .queues
            .push(Queue { id: 0, chan }, GFP_KERNEL)?;
        Ok(())
    }

    /// Exec queue `id`; `ENOENT` if there is none.
    pub(crate) fn get(&self, id: u32) -> Result<Arc<V::Channel>> {
        if id == 0 {
            return Err(ENOENT);
        }
        self.find(|q| q.id == id).ok_or(ENOENT)
    }

    /// The first channel `pred` accepts.
    fn find(&self, pred: impl Fn(&Queue<V>) -> bool) -> Option<Arc<V::Channel>> {
        let t = self.table.lock();
        t.queues.iter().find(|q| pred(q)).map(|q| q.chan.clone())
    }

    /// Removes the first channel `pred` accepts.
    fn take(&self, pred: impl Fn(&Queue<V>) -> bool) -> Option<Arc<V::Channel>> {
        let mut t = self.table.lock();
        let i = t.queues.iter().position(pred)?;
        t.queues.remove(i).ok().map(|q| q.chan)
    }

    /// Removes exec queue `id`, cancels its jobs and waits until none runs.
    pub(crate) fn destroy(&self, id: u32) -> Result {
        if id == 0 {
            return Err(ENOENT);
        }
        let chan = self.take(|q| q.id == id).ok_or(ENOENT)?;
        stop::<V>(&chan, ECANCELED);
        Ok(())
    }

    /// Removes the channel of an EXEC, which has no job left.
    pub(crate) fn remove_exec(&self, chid: u64) {
        if let Some(chan) = self.take(|q| q.id == 0 && q.chan.id() == chid) {
            stop::<V>(&chan, ECANCELED);
        }
    }

    /// Fails channel `chid`, if it is still there: the fault handler's
    /// cancel.
    pub(crate) fn fail(&self, chid: u64, why: ChannelError) {
        if let Some(chan) = self.find(|q| q.chan.id() == chid) {
            chan.fail(why);
        }
    }

    /// Cancels the faulting access of entry `tag` of channel `chid`, if
    /// the channel is still there ([`GpuChannel::cancel`]): the fault
    /// handler could not serve it.
    ///
    /// `EBUSY` (invalidations kept undoing the fault for a second) fails
    /// an EXEC's channel, whose caller gets `EBUSY` as before, but not an
    /// exec queue's: the access faults again after the replay, as on
    /// hardware, and the job's timeout bounds a fault that never sticks.
    pub(crate) fn cancel(&self, chid: u64, tag: u64, why: ChannelError) {
        if let Some(chan) = self.find(|q| q.chan.id() == chid && (q.id == 0 || why.err != EBUSY)) {
            chan.cancel(tag, why);
        }
    }

    /// Whether any of the channels `chids` is still there and has not
    /// failed: whether a fault they raised is still wanted.
    pub(crate) fn any_live(&self, mut chids: impl Iterator<Item = u64>) -> bool {
        let t = self.table.lock();
        chids.any(|chid| {
            t.queues
                .iter()
                .any(|q| q.chan.id() == chid && q.chan.status().error.is_none())
        })
    }

    /// Fails every channel with `err` and waits until none runs; they stay
    /// (the file's release removes them): the device's removal.
    pub(crate) fn fail_all(&self, err: Error) {
        // One at a time, without allocating: a failed channel is not found
        // again.
        while let Some(chan) = self.find(|q| q.chan.status().error.is_none()) {
            stop::<V>(&chan, err);
        }
    }

    /// Stops every channel and waits until none runs: the first step of
    /// the file's release.
    pub(crate) fn stop_all(&self) {
        while let Some(chan) = self.take(|_| true) {
            stop::<V>(&chan, ECANCELED);
        }
    }
}

/// The first id from `next` on that is not `used`, counting up and
/// wrapping from 2^32 - 1 to 1 (0 is no queue), and the id to start from
/// next time. Ends: at most [`MAX_QUEUES`] ids are in use.
fn free_id(next: u32, used: impl Fn(u32) -> bool) -> (u32, u32) {
    let after = |id: u32| id.checked_add(1).unwrap_or(1);
    let mut id = next.max(1);
    while used(id) {
        id = after(id);
    }
    (id, after(id))
}

/// Fails what `chan` still has with `err` and waits until its worker is
/// idle.
fn stop<V: GpuVm>(chan: &V::Channel, err: Error) {
    chan.fail(ChannelError { err, fault: None });
    chan.wait_idle();
}

/// Whether `cur` compares to `value` as `op` asks, under `mask`.
pub(crate) fn compare(op: u32, cur: u64, value: u64, mask: u64) -> Result<bool> {
    let (cur, value) = (cur & mask, value & mask);
    Ok(match op {
        uapi::DRM_NSVM_WAIT_EQ => cur == value,
        uapi::DRM_NSVM_WAIT_NEQ => cur != value,
        uapi::DRM_NSVM_WAIT_GT => cur > value,
        uapi::DRM_NSVM_WAIT_GTE => cur >= value,
        uapi::DRM_NSVM_WAIT_LT => cur < value,
        uapi::DRM_NSVM_WAIT_LTE => cur <= value,
        _ => return Err(EINVAL),
    })
}

/// How long a wait sleeps before it reads the fence again on its own: a
/// CPU write raises no interrupt.
const RECHECK_MS: u32 = 100;

/// What a wait waits for.
pub(crate) enum Target<'a, V: GpuVm> {
    /// The u64 at a user address of the caller's (the mirror's) address
    /// space.
    Fence(usize),
    /// The sequence number of the last completed job of a queue.
    Seqno(&'a V::Channel),
}

/// Sleeps until `target` compares to `value` as `op` asks (under `mask`),
/// `timeout` passes (`ETIME`; `None` waits forever, zero only checks) or a
/// signal comes (`ERESTARTSYS`: the ioctl restarts, with the same relative
/// timeout). A failed `queue` ends the wait with the queue's error.
pub(crate) fn wait<V: GpuVm>(
    faults: &V::Faults,
    target: Target<'_, V>,
    queue: Option<&V::Channel>,
    (op, value, mask): (u32, u64, u64),
    timeout: Option<Delta>,
) -> Result {
    compare(op, 0, 0, 0)?;
    let start: Instant<Monotonic> = Instant::now();
    loop {
        let seen = faults.events();
        // The device is being removed: the wait must not hold that up.
        if faults.is_shut_down() {
            return Err(ENODEV);
        }
        if let Some(err) = queue.and_then(|q| q.status().error) {
            return Err(err.err);
        }
        let cur = match target {
            Target::Fence(addr) => UserSlice::new(UserPtr::from_addr(addr), 8)
                .reader()
                .read::<u64>()?,
            Target::Seqno(chan) => chan.status().completed,
        };
        if compare(op, cur, value, mask)? {
            return Ok(());
        }
        let sleep = match timeout {
            None => RECHECK_MS,
            Some(t) => {
                let left = t - start.elapsed();
                if left <= Delta::ZERO {
                    return Err(ETIME);
                }
                (left.as_millis_ceil().min(i64::from(RECHECK_MS))) as u32
            }
        };
        if faults.wait_event(seen, msecs_to_jiffies(sleep)) {
            return Err(ERESTARTSYS);
        }
    }
}

#[kunit_tests(nsvm_exec)]
mod tests {
    use super::*;

    /// Ids wrap past 2^32 - 1 to 1 and skip those still in use.
    #[test]
    fn free_id_wraps_past_used() {
        assert_eq!(free_id(1, |_| false), (1, 2));
        assert_eq!(free_id(u32::MAX, |_| false), (u32::MAX, 1));
        // After the wrap, 1 and 2 are still in use.
        assert_eq!(free_id(1, |id| id == 1 || id == 2), (3, 4));
        assert_eq!(free_id(u32::MAX, |id| id == u32::MAX || id == 1), (2, 3));
        assert_eq!(free_id(0, |_| false), (1, 2));
    }

    #[test]
    fn compare_ops_under_mask() {
        let c = |op, cur, value, mask| compare(op, cur, value, mask).unwrap();
        assert!(c(uapi::DRM_NSVM_WAIT_EQ, 0x1205, 0xff05, 0xff));
        assert!(!c(uapi::DRM_NSVM_WAIT_EQ, 0x1205, 0xff05, u64::MAX));
        assert!(c(uapi::DRM_NSVM_WAIT_NEQ, 1, 2, u64::MAX));
        assert!(c(uapi::DRM_NSVM_WAIT_GT, u64::MAX, u64::MAX - 1, u64::MAX));
        assert!(!c(uapi::DRM_NSVM_WAIT_GT, 5, 5, u64::MAX));
        assert!(c(uapi::DRM_NSVM_WAIT_GTE, 5, 5, u64::MAX));
        assert!(c(uapi::DRM_NSVM_WAIT_LT, 0, 1, u64::MAX));
        assert!(c(uapi::DRM_NSVM_WAIT_LTE, 1, 1, u64::MAX));
        // A zero mask compares zeroes.
        assert!(c(uapi::DRM_NSVM_WAIT_EQ, 7, 9, 0));
        assert_eq!(compare(6, 0, 0, 0), Err(EINVAL));
        assert_eq!(compare(u32::MAX, 0, 0, 0), Err(EINVAL));
    }
}
