// SPDX-License-Identifier: GPL-2.0

//! The device fault handler: serves the GPU's faults in no process's
//! context.
//!
//! One per device, with a worker per CPU (at most [`MAX_WORKERS`]) on the
//! device's own per-CPU queue. The replayable-fault interrupt
//! ([`FaultIrq`]) queues a worker on the CPU it was taken on, as nouveau's
//! `nouveau_svm_event()` schedules `nouveau_svm_fault()` and Xe queues its
//! page-fault work: the CPU whose access faulted serves it, with no
//! wake-up of another CPU. The queue shares the CPU's ordinary workers with
//! the engine's: the faulting job's worker returns (the job is parked) and
//! runs the pass next, then the jobs the pass replayed, with no context
//! switch (see `gpu/engine.rs`). When that CPU's worker is already serving
//! (another address space), the interrupt queues an idle worker on its
//! own CPU instead, so that address spaces are served at once. A worker
//! runs one pass per run; entries left in the buffer raise the interrupt
//! again. Each pass of a worker:
//!
//! 1. takes the fault buffer's entries of one GPU address space (the
//!    mirror's client id): the oldest entry's, so address spaces are served
//!    in the order they faulted and, with several workers, at once;
//! 2. finds the mirror among those bound on the device
//!    ([`FaultHandler::spaces`]); entries of a mirror no longer there are
//!    dropped (its channels were stopped before it went);
//! 3. takes `mmget_not_zero()` for the batch. If the
//!    process exited, the channels that faulted fail with `ESRCH` and the
//!    address space is not touched. Else it serves at most [`FAULT_BATCH`]
//!    deduplicated faults with the mirror's window logic and fails the
//!    channels whose faults cannot be served (`EFAULT` for an access no VMA
//!    allows, with the address);
//! 4. replays: every stalled channel retries, and what is still missing
//!    (faults beyond a batch, dropped on overflow, or raced by an
//!    invalidation) faults again.
//!
//! No address space has more than one batch served per pass, and the
//! next pass starts with the oldest entry left: one process's fault storm
//! delays the others by at most a batch per worker. Two workers may serve
//! one address space at once (as two ioctl threads once did); the fault
//! path is safe for that.
//!
//! # Lifetimes
//!
//! The handler finds a mirror in [`FaultHandler::spaces`] and holds a
//! reference to it only while it serves its batch. A file's release stops
//! the file's channels (no job runs any more) and removes the mirror from
//! `spaces` ([`FaultHandler::unregister`]): the handler cannot find it
//! again, and whatever it still maps for a batch it is serving no job
//! uses. The last reference to the mirror, the file's or the handler's,
//! then unmaps every GPU entry and flushes the TLB, removes the notifier
//! and drops the `mmgrab` (see `svm.rs`). The release does not wait for the
//! handler: a fault whose service cannot end soon (a fault handler that
//! keeps dropping the mmap lock under a storm of invalidations from another
//! process) does not hold up the exit of the process.
//!
//! The `mm` reference the handler takes is its own, per batch: no job holds
//! one, and only the mirror's `mmgrab` outlives a batch.
//!
//! `"FaultHandler::spaces"` is a leaf, held only to find, add or remove a
//! mirror.

use kernel::{
    cpu::CpuId,
    new_mutex, new_work,
    prelude::*,
    sync::{
        atomic::{
            Atomic,
            Relaxed, //
        },
        Arc,
        Mutex, //
    },
    time::{
        Delta,
        Instant, //
    },
    workqueue::{
        Work,
        WorkItem, //
    },
};

use crate::{
    gpu::{
        fault::FAULT_BUFFER_SIZE,
        queue::OwnedQueue,
        ChannelError,
        Fault,
        FaultEntry,
        FaultIrq,
        GpuFaults,
        GpuVm,
        FAULT_BATCH,
        PAGE_SIZE_4K, //
    },
    svm::{
        Counters,
        Mirror, //
    },
    trace,
};

/// The fault handler of one device.
#[pin_data]
pub(crate) struct FaultHandler<V: GpuVm> {
    faults: Arc<V::Faults>,
    /// The mirrors bound on the device, by client id.
    #[pin]
    spaces: Mutex<KVec<Arc<Mirror<V>>>>,
    /// Passes run.
    passes: Atomic<u64>,
    /// Entries taken from the buffer.
    entries: Atomic<u64>,
    /// From the oldest entry's raise to the pass that took it, in total.
    wake_ns: Atomic<u64>,
    /// Serving the passes, in total.
    serve_ns: Atomic<u64>,
}

/// One of the handler's workers, on one CPU: each takes one address
/// space's entries per pass, so that several address spaces are served at
/// once.
#[pin_data]
struct HandlerWorker<V: GpuVm> {
    handler: Arc<FaultHandler<V>>,
    /// The CPU it is queued on.
    cpu: CpuId,
    /// Whether it is running: a hint for the interrupt, which queues an
    /// idle worker if there is one.
    running: Atomic<bool>,
    /// Room for a pass, made once: the fault path allocates none of it.
    /// Only the worker's own run takes it (a work item does not run twice
    /// at once on one queue), with nothing held.
    #[pin]
    room: Mutex<Room>,
    #[pin]
    work: Work<HandlerWorker<V>>,
}

/// What a pass of a worker works in.
struct Room {
    /// Room for the whole fault buffer: the entries a pass takes.
    entries: KVec<FaultEntry>,
    /// Room for [`FAULT_BATCH`] faults: the batch a pass serves.
    batch: KVec<Fault>,
}

kernel::impl_has_work! {
    impl{V: GpuVm} HasWork<HandlerWorker<V>> for HandlerWorker<V> { self.work }
}

impl<V: GpuVm> WorkItem for HandlerWorker<V> {
    type Pointer = Arc<HandlerWorker<V>>;

    fn run(worker: Arc<HandlerWorker<V>>) {
        worker.running.store(true, Relaxed);
        let this = &worker.handler;
        let mut room = worker.room.lock();
        let Room { entries, batch } = &mut *room;
        // One pass per run: the channels it replays run next on this CPU,
        // and then what else is queued here. Entries left behind, or
        // raised meanwhile, raised the interrupt again, which queued a
        // worker: an idle one, or this one, which then runs once more (see
        // `HandlerIrq::fault_irq`).
        if this.faults.take(entries) {
            let start = Instant::now();
            let oldest = entries
                .iter()
                .map(|e| e.raised)
                .min_by_key(|&r| (r - start).as_nanos())
                .unwrap_or(start);
            this.pass(entries, batch);
            this.faults.replay();
            let add = |c: &Atomic<u64>, d: Delta| c.fetch_add(d.as_nanos().max(0) as u64, Relaxed);
            add(&this.wake_ns, start - oldest);
            add(&this.serve_ns, start.elapsed());
            this.entries.fetch_add(entries.len() as u64, Relaxed);
        }
        drop(room);
        worker.running.store(false, Relaxed);
    }
}

/// The replayable-fault interrupt's handler: queues a worker.
struct HandlerIrq<V: GpuVm> {
    /// One per CPU, at most [`MAX_WORKERS`], by CPU.
    workers: KVec<Arc<HandlerWorker<V>>>,
    /// Per CPU. Declared last: dropped after the workers' references,
    /// when it waits for them.
    queue: OwnedQueue,
}

impl<V: GpuVm> FaultIrq for HandlerIrq<V> {
    fn fault_irq(&self) {
        let n = self.workers.len();
        // Stale once preempted: a hint, as an interrupt's CPU is.
        let cpu = CpuId::current().as_u32() as usize;
        // The interrupted CPU's worker if it is idle, else an idle one, else
        // the CPU's: a worker queued while it runs runs again, and one that
        // is queued takes what is there when it runs. Either way a worker
        // takes the entries that raised this.
        let w = (0..n)
            .map(|i| &self.workers[(cpu + i) % n])
            .find(|w| !w.running.load(Relaxed))
            .unwrap_or(&self.workers[cpu % n]);
        // `Err`: queued already, and runs after the entries were written.
        let _ = self.queue.enqueue_on(w.cpu, w.clone());
    }
}

impl<V: GpuVm> FaultHandler<V> {
    fn new(faults: Arc<V::Faults>) -> Result<Arc<Self>> {
        Arc::pin_init(
            pin_init!(Self {
                faults,
                spaces <- new_mutex!(KVec::new(), "FaultHandler::spaces"),
                passes: Atomic::new(0),
                entries: Atomic::new(0),
                wake_ns: Atomic::new(0),
                serve_ns: Atomic::new(0),
            }),
            GFP_KERNEL,
        )
    }

    /// The fault buffer.
    pub(crate) fn faults(&self) -> &V::Faults {
        &self.faults
    }

    /// Makes `mirror`'s faults servable.
    pub(crate) fn register(&self, mirror: Arc<Mirror<V>>) -> Result {
        self.spaces.lock().push(mirror, GFP_KERNEL)?;
        Ok(())
    }

    /// Forgets `mirror`: the handler finds it no more (see "Lifetimes").
    /// Its channels must be stopped: a fault raised after this is dropped,
    /// and the stalled job would wait for its timeout.
    pub(crate) fn unregister(&self, mirror: &Mirror<V>) {
        let asid = mirror.asid();
        self.spaces.lock().retain(|m| m.asid() != asid);
    }

    /// Fails every channel of every mirror bound on the device with `err`,
    /// and waits until none runs: the device's removal. A mirror bound
    /// later has channels made after the fault unit's shutdown, which take
    /// no job; one missed for want of memory (see
    /// [`FaultHandler::for_each_mirror`]) has its channels wait for their
    /// timeout.
    pub(crate) fn fail_all(&self, err: Error) {
        self.for_each_mirror(|m| m.queues.fail_all(err));
    }

    /// Calls `f` on every mirror bound on the device now, not holding
    /// `spaces` (a leaf) meanwhile.
    pub(crate) fn for_each_mirror(&self, f: impl Fn(&Mirror<V>)) {
        let mirrors = {
            let spaces = self.spaces.lock();
            KVec::with_capacity(spaces.len(), GFP_KERNEL).map(|mut v| {
                for m in spaces.iter() {
                    // Room was made above.
                    let _ = v.push_within_capacity(m.clone());
                }
                v
            })
        };
        match mirrors {
            Ok(mirrors) => mirrors.iter().for_each(|m| f(m)),
            // No memory for the list: by index, which can miss a mirror
            // whose neighbour is released meanwhile.
            Err(_) => {
                let mut i = 0;
                loop {
                    // The guard goes at the end of the statement.
                    let m = self.spaces.lock().get(i).cloned();
                    let Some(m) = m else { break };
                    f(&m);
                    i += 1;
                }
            }
        }
    }

    /// One pass over `entries` (what [`GpuFaults::take`] took: one
    /// address space's), with room for a batch in `batch`.
    fn pass(&self, entries: &mut KVec<FaultEntry>, batch: &mut KVec<Fault>) {
        self.passes.fetch_add(1, Relaxed);
        entries.sort_unstable_by_key(|e| (e.asid, e.fault.addr));
        for group in entries.chunk_by(|a, b| a.asid == b.asid) {
            self.serve_space(group, batch);
        }
    }

    /// Serves the entries of one address space (sorted by address).
    fn serve_space(&self, group: &[FaultEntry], batch: &mut KVec<Fault>) {
        let asid = group[0].asid;
        let mirror = self
            .spaces
            .lock()
            .iter()
            .find(|m| m.asid() == asid)
            .cloned();
        // None: the file was released, its channels are stopped.
        if let Some(mirror) = mirror {
            mirror.serving(|| self.serve_mirror(&mirror, group, batch));
        }
    }

    /// Serves `group` (one address space's entries) in `mirror`, the
    /// batch in `batch`, which has room for [`FAULT_BATCH`] faults.
    fn serve_mirror(&self, mirror: &Mirror<V>, group: &[FaultEntry], batch: &mut KVec<Fault>) {
        let fail_all = |err: Error| {
            for (i, e) in group.iter().enumerate() {
                if group[..i].iter().all(|o| o.chid != e.chid) {
                    mirror
                        .queues
                        .fail(e.chid, ChannelError { err, fault: None });
                }
            }
        };
        // No allocation of the batch may invoke the OOM killer: see
        // `NoOomScope`. Entered before the reference, dropped after it.
        let _no_oom = crate::mm::NoOomScope::enter();
        // The handler's own reference, for this batch only.
        let Some(mm) = mirror.mmget_not_zero() else {
            fail_all(ESRCH);
            return;
        };
        // One fault per address, with every access asked for it.
        batch.clear();
        for e in group {
            if let Some(f) = batch.last_mut().filter(|f| f.addr == e.fault.addr) {
                f.write |= e.fault.write;
                f.atomic |= e.fault.atomic;
                continue;
            }
            // Beyond a batch: raised again after the replay.
            if batch.push_within_capacity(e.fault).is_err() {
                break;
            }
        }
        let vm = mirror.vm();
        Counters::add(&vm.counters.faults, batch.len() as u64);
        for f in batch.iter() {
            trace::gpu_fault(vm.client, f);
        }
        // Nobody wants the batch once the process is gone (the handler's
        // is the last user reference: it would fault memory in for an exiting
        // process, possibly an OOM victim) or every channel that asked has
        // failed (an EXEC interrupted by a signal, a killed process's file
        // released).
        let abort = || -> Result {
            if !crate::mm::has_other_users(&mm) {
                return Err(ESRCH);
            }
            if !mirror.queues.any_live(group.iter().map(|e| e.chid)) {
                return Err(ECANCELED);
            }
            Ok(())
        };
        let mut first_err = None;
        mirror.serve(&mm, batch, &abort, |u, (start, end)| {
            first_err.get_or_insert(u.err);
            // Unservable accesses are one documented error; others
            // (ENOMEM, EBUSY) pass through.
            let err = if u.err == EPERM || u.err == EFAULT || u.err == EOPNOTSUPP {
                EFAULT
            } else {
                u.err
            };
            let fault = Fault {
                addr: u.addr,
                write: u.write,
                atomic: false,
            };
            // The channels that asked for what failed: the failing page,
            // with at least its access. Other faults of the window (other
            // pages, or a read of a page whose write failed) are raised
            // again after the replay and served on their own.
            let page = u.addr & !(PAGE_SIZE_4K - 1);
            let failed = |e: &&FaultEntry| {
                e.fault.addr & !(PAGE_SIZE_4K - 1) == page
                    && (e.fault.write || e.fault.atomic || !u.write)
                    && (start..end).contains(&e.fault.addr)
            };
            for e in group.iter().filter(failed) {
                mirror.queues.cancel(
                    e.chid,
                    e.tag,
                    ChannelError {
                        err,
                        fault: Some(fault),
                    },
                );
            }
        });
        trace::fault_batch(vm.client, batch, &first_err.map_or(Ok(()), Err));
        Counters::add(&vm.counters.batches, 1);
        // `mm` goes here; if it is the last user the address space is torn
        // down now, its notifier callbacks included, with nothing held.
    }
}

/// `<debugfs>/nsvm/nsvm.<index>/faults`: the handler's passes, where a
/// fault's round trip goes (raise to the pass that takes it, the pass's
/// service and replay, replay to the job's resumption), the fault
/// buffer's overflows and the channels' time slices given up.
impl<V: GpuVm> core::fmt::Debug for FaultHandler<V> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let (resumes, resume_ns) = self.faults.resumes();
        writeln!(f, "passes: {}", self.passes.load(Relaxed))?;
        writeln!(f, "entries: {}", self.entries.load(Relaxed))?;
        writeln!(f, "overflows: {}", self.faults.overflows())?;
        writeln!(f, "wake_ns: {}", self.wake_ns.load(Relaxed))?;
        writeln!(f, "serve_ns: {}", self.serve_ns.load(Relaxed))?;
        writeln!(f, "resumes: {resumes}")?;
        writeln!(f, "resume_ns: {resume_ns}")?;
        write!(f, "yields: {}", self.faults.yields())
    }
}

/// Most workers a handler runs.
const MAX_WORKERS: u32 = 4;

/// The fault handler's workers, owned by the device: one per CPU, at most
/// [`MAX_WORKERS`].
///
/// Dropping it frees the fault buffer's interrupt and waits for the
/// workers to return. Every file holds the handler (not this), so it is
/// dropped after the last file, with no mirror left.
pub(crate) struct HandlerThread<V: GpuVm> {
    handler: Arc<FaultHandler<V>>,
    /// Also the fault buffer's until the shutdown: the last reference to
    /// the workers' queue once it is freed.
    irq: Arc<HandlerIrq<V>>,
}

impl<V: GpuVm> HandlerThread<V> {
    /// Starts the handler of the fault buffer `faults`.
    pub(crate) fn new(faults: Arc<V::Faults>) -> Result<Self> {
        let handler = FaultHandler::new(faults)?;
        let n = kernel::cpu::nr_cpu_ids().clamp(1, MAX_WORKERS);
        let mut workers = KVec::with_capacity(n as usize, GFP_KERNEL)?;
        for cpu in 0..n {
            // Below `nr_cpu_ids`.
            let cpu = CpuId::from_u32(cpu).ok_or(EINVAL)?;
            let room = Room {
                entries: KVec::with_capacity(FAULT_BUFFER_SIZE, GFP_KERNEL)?,
                batch: KVec::with_capacity(FAULT_BATCH, GFP_KERNEL)?,
            };
            let handler = handler.clone();
            let worker = Arc::pin_init(
                pin_init!(HandlerWorker {
                    handler,
                    cpu,
                    running: Atomic::new(false),
                    room <- new_mutex!(room, "HandlerWorker::room"),
                    work <- new_work!("HandlerWorker::work"),
                }),
                GFP_KERNEL,
            )?;
            workers.push(worker, GFP_KERNEL)?;
        }
        let irq: Arc<HandlerIrq<V>> = Arc::new(
            HandlerIrq {
                workers,
                queue: OwnedQueue::new_percpu(c"nsvm_fault")?,
            },
            GFP_KERNEL,
        )?;
        let top: Arc<dyn FaultIrq> = irq.clone();
        handler.faults.request_irq(top);
        Ok(Self { handler, irq })
    }

    /// The handler, for the files.
    pub(crate) fn handler(&self) -> &Arc<FaultHandler<V>> {
        &self.handler
    }

    /// Waits until no worker runs, once the fault buffer's interrupt is
    /// freed ([`GpuFaults::shutdown`]): no fault is served after this
    /// returns.
    pub(crate) fn wait_stopped(&self) {
        self.irq.queue.flush();
    }
}

impl<V: GpuVm> Drop for HandlerThread<V> {
    fn drop(&mut self) {
        // Frees the interrupt: nothing queues a worker any more, and
        // `irq`, dropped next, has the last reference to the queue, which
        // waits for the workers.
        self.handler.faults.shutdown();
    }
}
