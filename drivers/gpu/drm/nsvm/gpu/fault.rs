// SPDX-License-Identifier: GPL-2.0

//! The software GPU's replayable fault buffer and its interrupt lines.
//!
//! One per device, shared by every channel: a ring of [`FAULT_BUFFER_SIZE`]
//! entries with GET and PUT positions. A channel that misses in the GPU
//! page table writes an entry per missing block at PUT and stalls: it is
//! parked with the unit ([`FaultUnit::park`]) and its worker returns, as a
//! channel stalled on a fault holds no engine time on hardware. The fault
//! handler, woken by the "replayable fault" interrupt, takes the entries
//! from GET, serves them and replays, which restarts every parked channel:
//! queues its worker on the replaying CPU, where it runs next, in the
//! worker the handler ran in (see `queue.rs`). The interrupt is
//! level-triggered and taken on the CPU of the access that raised the entry
//! (as an MSI is, by its affinity): its handler ([`FaultIrq`]) queues a
//! worker there, so a fault's service starts on the CPU that faulted, and
//! the whole round trip (stall, service, replay, resumption) runs in one
//! worker of that CPU, with no wake-up and no context switch. A take that
//! leaves entries of other address spaces behind raises it again, for
//! another worker.
//!
//! A kick ([`FaultUnit::kick`]: a channel failed) restarts the parked
//! channels too, and so does the unit's watchdog, at most
//! [`WATCH_PERIOD_MS`] after a channel parked, so that a stall no replay
//! ends still sees its timeout. A restarted channel that is still waiting
//! parks again.
//!
//! As on hardware, a fault raised while the ring is full is dropped
//! (counted in [`FaultUnit::overflows`]): the stalled access raises it
//! again after the next replay.
//!
//! The "non-stall" interrupt counts job completions and channel failures;
//! fence waiters sleep on it.

use kernel::{
    impl_has_delayed_work, new_condvar, new_delayed_work, new_mutex,
    prelude::*,
    sync::{
        atomic::{
            Acquire,
            Atomic,
            Relaxed,
            Release, //
        },
        Arc,
        CondVar,
        Mutex, //
    },
    time::{
        msecs_to_jiffies,
        Delta,
        Instant,
        Jiffies,
        Monotonic, //
    },
    workqueue::{
        DelayedWork,
        Queue,
        WorkItem, //
    },
};

use super::{
    queue::{
        flush_delayed,
        OwnedQueue, //
    },
    FaultEntry,
    FaultIrq,
    GpuFaults, //
};

/// Wakes every waiter of `cond`, the first synchronously (the caller
/// sleeps soon: it may run on the caller's CPU at once).
pub(crate) fn wake_all_sync(cond: &CondVar) {
    cond.notify_sync();
    cond.notify_all();
}

/// Entries of the fault buffer.
pub(crate) const FAULT_BUFFER_SIZE: usize = 1024;

/// Longest a parked channel waits before the watchdog restarts it, to
/// look at its timeout.
pub(crate) const WATCH_PERIOD_MS: u32 = 100;

/// A channel, as the fault unit restarts it: parked on a stall, or at the
/// end of its time slice.
pub(crate) trait Restartable: Send + Sync {
    /// Queues the channel's worker on `queue`, on the calling CPU.
    fn restart(self: Arc<Self>, queue: &Queue);
}

/// Where a stall stands, from [`FaultUnit::park`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stall {
    /// A replay came since the stall: probe again.
    Replayed,
    /// The stop condition holds: nothing was parked.
    Stopped,
    /// Parked until the next replay, kick or watchdog.
    Parked,
}

/// What restarts parked channels: the queue their workers run on, and the
/// watchdog. From [`FaultUnit::attach`] until [`FaultUnit::detach`].
struct Runlist {
    queue: Arc<OwnedQueue>,
    watchdog: Arc<Watchdog>,
}

/// Restarts the parked channels: armed by every park for at most
/// [`WATCH_PERIOD_MS`], so that a stall no replay ends still sees its
/// timeout.
#[pin_data]
struct Watchdog {
    faults: Arc<FaultUnit>,
    #[pin]
    work: DelayedWork<Watchdog>,
}

impl_has_delayed_work! {
    impl HasDelayedWork<Self> for Watchdog { self.work }
}

impl WorkItem for Watchdog {
    type Pointer = Arc<Watchdog>;

    fn run(this: Arc<Watchdog>) {
        this.faults.kick();
    }
}

/// The ring and the replay generation, under [`FaultUnit::state`].
struct FaultState {
    /// The entries; `get == put` is empty, one slot stays free.
    ring: KVec<FaultEntry>,
    get: usize,
    put: usize,
    /// Bumped by every replay: a stalled channel resumes when it changed.
    replays: u64,
    /// The parked channels, restarted (and taken off) by the next replay,
    /// kick or watchdog.
    ///
    /// A parked channel is running (its job stalled), and its owner holds
    /// it until it is idle (`GpuChannel::wait_idle`): no reference here is
    /// the last, and none is dropped with the lock held that frees it.
    parked: KVec<Arc<dyn Restartable>>,
    /// Set while the engine is: parked channels can be restarted.
    runlist: Option<Runlist>,
    /// When the last replay was issued.
    replayed_at: Instant<Monotonic>,
    /// The interrupt's handler, from [`GpuFaults::request_irq`] until the
    /// shutdown frees it.
    irq: Option<Arc<dyn FaultIrq>>,
    /// Set at device teardown: nothing is taken any more.
    shutdown: bool,
}

impl FaultState {
    fn is_empty(&self) -> bool {
        self.get == self.put
    }

    /// Raises the replayable-fault interrupt if entries wait (level
    /// triggered).
    fn assert_irq(&self) {
        if let Some(irq) = self.irq.as_ref().filter(|_| !self.is_empty()) {
            irq.fault_irq();
        }
    }
}

/// The fault buffer, the replay method and the interrupt lines of one
/// software GPU.
#[pin_data]
pub(crate) struct FaultUnit {
    #[pin]
    state: Mutex<FaultState>,
    /// The non-stall interrupt's counter and line.
    events: Atomic<u64>,
    #[pin]
    nonstall: Mutex<()>,
    #[pin]
    nonstall_irq: CondVar,
    overflows: Atomic<u64>,
    resumes: Atomic<u64>,
    resume_ns: Atomic<u64>,
    yields: Atomic<u64>,
    /// [`FaultState::shutdown`] for readers that do not take the lock:
    /// every SUBMIT and every pass of a WAIT.
    shut_down: Atomic<bool>,
}

impl FaultUnit {
    pub(crate) fn new() -> Result<Arc<Self>> {
        let ring = KVec::from_elem(
            FaultEntry {
                asid: 0,
                chid: 0,
                tag: 0,
                fault: super::Fault {
                    addr: 0,
                    write: false,
                    atomic: false,
                },
                raised: Instant::now(),
            },
            FAULT_BUFFER_SIZE,
            GFP_KERNEL,
        )?;
        let state = FaultState {
            ring,
            get: 0,
            put: 0,
            replays: 0,
            parked: KVec::new(),
            runlist: None,
            replayed_at: Instant::now(),
            irq: None,
            shutdown: false,
        };
        Arc::pin_init(
            pin_init!(Self {
                state <- new_mutex!(state, "FaultUnit::state"),
                events: Atomic::new(0),
                nonstall <- new_mutex!((), "FaultUnit::nonstall"),
                nonstall_irq <- new_condvar!("FaultUnit::nonstall_irq"),
                overflows: Atomic::new(0),
                resumes: Atomic::new(0),
                resume_ns: Atomic::new(0),
                yields: Atomic::new(0),
                shut_down: Atomic::new(false),
            }),
            GFP_KERNEL,
        )
    }

    /// Makes `queue` the one parked channels are restarted on, until
    /// [`FaultUnit::detach`], and starts the watchdog.
    pub(crate) fn attach(self: &Arc<Self>, queue: Arc<OwnedQueue>) -> Result {
        let watchdog = Arc::pin_init(
            pin_init!(Watchdog {
                faults: self.clone(),
                work <- new_delayed_work!("FaultUnit::watchdog"),
            }),
            GFP_KERNEL,
        )?;
        let old = self
            .state
            .lock()
            .runlist
            .replace(Runlist { queue, watchdog });
        // Unlocked: it may hold the last reference to a queue.
        drop(old);
        Ok(())
    }

    /// Undoes [`FaultUnit::attach`] once no channel runs (the engine's
    /// teardown): nothing is restarted any more, and the watchdog is
    /// flushed, so that nothing of the unit is left on the queue or a
    /// timer. Breaks the reference cycle of the unit and its watchdog.
    pub(crate) fn detach(&self) {
        let mut st = self.state.lock();
        let runlist = st.runlist.take();
        let parked = core::mem::take(&mut st.parked);
        drop(st);
        drop(parked);
        if let Some(runlist) = runlist {
            // Its run finds no runlist: it arms nothing again.
            flush_delayed(&*runlist.watchdog);
        }
    }

    /// Writes `entries` at PUT (dropping those that find the ring full),
    /// raises the interrupt and returns the replay generation the caller
    /// then parks on with [`FaultUnit::park`].
    pub(crate) fn raise(&self, entries: impl Iterator<Item = FaultEntry>) -> u64 {
        let mut st = self.state.lock();
        for e in entries {
            let next = (st.put + 1) % FAULT_BUFFER_SIZE;
            if next == st.get {
                self.overflows.fetch_add(1, Relaxed);
                continue;
            }
            let put = st.put;
            st.ring[put] = e;
            st.put = next;
        }
        // On the raiser's CPU, whose worker parks and returns right after:
        // the handler runs next in it (see the module's documentation).
        st.assert_irq();
        st.replays
    }

    /// Parks `who`, stalled since replay generation `seen`, until the next
    /// replay, kick or watchdog, at most `left` from now and at most
    /// [`WATCH_PERIOD_MS`]: [`Stall::Parked`]. [`Stall::Replayed`] if a
    /// replay came since `seen`, and [`Stall::Stopped`] if `stop()` says
    /// so; neither parks anything. `stop()` is called with the lock held that
    /// [`FaultUnit::kick`] takes: a stop condition set before a kick is
    /// seen, or the kick restarts `who`.
    ///
    /// `ENODEV` once the unit is detached; `ENOMEM` if no room could be
    /// made for `who`.
    pub(crate) fn park(
        &self,
        who: Arc<dyn Restartable>,
        seen: u64,
        left: Delta,
        stop: impl Fn() -> bool,
    ) -> Result<Stall> {
        // Room for one more, made without the lock when the list is full.
        let mut room = KVec::new();
        loop {
            let mut guard = self.state.lock();
            let st = &mut *guard;
            if st.replays != seen {
                let took = (Instant::now() - st.replayed_at).as_nanos();
                self.resumes.fetch_add(1, Relaxed);
                self.resume_ns.fetch_add(took.max(0) as u64, Relaxed);
                return Ok(Stall::Replayed);
            }
            if stop() {
                return Ok(Stall::Stopped);
            }
            let Some(runlist) = st.runlist.as_ref() else {
                return Err(ENODEV);
            };
            if st.parked.len() == st.parked.capacity() {
                let need = st.parked.len() + 1;
                if room.capacity() < need {
                    drop(guard);
                    room = KVec::with_capacity(2 * need, GFP_KERNEL)?;
                    continue;
                }
                for p in st.parked.drain_all() {
                    // `room` holds more than the list did.
                    let _ = room.push_within_capacity(p);
                }
                core::mem::swap(&mut st.parked, &mut room);
            }
            let ms = left.as_millis_ceil().clamp(1, WATCH_PERIOD_MS.into()) as u32;
            // `Err`: armed already, and fires within the period.
            let _ = runlist
                .queue
                .enqueue_delayed(runlist.watchdog.clone(), msecs_to_jiffies(ms));
            // There is room: made above.
            let _ = st.parked.push_within_capacity(who);
            return Ok(Stall::Parked);
        }
    }

    /// Restarts (and takes off) every parked channel.
    fn restart_parked(st: &mut FaultState) {
        let Some(runlist) = st.runlist.as_ref() else {
            return;
        };
        for p in st.parked.drain_all() {
            p.restart(&runlist.queue);
        }
    }

    /// Queues `who` again on this CPU, behind what is queued there: the end
    /// of its time slice. Nothing once the unit is detached (no channel
    /// runs then).
    pub(crate) fn requeue(&self, who: Arc<dyn Restartable>) {
        self.yields.fetch_add(1, Relaxed);
        if let Some(runlist) = self.state.lock().runlist.as_ref() {
            who.restart(&runlist.queue);
        }
    }

    /// Restarts every parked channel so that it sees a cancel, or its
    /// timeout: those still waiting park again.
    pub(crate) fn kick(&self) {
        // Under the lock: ordered after a parker's check of its stop
        // condition, which is parked or sees the cancel.
        Self::restart_parked(&mut self.state.lock());
    }

    /// Raises the non-stall interrupt: a job completed or a channel failed.
    pub(crate) fn event(&self) {
        // Under the lock: a waiter checks the counter and goes to sleep
        // under it, so it cannot miss this.
        let g = self.nonstall.lock();
        self.events.fetch_add(1, Relaxed);
        drop(g);
        wake_all_sync(&self.nonstall_irq);
    }
}

impl GpuFaults for FaultUnit {
    fn request_irq(&self, irq: Arc<dyn FaultIrq>) {
        let mut st = self.state.lock();
        let old = st.irq.replace(irq);
        st.assert_irq();
        drop(st);
        // Dropped unlocked: it may be the handler's last reference.
        drop(old);
    }

    fn take(&self, out: &mut KVec<FaultEntry>) -> bool {
        out.clear();
        let mut st = self.state.lock();
        if st.shutdown || st.is_empty() {
            return false;
        }
        // The oldest entry's address space: its entries go to `out`, the
        // others move up behind GET, in order.
        let asid = st.ring[st.get].asid;
        let (get, put) = (st.get, st.put);
        let mut keep = get;
        let mut i = get;
        while i != put {
            let e = st.ring[i];
            // Room was made by the caller; beyond it, entries stay.
            if e.asid != asid || out.push_within_capacity(e).is_err() {
                st.ring[keep] = e;
                keep = (keep + 1) % FAULT_BUFFER_SIZE;
            }
            i = (i + 1) % FAULT_BUFFER_SIZE;
        }
        st.put = keep;
        // Another worker may take the next address space meanwhile.
        st.assert_irq();
        true
    }

    fn replay(&self) {
        let mut st = self.state.lock();
        st.replays += 1;
        st.replayed_at = Instant::now();
        // On the handler's CPU: they run next in its worker, once the
        // handler returns.
        Self::restart_parked(&mut st);
    }

    fn shutdown(&self) {
        let mut st = self.state.lock();
        st.shutdown = true;
        // Under the lock, which every call of the handler holds: none runs
        // once it is out.
        let irq = st.irq.take();
        drop(st);
        // Unlocked: it may be the handler's last reference.
        drop(irq);
        self.shut_down.store(true, Release);
        // The waiters on completions see it.
        self.event();
    }

    fn is_shut_down(&self) -> bool {
        self.shut_down.load(Acquire)
    }

    fn events(&self) -> u64 {
        self.events.load(Relaxed)
    }

    fn wait_event(&self, seen: u64, jiffies: Jiffies) -> bool {
        let mut g = self.nonstall.lock();
        if self.events.load(Relaxed) != seen {
            return false;
        }
        matches!(
            self.nonstall_irq
                .wait_interruptible_timeout(&mut g, jiffies),
            kernel::sync::CondVarTimeoutResult::Signal { .. }
        )
    }

    fn overflows(&self) -> u64 {
        self.overflows.load(Relaxed)
    }

    fn resumes(&self) -> (u64, u64) {
        (self.resumes.load(Relaxed), self.resume_ns.load(Relaxed))
    }

    fn yields(&self) -> u64 {
        self.yields.load(Relaxed)
    }
}

#[kunit_tests(nsvm_fault)]
mod tests {
    use super::*;
    use crate::gpu::Fault;
    use kernel::time::delay::fsleep;

    fn entry(addr: usize) -> FaultEntry {
        FaultEntry {
            asid: 1,
            chid: 2,
            tag: 1,
            fault: Fault {
                addr,
                write: false,
                atomic: false,
            },
            raised: Instant::now(),
        }
    }

    /// A full ring drops what does not fit, counts it, and hands out the
    /// rest oldest first.
    #[test]
    fn overflow_drops_and_counts() -> Result {
        let unit = FaultUnit::new()?;
        let n = FAULT_BUFFER_SIZE + 10;
        unit.raise((0..n).map(|i| entry(i * 4096)));
        // One slot stays free.
        assert_eq!(unit.overflows(), 11);
        let mut out = KVec::with_capacity(FAULT_BUFFER_SIZE, GFP_KERNEL)?;
        assert!(unit.take(&mut out));
        assert_eq!(out.len(), FAULT_BUFFER_SIZE - 1);
        assert_eq!(out[0].fault.addr, 0);
        assert_eq!(
            out[out.len() - 1].fault.addr,
            (FAULT_BUFFER_SIZE - 2) * 4096
        );
        // Room again, and the ring wraps.
        unit.raise((0..3).map(entry));
        assert!(unit.take(&mut out));
        assert_eq!(out.len(), 3);
        Ok(())
    }

    /// A take moves one address space's entries (the oldest entry's) and
    /// keeps the others, in order, for the next.
    #[test]
    fn take_one_address_space() -> Result {
        let unit = FaultUnit::new()?;
        let e = |asid, addr| FaultEntry {
            asid,
            ..entry(addr)
        };
        let ring = [e(1, 0), e(2, 1), e(1, 2), e(3, 3), e(2, 4)];
        unit.raise(ring.into_iter());
        let mut out = KVec::with_capacity(8, GFP_KERNEL)?;
        let mut order = KVec::new();
        while order.len() < 5 {
            assert!(unit.take(&mut out));
            assert!(out.iter().all(|x| x.asid == out[0].asid));
            for x in out.iter() {
                order.push((x.asid, x.fault.addr), GFP_KERNEL)?;
            }
        }
        assert_eq!(&order[..], &[(1, 0), (1, 2), (2, 1), (2, 4), (3, 3)]);
        Ok(())
    }

    /// Counts its interrupts.
    struct Counting(Atomic<u32>);

    impl FaultIrq for Counting {
        fn fault_irq(&self) {
            self.0.fetch_add(1, Relaxed);
        }
    }

    /// The interrupt is level-triggered: raised by every raise, by a
    /// request with entries waiting and by a take that leaves entries
    /// behind, never with the ring empty; after the shutdown, never.
    #[test]
    fn interrupt_is_level_triggered() -> Result {
        let unit = FaultUnit::new()?;
        let e = |asid, addr| FaultEntry {
            asid,
            ..entry(addr)
        };
        unit.raise([e(1, 0), e(2, 1)].into_iter());
        let irq = Arc::new(Counting(Atomic::new(0)), GFP_KERNEL)?;
        let count = || irq.0.load(Relaxed);
        unit.request_irq(irq.clone());
        assert_eq!(count(), 1);
        let mut out = KVec::with_capacity(8, GFP_KERNEL)?;
        // Address space 2's entry is left: raised again.
        assert!(unit.take(&mut out));
        assert_eq!(count(), 2);
        assert!(unit.take(&mut out));
        assert_eq!(count(), 2);
        assert!(!unit.take(&mut out));
        // An empty raise (a stall on nothing) raises nothing.
        unit.raise(core::iter::empty());
        assert_eq!(count(), 2);
        unit.raise(core::iter::once(entry(0)));
        assert_eq!(count(), 3);
        unit.shutdown();
        unit.raise(core::iter::once(entry(0)));
        assert_eq!(count(), 3);
        assert!(!unit.take(&mut out));
        Ok(())
    }

    /// Counts its restarts.
    struct Restarts(Atomic<u32>);

    impl Restartable for Restarts {
        fn restart(self: Arc<Self>, _queue: &Queue) {
            self.0.fetch_add(1, Relaxed);
        }
    }

    /// A park ends with a replay after the stall, a kick or the watchdog;
    /// it parks nothing once replayed or stopped, and nothing at all once
    /// detached; after the shutdown, nothing is taken.
    #[test]
    fn park_replay_kick_and_watchdog() -> Result {
        let unit = FaultUnit::new()?;
        unit.attach(Arc::new(
            OwnedQueue::new_unbound(c"nsvm_kunit")?,
            GFP_KERNEL,
        )?)?;
        let r = Arc::new(Restarts(Atomic::new(0)), GFP_KERNEL)?;
        let count = || r.0.load(Relaxed);
        let long = Delta::from_secs(10);
        let seen = unit.raise(core::iter::once(entry(0)));
        assert_eq!(
            unit.park(r.clone(), seen, long, || false),
            Ok(Stall::Parked)
        );
        // A stopped parker is not parked, and a kick restarts the other.
        assert_eq!(
            unit.park(r.clone(), seen, long, || true),
            Ok(Stall::Stopped)
        );
        unit.kick();
        assert_eq!(count(), 1);
        unit.kick();
        assert_eq!(count(), 1);
        // More parkers than the list had room for; one replay restarts all.
        for _ in 0..9 {
            assert_eq!(
                unit.park(r.clone(), seen, long, || false),
                Ok(Stall::Parked)
            );
        }
        unit.replay();
        assert_eq!(count(), 10);
        assert_eq!(
            unit.park(r.clone(), seen, long, || false),
            Ok(Stall::Replayed)
        );
        assert_eq!(unit.resumes().0, 1);
        unit.replay();
        assert_eq!(count(), 10);
        // Parked with 1 ms left: the watchdog restarts it.
        let seen = unit.raise(core::iter::empty());
        let left = Delta::from_millis(1);
        assert_eq!(
            unit.park(r.clone(), seen, left, || false),
            Ok(Stall::Parked)
        );
        for _ in 0..100 {
            if count() == 11 {
                break;
            }
            fsleep(Delta::from_millis(10));
        }
        assert_eq!(count(), 11);
        assert_eq!(
            unit.park(r.clone(), seen, long, || false),
            Ok(Stall::Parked)
        );
        unit.detach();
        assert_eq!(unit.park(r.clone(), seen, long, || false), Err(ENODEV));
        unit.replay();
        assert_eq!(count(), 11);
        unit.shutdown();
        let mut out = KVec::with_capacity(4, GFP_KERNEL)?;
        assert!(!unit.take(&mut out));
        Ok(())
    }
}
