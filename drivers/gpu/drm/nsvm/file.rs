// SPDX-License-Identifier: GPL-2.0

//! Per-open-file state and the ioctl handlers.
//!
//! Each open of an nsvm node gets an [`NsvmFile`]; `SVM_INIT` binds its
//! [`Mirror`] once, and the DRM core drops it with the file. The lifetime
//! rules are in `svm.rs`.

use kernel::{
    alloc::flags::__GFP_NOWARN,
    drm::{
        self,
        ioctl::RENDER_ALLOW,
        Registered, //
    },
    prelude::*,
    sync::SetOnce,
    uaccess::{
        UserPtr,
        UserSlice, //
    },
};

use crate::{
    addr,
    attr::Attr,
    driver::NsvmDevice,
    gpu::{
        engine::{
            self,
            Engine, //
        },
        soft::SoftVm,
        GpuVm,
        PAGE_SIZE_4K, //
    },
    ioctl::Ioctl,
    mm,
    mm::{
        migrate::Direction,
        PinnedWrite, //
    },
    param,
    svm::{
        Mirror,
        Stop,
        DEFAULT_WINDOW,
        MAX_WINDOW, //
    },
    uapi, //
};

/// The private data of an open nsvm DRM file.
#[pin_data]
pub(crate) struct NsvmFile {
    /// The SVM mirror, once `SVM_INIT` bound it.
    mirror: SetOnce<Mirror<SoftVm>>,
}

impl NsvmFile {
    /// The mirror; `ENOENT` before `SVM_INIT`.
    fn mirror(&self) -> Result<&Mirror<SoftVm>> {
        self.mirror.as_ref().ok_or(ENOENT)
    }
}

impl drm::file::DriverFile for NsvmFile {
    type Driver = crate::driver::NsvmDriver;

    fn open(_dev: &NsvmDevice) -> Result<Pin<KBox<Self>>> {
        KBox::try_pin_init(
            try_pin_init!(Self {
                mirror: SetOnce::new(),
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
        if file.mirror.as_ref().is_some() {
            return Err(EBUSY);
        }
        let task = kernel::current!();
        let mm = task.mm().ok_or(ESRCH)?;
        let mirror = Mirror::new(
            mm,
            SoftVm::new(),
            dev.vram.clone(),
            window,
            &dev.debugfs,
            dev.client_id(),
        )?;
        // A racing SVM_INIT may have won: this mirror is then dropped.
        if !file.mirror.populate(mirror) {
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
        let cmd_size = size_of::<uapi::drm_nsvm_cmd>();
        if arg.flags != 0
            || arg.cmd_size as usize != cmd_size
            || arg.num_cmds > uapi::DRM_NSVM_EXEC_MAX_CMDS
        {
            return Err(EINVAL);
        }
        arg.completed = 0;
        arg.fault_addr = 0;
        arg.fault_write = 0;
        let limit = caller_limit()?;
        let mirror = file.inner().get_ref().mirror()?;
        let mm = mirror.enter()?;

        let n = arg.num_cmds as usize;
        let user = UserSlice::new(UserPtr::from_addr(arg.cmds as usize), n * cmd_size);
        let (mut reader, mut writer) = user.reader_writer();
        let mut cmds = KVec::with_capacity(n, GFP_KERNEL)?;
        for _ in 0..n {
            let cmd: uapi::drm_nsvm_cmd = reader.read()?;
            engine::validate(&cmd, limit)?;
            cmds.push(cmd, GFP_KERNEL)?;
        }

        let mut ret = Ok(0);
        for cmd in cmds.iter_mut() {
            // A signal stops the list between commands, and the running
            // command within a lock run (the job is cancelled).
            if kernel::current!().signal_pending() {
                ret = Err(EINTR);
                break;
            }
            match run_cmd(&dev.engine, mirror, &mm, cmd) {
                Ok(()) => arg.completed += 1,
                Err(Stop::Unserved(u)) => {
                    arg.fault_addr = u.addr as u64;
                    arg.fault_write = u.write.into();
                    // Unservable accesses are one documented error; others
                    // (ENOMEM, EBUSY) pass through.
                    ret = Err(
                        if u.err == EPERM || u.err == EFAULT || u.err == EOPNOTSUPP {
                            EFAULT
                        } else {
                            u.err
                        },
                    );
                    break;
                }
                Err(Stop::Error(e)) => {
                    ret = Err(e);
                    break;
                }
            }
        }
        // Atomics return their old value in the command array.
        for cmd in &cmds {
            writer.write(cmd)?;
        }
        ret
    }
}

/// Runs one command on `engine`: a READ in pieces of at most
/// [`GpuVm::MAX_READ`] bytes, each with its destination pinned while it runs.
fn run_cmd(
    engine: &Engine,
    mirror: &Mirror<SoftVm>,
    mm: &kernel::mm::MmWithUser,
    cmd: &mut uapi::drm_nsvm_cmd,
) -> Result<(), Stop> {
    if cmd.op != uapi::DRM_NSVM_OP_READ {
        return mirror.run(engine, mm, cmd, None);
    }
    let len = cmd.len as usize;
    let mut off = 0;
    while off < len {
        if kernel::current!().signal_pending() {
            return Err(Stop::Error(EINTR));
        }
        let n = (len - off).min(SoftVm::MAX_READ);
        let mut piece = uapi::drm_nsvm_cmd {
            src: cmd.src + off as u64,
            len: n as u64,
            ..*cmd
        };
        // `EFAULT` for an unwritable destination, as the uapi says.
        let dst = PinnedWrite::new(cmd.dst as usize + off, n)?;
        mirror.run(engine, mm, &mut piece, Some(dst))?;
        off += n;
    }
    Ok(())
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
