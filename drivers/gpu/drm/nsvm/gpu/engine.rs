// SPDX-License-Identifier: GPL-2.0

//! The software GPU's command processor: channels whose jobs workers
//! execute.
//!
//! A [`Channel`] is a ring of [`Job`]s bound to one GPU address space, the
//! way an NVIDIA channel's GPFIFO is: its jobs run one after the other, on
//! a worker of the device's [`Engine`] queue, beside every other channel's.
//! The worker runs on the CPU that started the channel (the submitter's,
//! whose thread usually waits next): submission, the job, its faults'
//! service (see `handler.rs`) and the completion's wake-up then stay on
//! one CPU, with no wake-up of an idle one.
//!
//! The worker holds its CPU only while the job runs: a stalled job is
//! parked with the fault unit and its worker returns, keeping where the
//! job is in a [`Cursor`]; the replay queues the worker again, and it goes
//! on from there. The queue is per CPU and concurrency-managed, as the
//! fault handler's is: the handler, queued by the fault's interrupt on
//! the faulting CPU, runs next in the worker the job returned from, and the
//! resumed job next after it, so a fault's round trip switches no context.
//! A worker that ran for [`TIME_SLICE`] gives the CPU up to what is queued
//! behind it and queues itself again, as a GPU's scheduler time-slices its
//! channels.
//! A job runs its commands in order and then writes its fence. It touches
//! memory only through the GPU page table ([`GpuVm::lookup`]), under the
//! mirror's VM lock, so an invalidation can never pull a page from under
//! an access; it never touches the CPU address space itself.
//!
//! Faults work as with a replayable fault buffer. Before executing a
//! command, the job touches every page it will use and writes the misses
//! (at most [`FAULT_BATCH`]) to the device's fault buffer ([`FaultUnit`]);
//! it then stalls (parked, as above) until the fault handler replays, and
//! probes again. A miss during execution (an invalidation raced the batch)
//! stalls it the same way. The handler runs in no process's context and knows no job: it
//! serves what the buffer names, replays every stalled channel, and fails a
//! channel whose fault it cannot serve.
//!
//! A failed channel ([`GpuChannel::fail`]) stops its running job before
//! the worker's next hold of the VM lock (within [`LOCK_RUN`] pages or
//! [`PROBE_RUN`] lookups) or at once if it is stalled (the failure kicks
//! the parked channels), and cancels the queued ones. A job that makes no
//! progress for the channel's timeout fails it with `ETIMEDOUT`, as
//! `drm_sched`'s `timedout_job` stops a hung job; a parked job sees it when
//! the fault unit's watchdog restarts it.
//!
//! A job may wait for in-fences (dma-fences of other work, from sync
//! objects) before it starts, as a channel's semaphore acquire or a
//! scheduler's dependencies hold it: its worker sleeps on each fence in
//! slices of [`DEP_POLL_MS`] and sees a failed channel between them. The
//! job's timeout starts after the wait; the job signals no dma-fence.
//!
//! Jobs hold the GPU side of the mirror ([`MirrorVm`]) and never an `mm`
//! reference: a queued or running job does not keep an exited process's
//! address space alive. A worker still runs after its channel went idle
//! (the wake-up, the drop of its references), so the queue is the device's
//! own and dropping the device waits for it: no job code runs once the
//! module may be unloaded.

use core::ptr::NonNull;

use kernel::{
    bindings,
    dma_fence::DmaFence,
    new_condvar, new_mutex, new_work,
    prelude::*,
    sync::{
        aref::ARef,
        atomic::{
            Atomic,
            Relaxed, //
        },
        Arc,
        CondVar,
        Mutex, //
    },
    time::{
        delay::fsleep,
        msecs_to_jiffies,
        Delta,
        Instant,
        Monotonic, //
    },
    workqueue::{
        Queue,
        Work,
        WorkItem, //
    },
};

use crate::{
    addr,
    gpu::fault::{
        wake_all_sync,
        FaultUnit,
        Restartable,
        Stall, //
    },
    gpu::queue::OwnedQueue,
    gpu::{
        ChannelError,
        ChannelStatus,
        Fault,
        FaultEntry,
        GpuChannel,
        GpuFaults,
        GpuJob,
        GpuVm,
        Pte,
        PteAddr,
        FAULT_BATCH,
        FAULT_GRANULE,
        PAGE_SIZE_4K, //
    },
    mm::{
        access,
        PinnedWrite, //
    },
    svm::MirrorVm,
    uapi,
};

/// Pages a command touches per hold of the VM lock: fewer round trips,
/// and an invalidation waits for at most this many page copies.
const LOCK_RUN: usize = 16;

/// Page-table lookups the probe makes per hold of the VM lock.
const PROBE_RUN: usize = 512;

/// Jobs a channel queues before `EAGAIN`.
pub(crate) const MAX_PENDING: usize = 256;

/// How long a channel's worker runs before it gives its CPU up to the work
/// queued behind it there (the fault handler's, other channels').
const TIME_SLICE: Delta = Delta::from_millis(2);

/// A worker's run, and its time slice.
#[derive(Clone, Copy)]
struct Slice(Instant<Monotonic>);

impl Slice {
    fn start() -> Self {
        Self(Instant::now())
    }

    /// Whether the run has had its [`TIME_SLICE`].
    fn is_over(&self) -> bool {
        self.0.elapsed() > TIME_SLICE
    }
}

/// How often a SEM_WAIT polls its semaphore.
const SEM_POLL_MS: i64 = 1;

/// How long a job waiting for an in-fence sleeps on it before it looks
/// whether its channel failed.
const DEP_POLL_MS: u32 = 10;

/// The command processor of one GPU: the queue its channels run on, and
/// its fault buffer.
///
/// Owned by the device and dropped with it, which waits for every
/// channel's worker to return. Never dropped by a job: jobs and channels
/// hold no reference to the engine. The fault unit holds the queue too, to
/// restart parked channels, until the engine's drop takes it back: the
/// engine drops the queue's last reference.
pub(crate) struct Engine {
    queue: Arc<OwnedQueue>,
    faults: Arc<FaultUnit>,
    next_chid: Atomic<u64>,
}

impl Engine {
    pub(crate) fn new() -> Result<Self> {
        // Per CPU: see the module's documentation.
        let queue = Arc::new(OwnedQueue::new_percpu(c"nsvm_gpu")?, GFP_KERNEL)?;
        let faults = FaultUnit::new()?;
        faults.attach(queue.clone())?;
        Ok(Self {
            queue,
            faults,
            next_chid: Atomic::new(1),
        })
    }

    /// The fault buffer.
    pub(crate) fn faults(&self) -> &Arc<FaultUnit> {
        &self.faults
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // The device goes after its last file, each of which stopped its
        // channels: none is parked, and none is restarted after this.
        self.faults.detach();
    }
}

/// How a job ended, under [`Job::state`].
struct JobState {
    /// Ended; the rest is final.
    done: bool,
    result: Result,
    /// Commands completed.
    completed: usize,
    /// The old value of the last atomic.
    value: u64,
}

/// One job: in-fences, a list of commands and a fence.
#[pin_data]
pub(crate) struct Job {
    /// Signalled before the job starts.
    deps: KVec<ARef<DmaFence>>,
    cmds: KVec<uapi::drm_nsvm_cmd>,
    /// Written when the commands are done: (address, value).
    fence: Option<(usize, u64)>,
    /// For READ: where what the GPU reads goes (at most [`Job::MAX_READ`]
    /// bytes); unpinned when the last reference to the job goes.
    dst: Option<PinnedWrite>,
    /// Its sequence number on the channel, set when it is queued.
    seqno: Atomic<u64>,
    #[pin]
    state: Mutex<JobState>,
    /// Signalled when the job ends.
    #[pin]
    cond: CondVar,
}

impl Job {
    /// Largest READ one job carries (its destination stays pinned while
    /// it runs); the ioctl splits longer ones.
    pub(crate) const MAX_READ: usize = 64 << 20;

    fn end(&self, result: Result, completed: usize, value: u64) {
        let mut st = self.state.lock();
        st.done = true;
        st.result = result;
        st.completed = completed;
        st.value = value;
        drop(st);
        wake_all_sync(&self.cond);
    }
}

impl GpuJob for Job {
    fn wait(&self, interruptible: bool) -> Result {
        let mut st = self.state.lock();
        while !st.done {
            if !interruptible {
                self.cond.wait(&mut st);
            } else if self.cond.wait_interruptible(&mut st) {
                return Err(EINTR);
            }
        }
        Ok(())
    }

    fn seqno(&self) -> u64 {
        self.seqno.load(Relaxed)
    }

    fn finish(&self) -> (Result, usize, u64) {
        let st = self.state.lock();
        (st.result, st.completed, st.value)
    }
}

/// A channel's queue and progress, under [`Channel::state`].
struct ChanState {
    /// Queued jobs, oldest first.
    pending: KVec<Arc<Job>>,
    /// The channel's work is queued or running.
    running: bool,
    submitted: u64,
    completed: u64,
    error: Option<ChannelError>,
}

/// A channel of the software GPU.
#[pin_data]
pub(crate) struct Channel<V: GpuVm> {
    id: u64,
    asid: u64,
    vm: Arc<MirrorVm<V>>,
    faults: Arc<FaultUnit>,
    /// A job without progress for this long fails the channel.
    timeout: Delta,
    #[pin]
    state: Mutex<ChanState>,
    /// Set by [`GpuChannel::fail`]: the running job stops before its next
    /// hold of the VM lock, also when it never stalls on a fault.
    failed: Atomic<bool>,
    /// The tag of the stall the running job is in, 0 when it is not
    /// stalled; tags count from 1.
    stalled_on: Atomic<u64>,
    next_tag: Atomic<u64>,
    /// Signalled when the channel's work goes idle.
    #[pin]
    idle: CondVar,
    /// What the worker keeps from one run to the next. Only the worker
    /// takes it, for the whole run (a work item does not run twice at
    /// once): never contended.
    #[pin]
    exec: Mutex<Exec>,
    #[pin]
    work: Work<Channel<V>>,
}

kernel::impl_has_work! {
    impl{V: GpuVm} HasWork<Channel<V>> for Channel<V> { self.work }
}

impl<V: GpuVm> WorkItem for Channel<V> {
    type Pointer = Arc<Channel<V>>;

    fn run(this: Arc<Channel<V>>) {
        let slice = Slice::start();
        let mut guard = this.exec.lock();
        let exec = &mut *guard;
        loop {
            if exec.cur.is_none() {
                let mut st = this.state.lock();
                if st.error.is_some() {
                    for job in st.pending.drain_all() {
                        job.end(Err(ECANCELED), 0, 0);
                    }
                }
                if st.pending.is_empty() {
                    st.running = false;
                    drop(st);
                    // Idle: its room goes.
                    exec.room = Room::new();
                    this.idle.notify_all();
                    return;
                }
                let job = st.pending.remove(0).ok();
                drop(st);
                let Some(job) = job else { continue };
                if let Err(err) = this.wait_deps(&job) {
                    job.end(Err(err), 0, 0);
                    continue;
                }
                // The client's engine time: the job holds the channel from
                // its start to its end, stalls on faults included, as a
                // hardware context holds its engine.
                let started = this.vm.engine_time.start();
                exec.cur = Some(Cursor::new(job, started));
            }
            let Some(cur) = exec.cur.as_mut() else {
                continue;
            };
            let mut run = Run { chan: &this, cur };
            let result = match run.step(&mut exec.room, slice) {
                Ok(Step::Parked) => return,
                Ok(Step::Yield) => {
                    // Behind what is queued on this CPU.
                    this.faults.requeue(this.clone());
                    return;
                }
                Ok(Step::Ended) => Ok(()),
                Err(err) => Err(err),
            };
            let Some(cur) = exec.cur.take() else {
                continue;
            };
            this.stalled_on.store(0, Relaxed);
            this.vm.engine_time.end(cur.started);
            cur.job.end(result, cur.completed, cur.value);
            let mut st = this.state.lock();
            match result {
                Ok(()) => st.completed += 1,
                Err(err) => {
                    st.error.get_or_insert(ChannelError { err, fault: None });
                    this.failed.store(true, Relaxed);
                }
            }
            drop(st);
            this.faults.event();
        }
    }
}

impl<V: GpuVm> Restartable for Channel<V> {
    fn restart(self: Arc<Self>, queue: &Queue) {
        // `Err`: queued already; that run looks at the stall.
        let _ = queue.enqueue(self);
    }
}

impl<V: GpuVm> Channel<V> {
    /// A channel of `engine` on `vm`, whose faults name `asid`.
    pub(crate) fn new(
        engine: &Engine,
        vm: Arc<MirrorVm<V>>,
        asid: u64,
        timeout: Delta,
    ) -> Result<Arc<Self>> {
        let state = ChanState {
            pending: KVec::new(),
            running: false,
            submitted: 0,
            completed: 0,
            error: None,
        };
        Arc::pin_init(
            pin_init!(Self {
                id: engine.next_chid.fetch_add(1, Relaxed),
                asid,
                vm,
                faults: engine.faults.clone(),
                timeout,
                state <- new_mutex!(state, "Channel::state"),
                failed: Atomic::new(false),
                stalled_on: Atomic::new(0),
                next_tag: Atomic::new(1),
                idle <- new_condvar!("Channel::idle"),
                exec <- new_mutex!(
                    Exec {
                        room: Room::new(),
                        cur: None,
                    },
                    "Channel::exec"
                ),
                work <- new_work!("Channel::work"),
            }),
            GFP_KERNEL,
        )
    }

    /// Waits until every in-fence of `job` signaled; `ECANCELED` if the
    /// channel failed first.
    fn wait_deps(&self, job: &Job) -> Result {
        for fence in &job.deps {
            loop {
                if self.failed.load(Relaxed) {
                    return Err(ECANCELED);
                }
                // Interruptible, so a long wait is no hung task: a worker
                // gets no signals.
                match fence.wait_timeout(true, msecs_to_jiffies(DEP_POLL_MS)) {
                    Ok(true) => break,
                    Ok(false) => {}
                    // Only from a fence's own wait op: look again later.
                    Err(_) => fsleep(Delta::from_millis(DEP_POLL_MS.into())),
                }
            }
        }
        Ok(())
    }

    /// Queues a job of `cmds` then `fence`, to start once every fence of
    /// `deps` signaled, and starts the channel on `engine` if it is idle.
    pub(crate) fn submit(
        self: &Arc<Self>,
        engine: &Engine,
        deps: KVec<ARef<DmaFence>>,
        cmds: KVec<uapi::drm_nsvm_cmd>,
        fence: Option<(usize, u64)>,
        dst: Option<PinnedWrite>,
    ) -> Result<Arc<Job>> {
        if cmds.iter().any(|c| c.op == uapi::DRM_NSVM_OP_READ) && dst.is_none() {
            return Err(EINVAL);
        }
        let job = Arc::pin_init(
            pin_init!(Job {
                deps,
                cmds,
                fence,
                dst,
                seqno: Atomic::new(0),
                state <- new_mutex!(
                    JobState {
                        done: false,
                        result: Ok(()),
                        completed: 0,
                        value: 0,
                    },
                    "Job::state"
                ),
                cond <- new_condvar!("Job::cond"),
            }),
            GFP_KERNEL,
        )?;
        // The device is being removed: its channels were failed, or will
        // be, after this (see `DeviceData::unplug`).
        if self.faults.is_shut_down() {
            return Err(ENODEV);
        }
        let mut st = self.state.lock();
        if st.error.is_some() {
            return Err(ECANCELED);
        }
        if st.pending.len() >= MAX_PENDING {
            return Err(EAGAIN);
        }
        st.pending.push(job.clone(), GFP_KERNEL)?;
        st.submitted += 1;
        // Under the lock: concurrent submitters get their own numbers.
        job.seqno.store(st.submitted, Relaxed);
        if !st.running {
            st.running = true;
            // Not queued while `running` was clear, so this cannot fail.
            let _ = engine.queue.enqueue(self.clone());
        }
        Ok(job)
    }
}

impl<V: GpuVm> GpuChannel for Channel<V> {
    type Job = Job;

    fn id(&self) -> u64 {
        self.id
    }

    fn fail(&self, why: ChannelError) {
        let mut st = self.state.lock();
        if st.error.is_none() {
            st.error = Some(why);
        }
        self.failed.store(true, Relaxed);
        drop(st);
        // A parked job is restarted and sees it; waiters on fences too.
        self.faults.kick();
        self.faults.event();
    }

    fn cancel(&self, tag: u64, why: ChannelError) {
        if self.stalled_on.load(Relaxed) == tag {
            self.fail(why);
        }
    }

    fn status(&self) -> ChannelStatus {
        let st = self.state.lock();
        ChannelStatus {
            submitted: st.submitted,
            completed: st.completed,
            error: st.error,
        }
    }

    fn wait_idle(&self) {
        let mut st = self.state.lock();
        while st.running {
            self.idle.wait(&mut st);
        }
    }
}

/// What a channel's worker runs its jobs' commands in: made for the first
/// command it runs and kept, grown where a command needs more, for the
/// commands and jobs after it until the channel goes idle.
struct Room {
    /// Room for a batch of faults: [`FAULT_BATCH`] at least.
    queue: KVec<Fault>,
    /// The command's scratch memory (see [`scratch_len`]).
    scratch: KVVec<u8>,
}

impl Room {
    fn new() -> Self {
        Self {
            queue: KVec::new(),
            scratch: KVVec::new(),
        }
    }

    /// Makes room for `cmd`: the fault queue, and its scratch memory (for
    /// FILL, the pattern from phase 0).
    fn prepare(&mut self, cmd: &uapi::drm_nsvm_cmd) -> Result {
        if self.queue.capacity() < FAULT_BATCH {
            self.queue = KVec::with_capacity(FAULT_BATCH, GFP_KERNEL)?;
        }
        self.scratch.clear();
        self.scratch.resize(scratch_len(cmd), 0, GFP_KERNEL)?;
        if cmd.op == uapi::DRM_NSVM_OP_FILL {
            let pattern = cmd.value.to_le_bytes();
            for word in self.scratch.chunks_exact_mut(8) {
                word.copy_from_slice(&pattern);
            }
        }
        Ok(())
    }
}

/// What a channel's worker keeps from one run to the next, under
/// [`Channel::exec`].
struct Exec {
    /// Kept while the channel has work.
    room: Room,
    /// The job that started and has not ended: stalled, or out of its time
    /// slice.
    cur: Option<Cursor>,
}

/// A job that started, and where it is.
struct Cursor {
    job: Arc<Job>,
    /// Its start, for the client's engine time.
    started: u64,
    /// The command it runs; the job's fence once past the last.
    cmd: usize,
    /// Whether the room was made for that command ([`Room::prepare`]).
    prepared: bool,
    /// Bytes of the command done.
    done: usize,
    /// Where each range of the command was probed to (see [`Run::probe`]).
    probed: [usize; 2],
    /// When the job last made progress: a command (or part of one) done,
    /// or a fault of it served.
    progress: Instant<Monotonic>,
    /// Commands completed.
    completed: usize,
    /// The old value of the last atomic.
    value: u64,
    /// The replay generation the job stalled on, while it is stalled.
    stall: Option<u64>,
}

impl Cursor {
    fn new(job: Arc<Job>, started: u64) -> Self {
        Self {
            job,
            started,
            cmd: 0,
            prepared: false,
            done: 0,
            probed: [0; 2],
            progress: Instant::now(),
            completed: 0,
            value: 0,
            stall: None,
        }
    }
}

/// Where a run of a job stopped.
enum Step {
    /// Its commands and fence are done.
    Ended,
    /// Stalled and parked with the fault unit: a replay resumes it.
    Parked,
    /// Its time slice is over: it goes on behind what is queued.
    Yield,
}

/// Where a command's run stopped, short of an error.
enum Stop {
    /// Done.
    Done,
    /// Missed in the GPU page table.
    Miss(Fault),
    /// Out of its time slice.
    Yield,
}

/// A job running on its channel's worker, from where its cursor is.
struct Run<'a, V: GpuVm> {
    chan: &'a Arc<Channel<V>>,
    cur: &'a mut Cursor,
}

impl<'a, V: GpuVm> Run<'a, V> {
    /// Runs the job on, in `room`, until it ends, parks on a stall or uses
    /// its time `slice`.
    fn step(&mut self, room: &mut Room, slice: Slice) -> Result<Step> {
        let n = self.cur.job.cmds.len();
        loop {
            if let Some(seen) = self.cur.stall {
                if !self.resume(seen)? {
                    return Ok(Step::Parked);
                }
            }
            let cmd = match self.cur.job.fence {
                _ if self.cur.cmd < n => self.cur.job.cmds[self.cur.cmd],
                // The fence is a GPU write like any other: FILL's 8 bytes.
                Some((addr, value)) if self.cur.cmd == n => uapi::drm_nsvm_cmd {
                    op: uapi::DRM_NSVM_OP_FILL,
                    dst: addr as u64,
                    len: 8,
                    value,
                    ..Default::default()
                },
                _ => return Ok(Step::Ended),
            };
            if !self.cur.prepared {
                if slice.is_over() {
                    return Ok(Step::Yield);
                }
                room.prepare(&cmd)?;
                self.cur.prepared = true;
                self.cur.done = 0;
                self.cur.probed = [0; 2];
            }
            match self.command(&cmd, room, slice)? {
                Stop::Done => {
                    if self.cur.cmd < n {
                        self.cur.completed += 1;
                        self.cur.progress = Instant::now();
                    }
                    self.cur.cmd += 1;
                    self.cur.prepared = false;
                }
                Stop::Miss(_) => {}
                Stop::Yield => return Ok(Step::Yield),
            }
        }
    }

    /// Whether the stall on replay generation `seen` is over; `false` once
    /// the job is parked on it. `ECANCELED` if the channel failed,
    /// `ETIMEDOUT` once the job made no progress for the channel's timeout.
    fn resume(&mut self, seen: u64) -> Result<bool> {
        let chan = self.chan;
        self.check_cancel()?;
        let left = self.time_left()?;
        match chan
            .faults
            .park(chan.clone(), seen, left, || chan.failed.load(Relaxed))?
        {
            Stall::Parked => Ok(false),
            Stall::Stopped => Err(ECANCELED),
            Stall::Replayed => {
                self.cur.stall = None;
                chan.stalled_on.store(0, Relaxed);
                Ok(true)
            }
        }
    }

    /// Runs `cmd` (its room made) on from where it is, in `room`: probes,
    /// executes, and on misses raises them and stalls ([`Stop::Miss`], with
    /// the cursor's stall set).
    fn command(&mut self, cmd: &uapi::drm_nsvm_cmd, room: &mut Room, slice: Slice) -> Result<Stop> {
        let Room { queue, scratch } = room;
        let before = self.cur.probed;
        let mut probed = before;
        let probe = self.probe(cmd, self.cur.done, &mut probed, queue, slice);
        self.cur.probed = probed;
        // The probe only moves on: past a first miss that a replay
        // mapped, a fault of the command served. A command with many
        // faults probes them all before it writes a page.
        if probed.iter().zip(before).any(|(&now, then)| now > then) {
            self.cur.progress = Instant::now();
        }
        if !probe? {
            return Ok(Stop::Yield);
        }
        if queue.is_empty() {
            let mut done = self.cur.done;
            let stop = self.run_from(cmd, &mut done, scratch, slice);
            if done > self.cur.done {
                self.cur.progress = Instant::now();
            }
            self.cur.done = done;
            match stop? {
                Stop::Miss(miss) => queue.push(miss, GFP_KERNEL)?,
                stop => return Ok(stop),
            }
        }
        let miss = queue[0];
        self.cur.stall = Some(self.raise(queue));
        Ok(Stop::Miss(miss))
    }

    /// `ETIMEDOUT` once the job made no progress for the channel's timeout;
    /// else how long it has left.
    fn time_left(&self) -> Result<Delta> {
        let idle = self.cur.progress.elapsed();
        if idle > self.chan.timeout {
            return Err(ETIMEDOUT);
        }
        Ok(self.chan.timeout - idle)
    }

    /// Writes the faults in `queue` to the fault buffer; returns the replay
    /// generation to stall on.
    fn raise(&self, queue: &KVec<Fault>) -> u64 {
        let chan = self.chan;
        let raised = Instant::now();
        let tag = chan.next_tag.fetch_add(1, Relaxed);
        chan.stalled_on.store(tag, Relaxed);
        chan.faults.raise(queue.iter().map(|&fault| FaultEntry {
            asid: chan.asid,
            chid: chan.id,
            tag,
            fault,
            raised,
        }))
    }

    /// Touches every page `cmd` still has to use (from byte `done` on) and
    /// queues the misses, at most [`FAULT_BATCH`], one per
    /// [`FAULT_GRANULE`] (the GPU's TLB reports a block once).
    ///
    /// `probed[i]` is where range `i`'s previous probe found its first
    /// miss: every page before it was mapped then, so the probe goes on from
    /// there. A page invalidated since is a miss of the execution, which
    /// reports it like any other; the probe stays linear in the command's
    /// length.
    ///
    /// `false` if the time `slice` ended before the probe
    /// found a miss: `probed` then says how far it got.
    fn probe(
        &self,
        cmd: &uapi::drm_nsvm_cmd,
        done: usize,
        probed: &mut [usize; 2],
        queue: &mut KVec<Fault>,
        slice: Slice,
    ) -> Result<bool> {
        queue.clear();
        let mut vm = self.chan.vm.vm.lock();
        let mut looked = 0;
        let atomic = is_atomic(cmd);
        for (i, (start, len, write)) in ranges(cmd).into_iter().enumerate() {
            let from = done.max(probed[i]);
            if len <= from {
                continue;
            }
            let mut first_miss = None;
            let mut va = (start + from) & !(PAGE_SIZE_4K - 1);
            while va < start + len && queue.len() < FAULT_BATCH {
                // A 1 GiB command is 2^18 lookups: the VM lock is let go
                // every PROBE_RUN of them, for invalidations (the OOM
                // reaper's may not wait) and for a cancel.
                looked += 1;
                if looked % PROBE_RUN == 0 {
                    drop(vm);
                    self.check_cancel()?;
                    if queue.is_empty() && slice.is_over() {
                        // Every page before `va` is mapped.
                        probed[i] = va.saturating_sub(start);
                        return Ok(false);
                    }
                    vm = self.chan.vm.vm.lock();
                }
                let mut next = va.checked_add(PAGE_SIZE_4K);
                if !vm.lookup(va).is_some_and(|p| allows(&p, write, atomic)) {
                    first_miss.get_or_insert(va);
                    // The queue has room for a whole batch.
                    queue
                        .push_within_capacity(Fault {
                            addr: va,
                            write,
                            atomic,
                        })
                        .map_err(|_| ENOMEM)?;
                    next = (va | (FAULT_GRANULE - 1)).checked_add(1);
                }
                // The last page of the address space has no next one.
                va = match next {
                    Some(next) => next,
                    None => break,
                };
            }
            // Offsets in the command: `start + len` does not wrap.
            probed[i] = first_miss
                .unwrap_or(va.min(start + len))
                .saturating_sub(start);
        }
        Ok(true)
    }

    /// Runs `f` on the page the GPU maps at `va`, with the offset of `va` in
    /// it; `Ok(None)` on a miss. `vm` is the VM lock's guard.
    ///
    /// The page `f` gets stays allocated for the call: a system page is in
    /// the GPU page table, and the invalidation callback takes the VM lock
    /// (which the caller holds while `vm` is borrowed) before the CPU may
    /// unmap, and so free, it; a device page's backing page lives as long
    /// as the device memory, which the mirror holds. Others (the process,
    /// another mirror) may access it meanwhile: `f` uses [`access`].
    fn access<R>(
        &self,
        vm: &V,
        va: usize,
        write: bool,
        atomic: bool,
        f: impl FnOnce(NonNull<bindings::page>, usize) -> Result<R>,
    ) -> Result<Option<R>> {
        let Some(pte) = vm.lookup(va).filter(|p| allows(p, write, atomic)) else {
            return Ok(None);
        };
        let page = match pte.addr {
            PteAddr::System(page) => page.as_ptr(),
            // Device pages are mapped only once their chunk is populated.
            PteAddr::Vram(index) => {
                let page = self.chan.vm.vram.memory().page(index).ok_or(EINVAL)?;
                NonNull::new(page.as_ptr()).ok_or(EINVAL)?
            }
        };
        f(page, va % PAGE_SIZE_4K).map(Some)
    }

    /// GPU-reads `buf.len()` bytes at `va`, within one page; `false` on a
    /// miss.
    fn read(&self, vm: &V, va: usize, buf: &mut [u8]) -> Result<bool> {
        // SAFETY: `access()` hands out a page allocated for the call.
        let r = self.access(vm, va, false, false, |p, off| unsafe {
            access::read(p, off, buf)
        })?;
        Ok(r.is_some())
    }

    /// GPU-reads `buf.len()` bytes at `va`, within one page, through a
    /// writable mapping (the read of a read-modify-write); `false` on a miss.
    fn read_for_write(&self, vm: &V, va: usize, buf: &mut [u8]) -> Result<bool> {
        // SAFETY: As for `read()`.
        let r = self.access(vm, va, true, false, |p, off| unsafe {
            access::read(p, off, buf)
        })?;
        Ok(r.is_some())
    }

    /// GPU-writes `buf` at `va`, within one page; `false` on a miss.
    fn write(&self, vm: &V, va: usize, buf: &[u8]) -> Result<bool> {
        // SAFETY: `access()` hands out a page allocated for the call, which
        // the GPU page table maps writable to this job.
        let r = self.access(vm, va, true, false, |p, off| unsafe {
            access::write(p, off, buf)
        })?;
        Ok(r.is_some())
    }

    /// `ECANCELED` once the channel failed: checked before every hold of
    /// the VM lock, so a cancel takes effect within one lock run (of
    /// [`LOCK_RUN`] pages, or [`PROBE_RUN`] lookups), not one command.
    fn check_cancel(&self) -> Result {
        if self.chan.failed.load(Relaxed) {
            return Err(ECANCELED);
        }
        Ok(())
    }

    /// Runs `step` from byte `*done` to `len`, [`LOCK_RUN`] steps per hold
    /// of the VM lock, until the `slice` is over. Each step gets the lock's guard
    /// and the offset it starts at, and returns the bytes it did or the
    /// fault it missed on, which ends the run with `*done` at the missed
    /// step.
    fn in_lock_runs(
        &self,
        len: usize,
        done: &mut usize,
        slice: Slice,
        mut step: impl FnMut(&V, usize) -> Result<core::result::Result<usize, Fault>>,
    ) -> Result<Stop> {
        while *done < len {
            self.check_cancel()?;
            if slice.is_over() {
                return Ok(Stop::Yield);
            }
            let vm = self.chan.vm.vm.lock();
            for _ in 0..LOCK_RUN {
                if *done == len {
                    break;
                }
                match step(&vm, *done)? {
                    Ok(n) => *done += n,
                    Err(miss) => return Ok(Stop::Miss(miss)),
                }
            }
        }
        Ok(Stop::Done)
    }

    /// Executes `cmd` from byte `*done` on, until the `slice` is over; returns
    /// where it stopped, with `*done` at the first byte not done.
    fn run_from(
        &mut self,
        cmd: &uapi::drm_nsvm_cmd,
        done: &mut usize,
        buf: &mut KVVec<u8>,
        slice: Slice,
    ) -> Result<Stop> {
        let len = cmd.len as usize;
        let (src, dst) = (cmd.src as usize, cmd.dst as usize);
        let miss = |addr, write| Fault {
            addr,
            write,
            atomic: false,
        };
        match cmd.op {
            uapi::DRM_NSVM_OP_FILL => {
                // `buf` holds the pattern from phase 0: the bytes from
                // `done % 8` on continue it at `done`.
                return self.in_lock_runs(len, done, slice, |vm, at| {
                    let va = dst + at;
                    let n = chunk(va, len - at);
                    let phase = at % 8;
                    Ok(if self.write(vm, va, &buf[phase..phase + n])? {
                        Ok(n)
                    } else {
                        Err(miss(va, true))
                    })
                });
            }
            uapi::DRM_NSVM_OP_COPY => {
                return self.in_lock_runs(len, done, slice, |vm, at| {
                    let (s, d) = (src + at, dst + at);
                    let n = chunk(s, len - at).min(chunk(d, len - at));
                    if !self.read(vm, s, &mut buf[..n])? {
                        return Ok(Err(miss(s, false)));
                    }
                    Ok(if self.write(vm, d, &buf[..n])? {
                        Ok(n)
                    } else {
                        Err(miss(d, true))
                    })
                });
            }
            uapi::DRM_NSVM_OP_AXPY32 => {
                let a = cmd.value as u32;
                let (xs, ys) = buf.split_at_mut(PAGE_SIZE_4K);
                return self.in_lock_runs(len, done, slice, |vm, at| {
                    let (s, d) = (src + at, dst + at);
                    // Both aligned to 4 and `len` a multiple of 4: so is `n`.
                    let n = chunk(s, len - at).min(chunk(d, len - at));
                    if !self.read(vm, s, &mut xs[..n])? {
                        return Ok(Err(miss(s, false)));
                    }
                    // Read `y` only where it may be written: a miss leaves
                    // memory as it was.
                    if !self.read_for_write(vm, d, &mut ys[..n])? {
                        return Ok(Err(miss(d, true)));
                    }
                    axpy32(a, &xs[..n], &mut ys[..n]);
                    Ok(if self.write(vm, d, &ys[..n])? {
                        Ok(n)
                    } else {
                        Err(miss(d, true))
                    })
                });
            }
            uapi::DRM_NSVM_OP_READ => {
                let out = self.cur.job.dst.as_ref().ok_or(EINVAL)?;
                while *done < len {
                    self.check_cancel()?;
                    if slice.is_over() {
                        return Ok(Stop::Yield);
                    }
                    // Up to LOCK_RUN pages into `buf` under the lock, then
                    // out to the (pinned) destination without it.
                    let first = *done;
                    let mut missed = None;
                    let vm = self.chan.vm.vm.lock();
                    for _ in 0..LOCK_RUN {
                        if *done == len {
                            break;
                        }
                        let s = src + *done;
                        let n = chunk(s, len - *done);
                        let at = *done - first;
                        if !self.read(&vm, s, &mut buf[at..at + n])? {
                            missed = Some(s);
                            break;
                        }
                        *done += n;
                    }
                    drop(vm);
                    out.write(first, &buf[..*done - first])?;
                    if let Some(s) = missed {
                        return Ok(Stop::Miss(miss(s, false)));
                    }
                }
            }
            uapi::DRM_NSVM_OP_SEM_WAIT => loop {
                // A semaphore acquire: poll the u64 at `dst` through the
                // GPU page table until it reaches `value`. Waiting is no
                // progress: the channel's timeout ends a wait that never
                // ends.
                self.check_cancel()?;
                let mut sem = [0u8; 8];
                let vm = self.chan.vm.vm.lock();
                let hit = self.read(&vm, dst, &mut sem)?;
                drop(vm);
                if !hit {
                    return Ok(Stop::Miss(miss(dst, false)));
                }
                if u64::from_le_bytes(sem) >= cmd.value {
                    break;
                }
                self.time_left()?;
                fsleep(Delta::from_millis(SEM_POLL_MS));
            },
            uapi::DRM_NSVM_OP_ATOMIC_ADD32 | uapi::DRM_NSVM_OP_ATOMIC_ADD64 => {
                let wide = cmd.op == uapi::DRM_NSVM_OP_ATOMIC_ADD64;
                // One atomic instruction on the page: atomic against every
                // other access. The entry's `atomic` permission is the
                // range's policy on top: the page is device memory or
                // exclusive to the device (or the policy leaves atomicity
                // against the CPU to the system).
                let vm = self.chan.vm.vm.lock();
                // SAFETY: `access()` hands out a page allocated for the call,
                // which the GPU page table maps writable to this job.
                let old = self.access(&vm, dst, true, true, |p, off| unsafe {
                    access::atomic_add(p, off, cmd.value, wide)
                })?;
                drop(vm);
                let Some(old) = old else {
                    return Ok(Stop::Miss(Fault {
                        addr: dst,
                        write: true,
                        atomic: true,
                    }));
                };
                self.cur.value = old;
            }
            _ => return Err(EINVAL),
        }
        Ok(Stop::Done)
    }
}

/// The GPU address ranges `cmd` touches, and whether it writes them.
fn ranges(cmd: &uapi::drm_nsvm_cmd) -> [(usize, usize, bool); 2] {
    let len = cmd.len as usize;
    let (src, dst) = (cmd.src as usize, cmd.dst as usize);
    match cmd.op {
        uapi::DRM_NSVM_OP_FILL => [(dst, len, true), (0, 0, false)],
        uapi::DRM_NSVM_OP_COPY | uapi::DRM_NSVM_OP_AXPY32 => [(src, len, false), (dst, len, true)],
        // READ writes `dst` through the CPU, not the GPU.
        uapi::DRM_NSVM_OP_READ => [(src, len, false), (0, 0, false)],
        uapi::DRM_NSVM_OP_ATOMIC_ADD32 => [(dst, 4, true), (0, 0, false)],
        uapi::DRM_NSVM_OP_ATOMIC_ADD64 => [(dst, 8, true), (0, 0, false)],
        uapi::DRM_NSVM_OP_SEM_WAIT => [(dst, 8, false), (0, 0, false)],
        _ => [(0, 0, false), (0, 0, false)],
    }
}

/// Whether `cmd` is an atomic.
fn is_atomic(cmd: &uapi::drm_nsvm_cmd) -> bool {
    matches!(
        cmd.op,
        uapi::DRM_NSVM_OP_ATOMIC_ADD32 | uapi::DRM_NSVM_OP_ATOMIC_ADD64
    )
}

/// Whether entry `p` allows the access.
fn allows(p: &Pte, write: bool, atomic: bool) -> bool {
    (p.writable || !write) && (p.atomic || !atomic)
}

/// `y[i] += a * x[i]` on the little-endian u32 elements of `x` and `y`
/// (of one length, a multiple of 4).
fn axpy32(a: u32, x: &[u8], y: &mut [u8]) {
    let mut i = 0;
    while i + 4 <= x.len().min(y.len()) {
        let xv = u32::from_le_bytes([x[i], x[i + 1], x[i + 2], x[i + 3]]);
        let yv = u32::from_le_bytes([y[i], y[i + 1], y[i + 2], y[i + 3]]);
        y[i..i + 4].copy_from_slice(&yv.wrapping_add(a.wrapping_mul(xv)).to_le_bytes());
        i += 4;
    }
}

/// Bytes from `va` to the end of its page, at most `left`.
fn chunk(va: usize, left: usize) -> usize {
    (PAGE_SIZE_4K - va % PAGE_SIZE_4K).min(left)
}

/// The bytes of scratch memory `cmd` executes with: room for the largest
/// piece `Run::run_from()` takes at once, and no more, so that the small
/// commands of most jobs (a fence is an 8-byte FILL) clear and fill little
/// of it.
///
/// FILL: its pattern from phase 0 for a piece of up to a page, and 8
/// bytes more so that any phase has a whole piece after it, in whole
/// words. READ: a bounce for [`LOCK_RUN`] pages. COPY: a bounce for one
/// page. AXPY32: one for a page of each operand (split at a page). Only
/// FILL's 8 bytes and AXPY32's pages go past the command's length.
fn scratch_len(cmd: &uapi::drm_nsvm_cmd) -> usize {
    // At most `DRM_NSVM_CMD_MAX_LEN` once validated; saturated before.
    let len = usize::try_from(cmd.len).unwrap_or(usize::MAX);
    match cmd.op {
        uapi::DRM_NSVM_OP_FILL => (len.min(PAGE_SIZE_4K) + 8).next_multiple_of(8),
        uapi::DRM_NSVM_OP_READ => len.min(LOCK_RUN * PAGE_SIZE_4K),
        uapi::DRM_NSVM_OP_COPY => len.min(PAGE_SIZE_4K),
        uapi::DRM_NSVM_OP_AXPY32 => 2 * PAGE_SIZE_4K,
        uapi::DRM_NSVM_OP_SEM_WAIT => 8,
        _ => 0,
    }
}

/// Checks a command before anything runs: `EINVAL` for what the uapi
/// forbids, an operand included that does not lie below the user address
/// limit `limit`.
pub(crate) fn validate(cmd: &uapi::drm_nsvm_cmd, limit: usize) -> Result {
    if cmd.flags != 0 || cmd.len > u64::from(uapi::DRM_NSVM_CMD_MAX_LEN) {
        return Err(EINVAL);
    }
    let in_range = |addr: u64, len: u64| addr::range_end(addr, len, limit).is_ok();
    // Two operands below the limit that do not overlap.
    let disjoint = |cmd: &uapi::drm_nsvm_cmd| {
        in_range(cmd.src, cmd.len)
            && in_range(cmd.dst, cmd.len)
            // OVERFLOW: Both below the limit.
            && (cmd.src + cmd.len <= cmd.dst || cmd.dst + cmd.len <= cmd.src)
    };
    match cmd.op {
        uapi::DRM_NSVM_OP_FILL if in_range(cmd.dst, cmd.len) => Ok(()),
        uapi::DRM_NSVM_OP_READ if in_range(cmd.src, cmd.len) && in_range(cmd.dst, cmd.len) => {
            Ok(())
        }
        uapi::DRM_NSVM_OP_COPY if disjoint(cmd) => Ok(()),
        uapi::DRM_NSVM_OP_AXPY32 if disjoint(cmd) && (cmd.src | cmd.dst | cmd.len) % 4 == 0 => {
            Ok(())
        }
        uapi::DRM_NSVM_OP_ATOMIC_ADD32 if cmd.dst % 4 == 0 && in_range(cmd.dst, 4) => Ok(()),
        uapi::DRM_NSVM_OP_ATOMIC_ADD64 if cmd.dst % 8 == 0 && in_range(cmd.dst, 8) => Ok(()),
        uapi::DRM_NSVM_OP_SEM_WAIT
            if cmd.dst % 8 == 0 && in_range(cmd.dst, 8) && cmd.src == 0 && cmd.len == 0 =>
        {
            Ok(())
        }
        _ => Err(EINVAL),
    }
}

#[kunit_tests(nsvm_engine)]
mod tests {
    use super::*;

    fn cmd(op: u32, dst: u64, src: u64, len: u64) -> uapi::drm_nsvm_cmd {
        uapi::drm_nsvm_cmd {
            op,
            dst,
            src,
            len,
            ..Default::default()
        }
    }

    #[test]
    fn axpy32_wraps_per_element() {
        let x: [u8; 8] = [1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff];
        let mut y: [u8; 8] = [10, 0, 0, 0, 2, 0, 0, 0];
        axpy32(3, &x, &mut y);
        assert_eq!(u32::from_le_bytes([y[0], y[1], y[2], y[3]]), 13);
        // 2 + 3 * 0xffffffff wraps to 2 - 3.
        assert_eq!(u32::from_le_bytes([y[4], y[5], y[6], y[7]]), u32::MAX);
    }

    const LIMIT: usize = (1 << 47) - PAGE_SIZE_4K;

    #[test]
    fn validate_axpy32() {
        let op = uapi::DRM_NSVM_OP_AXPY32;
        let v = |c| validate(&c, LIMIT);
        assert!(v(cmd(op, 0x2000, 0x1000, 0x1000)).is_ok());
        assert!(v(cmd(op, 0x2000, 0x1000, 0)).is_ok());
        // Unaligned operands or length.
        assert_eq!(v(cmd(op, 0x2002, 0x1000, 8)), Err(EINVAL));
        assert_eq!(v(cmd(op, 0x2000, 0x1001, 8)), Err(EINVAL));
        assert_eq!(v(cmd(op, 0x2000, 0x1000, 6)), Err(EINVAL));
        // Overlap, in place included, and wrapping.
        assert_eq!(v(cmd(op, 0x1000, 0x1000, 8)), Err(EINVAL));
        assert_eq!(v(cmd(op, 0x1004, 0x1000, 8)), Err(EINVAL));
        assert_eq!(v(cmd(op, u64::MAX - 3, 0x1000, 8)), Err(EINVAL));
    }

    #[test]
    fn validate_at_the_limit() {
        let limit = LIMIT as u64;
        let page = PAGE_SIZE_4K as u64;
        let v = |c| validate(&c, LIMIT);
        let (fill, add32, add64) = (
            uapi::DRM_NSVM_OP_FILL,
            uapi::DRM_NSVM_OP_ATOMIC_ADD32,
            uapi::DRM_NSVM_OP_ATOMIC_ADD64,
        );
        assert!(v(cmd(fill, limit - page, 0, page)).is_ok());
        assert!(v(cmd(fill, limit, 0, 0)).is_ok());
        assert_eq!(v(cmd(fill, limit - page, 0, page + 1)), Err(EINVAL));
        assert_eq!(v(cmd(fill, 0xffff_ffff_ffe0_0000, 0, page)), Err(EINVAL));
        assert!(v(cmd(add32, limit - 4, 0, 0)).is_ok());
        assert_eq!(v(cmd(add32, limit, 0, 0)), Err(EINVAL));
        assert!(v(cmd(add64, limit - 8, 0, 0)).is_ok());
        assert_eq!(v(cmd(add64, limit, 0, 0)), Err(EINVAL));
        // Both operands of a copy, and a READ's destination.
        let (copy, read) = (uapi::DRM_NSVM_OP_COPY, uapi::DRM_NSVM_OP_READ);
        assert_eq!(v(cmd(copy, 0x1000, limit, 8)), Err(EINVAL));
        assert_eq!(v(cmd(copy, limit, 0x1000, 8)), Err(EINVAL));
        assert_eq!(v(cmd(read, limit, 0x1000, 8)), Err(EINVAL));
        assert_eq!(v(cmd(read, 0x1000, 1 << 63, 8)), Err(EINVAL));
    }

    /// Every piece execution takes of its scratch fits it, for lengths
    /// and addresses around a page and a lock run, as `Run::run_from()`
    /// cuts them.
    #[test]
    fn scratch_holds_every_piece() {
        const P: usize = PAGE_SIZE_4K;
        let runs = LOCK_RUN * P;
        let lens = [
            0,
            1,
            7,
            8,
            9,
            17,
            P - 1,
            P,
            P + 1,
            P + 9,
            runs - 1,
            runs + 3,
            1 << 21,
        ];
        for len in lens {
            for off in [0, 1, 3, 7, 8, 9, P - 9, P - 1] {
                let (dst, src) = (0x10_0000 + off, 0x20_0000 + (off * 3) % P);
                let at_most = |op: u32| scratch_len(&cmd(op, dst as u64, src as u64, len as u64));
                // FILL: the pattern from the phase of each piece on.
                let mut at = 0;
                while at < len {
                    let n = chunk(dst + at, len - at);
                    assert!(at % 8 + n <= at_most(uapi::DRM_NSVM_OP_FILL));
                    at += n;
                }
                assert_eq!(at_most(uapi::DRM_NSVM_OP_FILL) % 8, 0);
                // COPY: a piece within a page of both operands.
                let mut at = 0;
                while at < len {
                    let n = chunk(src + at, len - at).min(chunk(dst + at, len - at));
                    assert!(n <= at_most(uapi::DRM_NSVM_OP_COPY));
                    at += n;
                }
                // READ: up to LOCK_RUN pieces at once, from any start (a
                // miss ends a run early).
                for first in [0, off.min(len)] {
                    let (mut at, mut pieces) = (first, 0);
                    while at < len && pieces < LOCK_RUN {
                        at += chunk(src + at, len - at);
                        pieces += 1;
                    }
                    assert!(at - first <= at_most(uapi::DRM_NSVM_OP_READ));
                }
            }
        }
        // Lengths past the limit are refused before; no overflow here.
        let huge = cmd(uapi::DRM_NSVM_OP_FILL, 0, 0, u64::MAX);
        assert_eq!(scratch_len(&huge), P + 8);
    }

    #[test]
    fn validate_sem_wait() {
        let op = uapi::DRM_NSVM_OP_SEM_WAIT;
        let v = |c| validate(&c, LIMIT);
        assert!(v(cmd(op, 0x1000, 0, 0)).is_ok());
        assert!(v(cmd(op, LIMIT as u64 - 8, 0, 0)).is_ok());
        assert_eq!(v(cmd(op, 0x1004, 0, 0)), Err(EINVAL));
        assert_eq!(v(cmd(op, 0x1000, 0, 8)), Err(EINVAL));
        assert_eq!(v(cmd(op, 0x1000, 8, 0)), Err(EINVAL));
        assert_eq!(v(cmd(op, LIMIT as u64, 0, 0)), Err(EINVAL));
        assert_eq!(v(cmd(op, u64::MAX - 7, 0, 0)), Err(EINVAL));
    }
}
