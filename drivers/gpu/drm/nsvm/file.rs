// SPDX-License-Identifier: GPL-2.0

//! Per-open-file state and the ioctl handlers.
//!
//! Each open of an nsvm node gets an [`NsvmFile`]; `SVM_INIT` binds its
//! [`Mirror`] once, and the DRM core drops it with the file. The lifetime
//! rules are in `svm.rs`.

use kernel::{
    alloc::flags::__GFP_NOWARN,
    dma_fence::DmaFence,
    drm::{
        self,
        ioctl::RENDER_ALLOW,
        Registered, //
    },
    prelude::*,
    sync::{
        aref::ARef,
        Arc,
        SetOnce, //
    },
    time::Delta,
    uaccess::{
        UserPtr,
        UserSlice, //
    },
};

use crate::{
    addr,
    attr::Attr,
    driver::NsvmDevice,
    exec,
    gpu::{
        engine::{
            self,
            Channel,
            Engine, //
        },
        soft::SoftVm,
        ChannelError,
        GpuChannel,
        GpuJob,
        GpuVm,
        PAGE_SIZE_4K, //
    },
    handler::FaultHandler,
    ioctl::Ioctl,
    mm,
    mm::{
        migrate::Direction,
        PinnedWrite, //
    },
    param,
    svm::{
        Mirror,
        DEFAULT_WINDOW,
        MAX_WINDOW, //
    },
    uapi, //
};

/// A file's binding to an address space: its mirror, registered with the
/// device's fault handler.
///
/// Dropping it (the file's release) tears the asynchronous work down in
/// order: the file's queues stop and no job runs any more, the fault
/// handler forgets the mirror, and the last reference to the mirror (this
/// one, or the handler's while it finishes a batch) unmaps the GPU
/// entries, removes the notifier and drops the `mmgrab` (see [`Mirror`]).
struct Space {
    mirror: Arc<Mirror<SoftVm>>,
    handler: Arc<FaultHandler<SoftVm>>,
}

impl Drop for Space {
    fn drop(&mut self) {
        self.mirror.queues.stop_all();
        self.handler.unregister(&self.mirror);
        self.mirror.wait_for_handler();
    }
}

/// The private data of an open nsvm DRM file.
#[pin_data]
pub(crate) struct NsvmFile {
    /// The SVM binding, once `SVM_INIT` made it.
    space: SetOnce<Space>,
}

impl NsvmFile {
    /// The mirror; `ENOENT` before `SVM_INIT`.
    pub(crate) fn mirror(&self) -> Result<&Mirror<SoftVm>> {
        self.space.as_ref().map(|s| &*s.mirror).ok_or(ENOENT)
    }
}

impl drm::file::DriverFile for NsvmFile {
    type Driver = crate::driver::NsvmDriver;

    fn open(_dev: &NsvmDevice) -> Result<Pin<KBox<Self>>> {
        KBox::try_pin_init(
            try_pin_init!(Self {
                space: SetOnce::new(),
            }),
            GFP_KERNEL,
        )
    }
}

/// `DRM_IOCTL_NSVM_GET_PARAM`.
pub(crate) struct GetParam;

impl Ioctl for GetParam {
    type Arg = uapi::drm_nsvm_get_param;
    const NR: u32 = uapi::DRM_NSVM_GET_PARAM;
    const NAME: &'static CStr = c"NSVM_GET_PARAM";
    const FLAGS: u32 = RENDER_ALLOW;

    fn handle(
        dev: &NsvmDevice<Registered>,
        _file: &drm::File<NsvmFile>,
        arg: &mut Self::Arg,
    ) -> Result<u32> {
        if arg.pad != 0 {
            return Err(EINVAL);
        }
        let facts = param::Facts {
            index: dev.index,
            vram_size: dev.vram.size() as u64,
            va_bits: mm::user_va_bits(),
        };
        arg.value = param::query(&facts, arg.param)?;
        Ok(0)
    }
}

/// `DRM_IOCTL_NSVM_SVM_INIT`.
pub(crate) struct SvmInit;

impl Ioctl for SvmInit {
    type Arg = uapi::drm_nsvm_svm_init;
    const NR: u32 = uapi::DRM_NSVM_SVM_INIT;
    const NAME: &'static CStr = c"NSVM_SVM_INIT";
    const FLAGS: u32 = RENDER_ALLOW;

    fn handle(
        dev: &NsvmDevice<Registered>,
        file: &drm::File<NsvmFile>,
        arg: &mut Self::Arg,
    ) -> Result<u32> {
        let window = match arg.fault_window as usize {
            0 => DEFAULT_WINDOW,
            w if w.is_power_of_two() && (PAGE_SIZE_4K..=MAX_WINDOW).contains(&w) => w,
            _ => return Err(EINVAL),
        };
        if arg.flags != 0 || arg.pad != 0 {
            return Err(EINVAL);
        }
        let file = file.inner().get_ref();
        if file.space.as_ref().is_some() {
            return Err(EBUSY);
        }
        let task = kernel::current!();
        let mm = task.mm().ok_or(ESRCH)?;
        let mirror = Mirror::new(
            mm,
            SoftVm::new(),
            dev.vram.clone(),
            window,
            &dev.debugfs_dir()?,
            dev.client_id(),
        )?;
        let handler = dev.faults.handler().clone();
        // Registered before the file can run work; a racing SVM_INIT that
        // won drops this space, which unregisters it again.
        handler.register(mirror.clone())?;
        if !file.space.populate(Space { mirror, handler }) {
            return Err(EBUSY);
        }
        Ok(0)
    }
}

/// `DRM_IOCTL_NSVM_EXEC`.
pub(crate) struct Exec;

impl Ioctl for Exec {
    type Arg = uapi::drm_nsvm_exec;
    const NR: u32 = uapi::DRM_NSVM_EXEC;
    const NAME: &'static CStr = c"NSVM_EXEC";
    const FLAGS: u32 = RENDER_ALLOW;

    fn handle(
        dev: &NsvmDevice<Registered>,
        file: &drm::File<NsvmFile>,
        arg: &mut Self::Arg,
    ) -> Result<u32> {
        if arg.flags != 0
            || arg.cmd_size as usize != size_of::<uapi::drm_nsvm_cmd>()
            || arg.num_cmds > uapi::DRM_NSVM_EXEC_MAX_CMDS
        {
            return Err(EINVAL);
        }
        arg.completed = 0;
        arg.fault_addr = 0;
        arg.fault_write = 0;
        let limit = caller_limit()?;
        let mirror = file.inner().get_ref().mirror()?;
        mirror.check_owner()?;
        let cmds = read_cmds(arg.cmds, arg.num_cmds, limit)?;

        // A channel of its own, for the fault handler to find and fail.
        let chan = SoftVm::channel(&dev.engine, mirror.vm_arc(), mirror.asid(), dev.job_timeout)?;
        mirror.queues.add_exec(chan.clone())?;
        let mut done = KVec::new();
        let ret = run_cmds(&dev.engine, &chan, &cmds, &mut done, arg);
        // Whatever happened, the channel goes: no job of an EXEC outlives
        // it.
        mirror.queues.remove_exec(chan.id());
        // Atomics return their old value in the command array.
        let n = arg.num_cmds as usize;
        let mut writer = UserSlice::new(
            UserPtr::from_addr(arg.cmds as usize),
            n * size_of::<uapi::drm_nsvm_cmd>(),
        )
        .writer();
        for (i, cmd) in cmds.iter().enumerate() {
            writer.write(done.get(i).unwrap_or(cmd))?;
        }
        ret.map(|()| 0)
    }
}

/// Runs the commands of an EXEC one after the other on `chan`, their
/// results (atomics' old values) into `done`, and reports in `arg` how
/// many completed and the fault that stopped them, if one did.
fn run_cmds(
    engine: &Engine,
    chan: &Arc<Channel<SoftVm>>,
    cmds: &[uapi::drm_nsvm_cmd],
    done: &mut KVec<uapi::drm_nsvm_cmd>,
    arg: &mut uapi::drm_nsvm_exec,
) -> Result {
    done.reserve(cmds.len(), GFP_KERNEL)?;
    for cmd in cmds {
        // A signal stops the list between commands, and the running
        // command within a lock run (the channel is failed).
        if kernel::current!().signal_pending() {
            return Err(EINTR);
        }
        match run_cmd(engine, chan, cmd) {
            Ok(value) => {
                // Room was reserved above.
                let _ = done.push_within_capacity(uapi::drm_nsvm_cmd { value, ..*cmd });
                arg.completed += 1;
            }
            Err(e) => {
                if let Some(f) = chan.status().error.and_then(|e| e.fault) {
                    arg.fault_addr = f.addr as u64;
                    arg.fault_write = f.write.into();
                }
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Reads and checks `n` commands at `cmds`: `EINVAL` for more than
/// `DRM_NSVM_EXEC_MAX_CMDS` or one the uapi forbids, with an operand at or
/// above `limit` included.
fn read_cmds(cmds: u64, n: u32, limit: usize) -> Result<KVec<uapi::drm_nsvm_cmd>> {
    if n > uapi::DRM_NSVM_EXEC_MAX_CMDS {
        return Err(EINVAL);
    }
    let n = n as usize;
    let user = UserSlice::new(
        UserPtr::from_addr(cmds as usize),
        n * size_of::<uapi::drm_nsvm_cmd>(),
    );
    let mut reader = user.reader();
    let mut out = KVec::with_capacity(n, GFP_KERNEL)?;
    for _ in 0..n {
        let cmd: uapi::drm_nsvm_cmd = reader.read()?;
        engine::validate(&cmd, limit)?;
        out.push(cmd, GFP_KERNEL)?;
    }
    Ok(out)
}

/// Looks up the fences of the `n` in-fences (`struct drm_nsvm_sync` of
/// `size` bytes) at user address `syncs` in `file`'s sync objects; drops
/// those that already signaled.
fn read_syncs(
    file: &drm::File<NsvmFile>,
    syncs: u64,
    n: u32,
    size: u32,
) -> Result<KVec<ARef<DmaFence>>> {
    if n == 0 {
        return Ok(KVec::new());
    }
    if n > uapi::DRM_NSVM_SUBMIT_MAX_SYNCS || size as usize != size_of::<uapi::drm_nsvm_sync>() {
        return Err(EINVAL);
    }
    let n = n as usize;
    let user = UserSlice::new(UserPtr::from_addr(syncs as usize), n * size as usize);
    let mut reader = user.reader();
    let mut out = KVec::with_capacity(n, GFP_KERNEL)?;
    for _ in 0..n {
        let sync: uapi::drm_nsvm_sync = reader.read()?;
        if sync.flags != 0 {
            return Err(EINVAL);
        }
        let fence = file.syncobj_fence(sync.handle, sync.point)?;
        if !fence.is_signaled() {
            out.push(fence, GFP_KERNEL)?;
        }
    }
    Ok(out)
}

/// Runs one command of an EXEC on `chan` and waits for it: a READ in
/// pieces of at most [`GpuVm::MAX_READ`] bytes, each with its destination
/// pinned while it runs. Returns the old value of an atomic.
///
/// A signal fails the channel (`EINTR`) and waits, uninterruptibly, until
/// the job stopped: no job of an EXEC outlives it. A failed job gives the
/// channel's error (`EFAULT`, with the fault in the channel's status).
fn run_cmd(engine: &Engine, chan: &Arc<Channel<SoftVm>>, cmd: &uapi::drm_nsvm_cmd) -> Result<u64> {
    let run = |piece: uapi::drm_nsvm_cmd, dst| -> Result<u64> {
        let mut cmds = KVec::with_capacity(1, GFP_KERNEL)?;
        cmds.push(piece, GFP_KERNEL)?;
        let job = SoftVm::submit(engine, chan, KVec::new(), cmds, None, dst)?;
        if job.wait(true).is_err() {
            chan.fail(ChannelError {
                err: EINTR,
                fault: None,
            });
            job.wait(false)?;
        }
        match job.finish() {
            (Ok(()), _, value) => Ok(value),
            (Err(e), _, _) => Err(chan.status().error.map_or(e, |c| c.err)),
        }
    };
    if cmd.op != uapi::DRM_NSVM_OP_READ {
        return run(*cmd, None);
    }
    let len = cmd.len as usize;
    let mut off = 0;
    while off < len {
        if kernel::current!().signal_pending() {
            return Err(EINTR);
        }
        let n = (len - off).min(SoftVm::MAX_READ);
        let piece = uapi::drm_nsvm_cmd {
            src: cmd.src + off as u64,
            len: n as u64,
            ..*cmd
        };
        // `EFAULT` for an unwritable destination, as the uapi says.
        let dst = PinnedWrite::new(cmd.dst as usize + off, n)?;
        run(piece, Some(dst))?;
        off += n;
    }
    Ok(0)
}

/// `DRM_IOCTL_NSVM_SNAPSHOT`.
pub(crate) struct Snapshot;

impl Ioctl for Snapshot {
    type Arg = uapi::drm_nsvm_snapshot;
    const NR: u32 = uapi::DRM_NSVM_SNAPSHOT;
    const NAME: &'static CStr = c"NSVM_SNAPSHOT";
    const FLAGS: u32 = RENDER_ALLOW;

    fn handle(
        _dev: &NsvmDevice<Registered>,
        file: &drm::File<NsvmFile>,
        arg: &mut Self::Arg,
    ) -> Result<u32> {
        if arg.flags & !uapi::DRM_NSVM_SNAPSHOT_CPU != 0
            || arg.start % PAGE_SIZE_4K as u64 != 0
            || arg.npages > u64::from(uapi::DRM_NSVM_SNAPSHOT_MAX_PAGES)
        {
            return Err(EINVAL);
        }
        // OVERFLOW: At most 2^20 pages.
        addr::range_end(arg.start, arg.npages * PAGE_SIZE_4K as u64, caller_limit()?)?;
        let npages = arg.npages as usize;
        let mirror = file.inner().get_ref().mirror()?;
        let mm = mirror.enter()?;
        let mut states = KVVec::from_elem(0u8, npages, GFP_KERNEL | __GFP_NOWARN)?;
        if arg.flags & uapi::DRM_NSVM_SNAPSHOT_CPU != 0 {
            mirror.snapshot_cpu(&mm, arg.start as usize, &mut states)?;
        } else {
            mirror.snapshot(arg.start as usize, &mut states);
        }
        UserSlice::new(UserPtr::from_addr(arg.states as usize), npages)
            .writer()
            .write_slice(&states)?;
        arg.counters = mirror.vm().counters.to_uapi();
        Ok(0)
    }
}

/// The user address limit of the calling process (`TASK_SIZE`), which
/// every address an ioctl takes is checked against before anything else
/// is done with it (see `addr.rs`). A bound file's caller that is not its
/// owner fails with `EPERM` after this; the limit is then not the
/// mirror's, but nothing was done with it.
fn caller_limit() -> Result<usize> {
    let task = kernel::current!();
    let mm: &kernel::mm::Mm = task.mm().ok_or(ESRCH)?;
    Ok(mm::task_size(mm))
}

/// `DRM_IOCTL_NSVM_MIGRATE`.
pub(crate) struct MigrateIoctl;

impl Ioctl for MigrateIoctl {
    type Arg = uapi::drm_nsvm_migrate;
    const NR: u32 = uapi::DRM_NSVM_MIGRATE;
    const NAME: &'static CStr = c"NSVM_MIGRATE";
    const FLAGS: u32 = RENDER_ALLOW;

    fn handle(
        _dev: &NsvmDevice<Registered>,
        file: &drm::File<NsvmFile>,
        arg: &mut Self::Arg,
    ) -> Result<u32> {
        let end = addr::page_range(
            arg.start,
            arg.length,
            uapi::DRM_NSVM_MIGRATE_MAX_LEN,
            caller_limit()?,
        )?;
        let target = match arg.target {
            uapi::DRM_NSVM_MEM_SYSTEM => Direction::ToSystem,
            uapi::DRM_NSVM_MEM_DEVICE => Direction::ToDevice,
            _ => return Err(EINVAL),
        };
        if arg.flags != 0 || arg.pad != 0 {
            return Err(EINVAL);
        }
        arg.migrated = 0;
        arg.failed = 0;
        let mirror = file.inner().get_ref().mirror()?;
        let mm = mirror.enter()?;
        let moved = mirror.migrate(&mm, arg.start as usize, end, target)?;
        arg.migrated = moved.migrated;
        arg.failed = moved.failed;
        Ok(0)
    }
}

/// `DRM_IOCTL_NSVM_SET_ATTR`.
pub(crate) struct SetAttr;

impl Ioctl for SetAttr {
    type Arg = uapi::drm_nsvm_set_attr;
    const NR: u32 = uapi::DRM_NSVM_SET_ATTR;
    const NAME: &'static CStr = c"NSVM_SET_ATTR";
    const FLAGS: u32 = RENDER_ALLOW;

    fn handle(
        _dev: &NsvmDevice<Registered>,
        file: &drm::File<NsvmFile>,
        arg: &mut Self::Arg,
    ) -> Result<u32> {
        let end = addr::page_range(arg.start, arg.length, u64::MAX, caller_limit()?)?;
        let attr = Attr::from_uapi(arg)?;
        if arg.flags != 0 || arg.pad != 0 {
            return Err(EINVAL);
        }
        let mirror = file.inner().get_ref().mirror()?;
        let _mm = mirror.enter()?;
        mirror.set_attr(arg.start as usize, end, attr)?;
        Ok(0)
    }
}

/// `DRM_IOCTL_NSVM_QUEUE_CREATE`.
pub(crate) struct QueueCreate;

impl Ioctl for QueueCreate {
    type Arg = uapi::drm_nsvm_queue_create;
    const NR: u32 = uapi::DRM_NSVM_QUEUE_CREATE;
    const NAME: &'static CStr = c"NSVM_QUEUE_CREATE";
    const FLAGS: u32 = RENDER_ALLOW;

    fn handle(
        dev: &NsvmDevice<Registered>,
        file: &drm::File<NsvmFile>,
        arg: &mut Self::Arg,
    ) -> Result<u32> {
        if arg.flags != 0 || arg.pad != 0 || arg.timeout_ms > exec::MAX_TIMEOUT_MS {
            return Err(EINVAL);
        }
        let timeout = match arg.timeout_ms {
            0 => dev.job_timeout,
            ms => Delta::from_millis(i64::from(ms)),
        };
        let mirror = file.inner().get_ref().mirror()?;
        mirror.check_owner()?;
        let chan = SoftVm::channel(&dev.engine, mirror.vm_arc(), mirror.asid(), timeout)?;
        arg.queue_id = mirror.queues.create(chan)?;
        Ok(0)
    }
}

/// `DRM_IOCTL_NSVM_QUEUE_DESTROY`.
pub(crate) struct QueueDestroy;

impl Ioctl for QueueDestroy {
    type Arg = uapi::drm_nsvm_queue_destroy;
    const NR: u32 = uapi::DRM_NSVM_QUEUE_DESTROY;
    const NAME: &'static CStr = c"NSVM_QUEUE_DESTROY";
    const FLAGS: u32 = RENDER_ALLOW;

    fn handle(
        _dev: &NsvmDevice<Registered>,
        file: &drm::File<NsvmFile>,
        arg: &mut Self::Arg,
    ) -> Result<u32> {
        if arg.pad != 0 {
            return Err(EINVAL);
        }
        let mirror = file.inner().get_ref().mirror()?;
        mirror.check_owner()?;
        mirror.queues.destroy(arg.queue_id)?;
        Ok(0)
    }
}

/// `DRM_IOCTL_NSVM_SUBMIT`.
pub(crate) struct Submit;

impl Ioctl for Submit {
    type Arg = uapi::drm_nsvm_submit;
    const NR: u32 = uapi::DRM_NSVM_SUBMIT;
    const NAME: &'static CStr = c"NSVM_SUBMIT";
    const FLAGS: u32 = RENDER_ALLOW;
    /// uapi 0.5: no in-fences.
    const OLD_SIZES: &'static [usize] = &[core::mem::offset_of!(uapi::drm_nsvm_submit, syncs)];

    fn handle(
        dev: &NsvmDevice<Registered>,
        file: &drm::File<NsvmFile>,
        arg: &mut Self::Arg,
    ) -> Result<u32> {
        if arg.flags != 0
            || arg.pad != 0
            || arg.cmd_size as usize != size_of::<uapi::drm_nsvm_cmd>()
            || arg.num_cmds > uapi::DRM_NSVM_EXEC_MAX_CMDS
        {
            return Err(EINVAL);
        }
        arg.seqno = 0;
        let limit = caller_limit()?;
        let fence = match arg.fence_addr {
            0 => None,
            a if a % 8 == 0 => {
                addr::range_end(a, 8, limit)?;
                Some((a as usize, arg.fence_value))
            }
            _ => return Err(EINVAL),
        };
        let mirror = file.inner().get_ref().mirror()?;
        mirror.check_owner()?;
        let cmds = read_cmds(arg.cmds, arg.num_cmds, limit)?;
        // A READ fills a CPU buffer from the ioctl: there is none here.
        if cmds.iter().any(|c| c.op == uapi::DRM_NSVM_OP_READ) {
            return Err(EINVAL);
        }
        let chan = mirror.queues.get(arg.queue_id)?;
        let deps = read_syncs(file, arg.syncs, arg.num_syncs, arg.sync_size)?;
        arg.seqno = SoftVm::submit(&dev.engine, &chan, deps, cmds, fence, None)?.seqno();
        Ok(0)
    }
}

/// `DRM_IOCTL_NSVM_WAIT`.
pub(crate) struct Wait;

impl Ioctl for Wait {
    type Arg = uapi::drm_nsvm_wait;
    const NR: u32 = uapi::DRM_NSVM_WAIT;
    const NAME: &'static CStr = c"NSVM_WAIT";
    const FLAGS: u32 = RENDER_ALLOW;

    fn handle(
        dev: &NsvmDevice<Registered>,
        file: &drm::File<NsvmFile>,
        arg: &mut Self::Arg,
    ) -> Result<u32> {
        let seqno = arg.flags == uapi::DRM_NSVM_WAIT_SEQNO;
        if (arg.flags != 0 && !seqno)
            || arg.pad != 0
            || (seqno && (arg.queue_id == 0 || arg.addr != 0))
            || exec::compare(arg.op, 0, 0, 0).is_err()
        {
            return Err(EINVAL);
        }
        if !seqno {
            if arg.addr % 8 != 0 {
                return Err(EINVAL);
            }
            addr::range_end(arg.addr, 8, caller_limit()?)?;
        }
        let mirror = file.inner().get_ref().mirror()?;
        let queue = match arg.queue_id {
            0 => None,
            id => Some(mirror.queues.get(id)?),
        };
        let target = match &queue {
            Some(q) if seqno => exec::Target::Seqno(&**q),
            _ => {
                // The fence is read from the caller's memory: the mirror's.
                mirror.check_owner()?;
                exec::Target::Fence(arg.addr as usize)
            }
        };
        let timeout = (arg.timeout_ns >= 0).then(|| Delta::from_nanos(arg.timeout_ns));
        exec::wait::<SoftVm>(
            dev.faults.handler().faults(),
            target,
            queue.as_deref(),
            (arg.op, arg.value, arg.mask),
            timeout,
        )?;
        Ok(0)
    }
}

/// `DRM_IOCTL_NSVM_QUEUE_QUERY`.
pub(crate) struct QueueQuery;

impl Ioctl for QueueQuery {
    type Arg = uapi::drm_nsvm_queue_query;
    const NR: u32 = uapi::DRM_NSVM_QUEUE_QUERY;
    const NAME: &'static CStr = c"NSVM_QUEUE_QUERY";
    const FLAGS: u32 = RENDER_ALLOW;

    fn handle(
        _dev: &NsvmDevice<Registered>,
        file: &drm::File<NsvmFile>,
        arg: &mut Self::Arg,
    ) -> Result<u32> {
        if arg.pad != 0 {
            return Err(EINVAL);
        }
        // Any process holding the file may ask: nothing of the address
        // space is touched.
        let mirror = file.inner().get_ref().mirror()?;
        let st = mirror.queues.get(arg.queue_id)?.status();
        arg.submitted = st.submitted;
        arg.completed = st.completed;
        arg.error = st.error.map_or(0, |e| e.err.to_errno());
        let fault = st.error.and_then(|e| e.fault);
        arg.fault_addr = fault.map_or(0, |f| f.addr as u64);
        arg.fault_write = fault.is_some_and(|f| f.write).into();
        Ok(0)
    }
}
