// SPDX-License-Identifier: GPL-2.0

//! The software GPU's replayable fault buffer and its interrupt lines.
//!
//! One per device, shared by every channel: a ring of [`FAULT_BUFFER_SIZE`]
//! entries with GET and PUT positions. A channel that misses in the GPU
//! page table writes an entry per missing block at PUT and stalls; the
//! fault handler, woken by the "replayable fault" interrupt, takes the
//! entries from GET, serves them and replays, which restarts every stalled
//! channel. The interrupt is level-triggered and taken on the CPU of the
//! access that raised the entry (as an MSI is, by its affinity): its handler
//! ([`FaultIrq`]) queues a worker there, so a fault's service starts on the
//! CPU that faulted, with no cross-CPU wake-up. A take that leaves entries
//! of other address spaces behind raises it again, for another worker.
//!
//! As on hardware, a fault raised while the ring is full is dropped
//! (counted in [`FaultUnit::overflows`]): the stalled access raises it
//! again after the next replay.
//!
//! The "non-stall" interrupt counts job completions and channel failures;
//! fence waiters sleep on it.

use kernel::{
    new_condvar, new_mutex,
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
        Instant,
        Jiffies,
        Monotonic, //
    },
};

use super::{
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

/// The ring and the replay generation, under [`FaultUnit::state`].
struct FaultState {
    /// The entries; `get == put` is empty, one slot stays free.
    ring: KVec<FaultEntry>,
    get: usize,
    put: usize,
    /// Bumped by every replay: a stalled channel resumes when it changed.
    replays: u64,
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
    /// Stalled channels sleep on it until a replay (or their cancel).
    #[pin]
    replayed: CondVar,
    /// The non-stall interrupt's counter and line.
    events: Atomic<u64>,
    #[pin]
    nonstall: Mutex<()>,
    #[pin]
    nonstall_irq: CondVar,
    overflows: Atomic<u64>,
    resumes: Atomic<u64>,
    resume_ns: Atomic<u64>,
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
            replayed_at: Instant::now(),
            irq: None,
            shutdown: false,
        };
        Arc::pin_init(
            pin_init!(Self {
                state <- new_mutex!(state, "FaultUnit::state"),
                replayed <- new_condvar!("FaultUnit::replayed"),
                events: Atomic::new(0),
                nonstall <- new_mutex!((), "FaultUnit::nonstall"),
                nonstall_irq <- new_condvar!("FaultUnit::nonstall_irq"),
                overflows: Atomic::new(0),
                resumes: Atomic::new(0),
                resume_ns: Atomic::new(0),
                shut_down: Atomic::new(false),
            }),
            GFP_KERNEL,
        )
    }

    /// Writes `entries` at PUT (dropping those that find the ring full),
    /// raises the interrupt and returns the replay generation the caller
    /// then stalls on with [`FaultUnit::stall`].
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
        // On the raiser's CPU, which stalls right after: the handler's
        // worker runs there, without waiting for another CPU (an IPI to an
        // idle vCPU is slow under emulation).
        st.assert_irq();
        st.replays
    }

    /// Sleeps until a replay after generation `seen`, `stop()` says to stop,
    /// or `jiffies` passed; `true` once replayed.
    pub(crate) fn stall(&self, seen: u64, jiffies: Jiffies, stop: impl Fn() -> bool) -> bool {
        let mut st = self.state.lock();
        if st.replays == seen {
            if stop() {
                return false;
            }
            // Interruptible, so a long stall is no hung task: a worker gets
            // no signals.
            let _ = self.replayed.wait_interruptible_timeout(&mut st, jiffies);
        }
        if st.replays == seen {
            return false;
        }
        let took = (Instant::now() - st.replayed_at).as_nanos();
        self.resumes.fetch_add(1, Relaxed);
        self.resume_ns.fetch_add(took.max(0) as u64, Relaxed);
        true
    }

    /// Wakes every stalled channel so it sees a cancel.
    pub(crate) fn kick(&self) {
        // Taking the lock orders this after a staller's check of its stop
        // condition: it is asleep or sees the cancel.
        drop(self.state.lock());
        self.replayed.notify_all();
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
        drop(st);
        // The handler goes back to sleep next: see `raise()`.
        wake_all_sync(&self.replayed);
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
}

#[kunit_tests(nsvm_fault)]
mod tests {
    use super::*;
    use crate::gpu::Fault;

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

    /// A stall ends with a replay after it, or not at all; after the
    /// shutdown, nothing is taken.
    #[test]
    fn replay_and_shutdown() -> Result {
        let unit = FaultUnit::new()?;
        let seen = unit.raise(core::iter::once(entry(0)));
        assert!(!unit.stall(seen, 1, || false));
        unit.replay();
        assert!(unit.stall(seen, 1, || false));
        assert_eq!(unit.resumes().0, 1);
        // A cancelled staller does not wait.
        let seen = unit.raise(core::iter::empty());
        assert!(!unit.stall(seen, 1_000_000, || true));
        unit.shutdown();
        let mut out = KVec::with_capacity(4, GFP_KERNEL)?;
        assert!(!unit.take(&mut out));
        Ok(())
    }
}
