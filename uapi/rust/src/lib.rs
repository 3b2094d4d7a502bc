// SPDX-License-Identifier: MIT

//! Userspace interface of nsvm, the shared-virtual-memory DRM driver.
//!
//! [`sys`] holds the uapi structs and constants, generated from
//! `uapi/drm/nsvm_drm.h`; [`Device`] is a safe handle on an nsvm DRM node.
//!
//! The README, compiled as a doctest:
#![doc = include_str!("../README.md")]

use std::{
    fs::{self, File, OpenOptions},
    io,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

/// The uapi, generated from `uapi/drm/nsvm_drm.h` by `scripts/gen-bindings.sh`.
#[allow(non_camel_case_types, non_upper_case_globals, missing_docs)]
pub mod sys {
    include!("bindings.rs");
}

pub mod syncobj;
pub use syncobj::sync;

/// The driver name DRM reports for nsvm nodes.
pub const DRIVER_NAME: &str = "nsvm";

const DRM_IOCTL_BASE: u32 = b'd' as u32;
/// First driver-private DRM ioctl number (`DRM_COMMAND_BASE`).
pub const DRM_COMMAND_BASE: u32 = 0x40;

/// Linux `_IOC()` for x86 and most architectures.
pub const fn ioc(dir: u32, ty: u32, nr: u32, size: usize) -> u64 {
    ((dir << 30) | ((size as u32) << 16) | (ty << 8) | nr) as u64
}
const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

/// `DRM_IOWR(nr, T)`.
pub const fn drm_iowr<T>(nr: u32) -> u64 {
    ioc(
        IOC_READ | IOC_WRITE,
        DRM_IOCTL_BASE,
        nr,
        std::mem::size_of::<T>(),
    )
}

/// `DRM_IOCTL_VERSION`.
pub const DRM_IOCTL_VERSION: u64 = drm_iowr::<sys::drm_version>(0x00);
/// `DRM_IOCTL_NSVM_GET_PARAM`.
pub const DRM_IOCTL_NSVM_GET_PARAM: u64 =
    drm_iowr::<sys::drm_nsvm_get_param>(DRM_COMMAND_BASE + sys::DRM_NSVM_GET_PARAM);
/// `DRM_IOCTL_NSVM_SVM_INIT`.
pub const DRM_IOCTL_NSVM_SVM_INIT: u64 =
    drm_iowr::<sys::drm_nsvm_svm_init>(DRM_COMMAND_BASE + sys::DRM_NSVM_SVM_INIT);
/// `DRM_IOCTL_NSVM_EXEC`.
pub const DRM_IOCTL_NSVM_EXEC: u64 =
    drm_iowr::<sys::drm_nsvm_exec>(DRM_COMMAND_BASE + sys::DRM_NSVM_EXEC);
/// `DRM_IOCTL_NSVM_SNAPSHOT`.
pub const DRM_IOCTL_NSVM_SNAPSHOT: u64 =
    drm_iowr::<sys::drm_nsvm_snapshot>(DRM_COMMAND_BASE + sys::DRM_NSVM_SNAPSHOT);

/// `DRM_IOCTL_NSVM_MIGRATE`.
pub const DRM_IOCTL_NSVM_MIGRATE: u64 =
    drm_iowr::<sys::drm_nsvm_migrate>(DRM_COMMAND_BASE + sys::DRM_NSVM_MIGRATE);
/// `DRM_IOCTL_NSVM_SET_ATTR`.
pub const DRM_IOCTL_NSVM_SET_ATTR: u64 =
    drm_iowr::<sys::drm_nsvm_set_attr>(DRM_COMMAND_BASE + sys::DRM_NSVM_SET_ATTR);
/// `DRM_IOCTL_NSVM_QUEUE_CREATE`.
pub const DRM_IOCTL_NSVM_QUEUE_CREATE: u64 =
    drm_iowr::<sys::drm_nsvm_queue_create>(DRM_COMMAND_BASE + sys::DRM_NSVM_QUEUE_CREATE);
/// `DRM_IOCTL_NSVM_QUEUE_DESTROY`.
pub const DRM_IOCTL_NSVM_QUEUE_DESTROY: u64 =
    drm_iowr::<sys::drm_nsvm_queue_destroy>(DRM_COMMAND_BASE + sys::DRM_NSVM_QUEUE_DESTROY);
/// `DRM_IOCTL_NSVM_SUBMIT`.
pub const DRM_IOCTL_NSVM_SUBMIT: u64 =
    drm_iowr::<sys::drm_nsvm_submit>(DRM_COMMAND_BASE + sys::DRM_NSVM_SUBMIT);
/// `DRM_IOCTL_NSVM_WAIT`.
pub const DRM_IOCTL_NSVM_WAIT: u64 =
    drm_iowr::<sys::drm_nsvm_wait>(DRM_COMMAND_BASE + sys::DRM_NSVM_WAIT);
/// `DRM_IOCTL_NSVM_QUEUE_QUERY`.
pub const DRM_IOCTL_NSVM_QUEUE_QUERY: u64 =
    drm_iowr::<sys::drm_nsvm_queue_query>(DRM_COMMAND_BASE + sys::DRM_NSVM_QUEUE_QUERY);

/// Where memory lives (`enum drm_nsvm_mem`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mem {
    /// System memory.
    System,
    /// The device's memory.
    Device,
}

/// What a MIGRATE did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Moved {
    /// Pages moved.
    pub migrated: u64,
    /// Pages selected that could not move.
    pub failed: u64,
}

/// The policy of a range (`struct drm_nsvm_set_attr`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Attr {
    /// One of `DRM_NSVM_LOCATION_*`.
    pub preferred: u32,
    /// Migrate to `preferred` on GPU faults.
    pub migrate_on_fault: bool,
    /// One of `DRM_NSVM_ATOMIC_*`.
    pub atomic: u32,
}

/// The `size` field value of a uapi struct.
pub const fn size_of_u32<T>() -> u32 {
    std::mem::size_of::<T>() as u32
}

/// A GPU command (see `enum drm_nsvm_op` in the header).
pub type Cmd = sys::drm_nsvm_cmd;

impl sys::drm_nsvm_cmd {
    /// Fill `len` bytes at `dst` with the 8-byte pattern `value`.
    pub fn fill(dst: u64, len: u64, value: u64) -> Self {
        Self {
            op: sys::DRM_NSVM_OP_FILL,
            dst,
            len,
            value,
            ..Default::default()
        }
    }

    /// Wait on the GPU until the u64 at `addr` is at least `value` (a
    /// semaphore acquire).
    pub fn sem_wait(addr: u64, value: u64) -> Self {
        Self {
            op: sys::DRM_NSVM_OP_SEM_WAIT,
            dst: addr,
            value,
            ..Default::default()
        }
    }

    /// Copy `len` bytes from `src` to `dst`.
    pub fn copy(dst: u64, src: u64, len: u64) -> Self {
        Self {
            op: sys::DRM_NSVM_OP_COPY,
            dst,
            src,
            len,
            ..Default::default()
        }
    }

    /// GPU-read `len` bytes at `src` into the plain buffer `dst`.
    pub fn read(dst: u64, src: u64, len: u64) -> Self {
        Self {
            op: sys::DRM_NSVM_OP_READ,
            dst,
            src,
            len,
            ..Default::default()
        }
    }

    /// The vector operation `y = a * x + y` on the `len / 4` little-endian
    /// u32 elements at `y` and `x` (wrapping); uapi 0.4 on.
    pub fn axpy32(y: u64, a: u32, x: u64, len: u64) -> Self {
        Self {
            op: sys::DRM_NSVM_OP_AXPY32,
            dst: y,
            src: x,
            len,
            value: a.into(),
            ..Default::default()
        }
    }

    /// Atomically add `value` to the u32 at `dst`; the old value comes back
    /// in `value`.
    pub fn add32(dst: u64, value: u32) -> Self {
        Self {
            op: sys::DRM_NSVM_OP_ATOMIC_ADD32,
            dst,
            value: value.into(),
            ..Default::default()
        }
    }

    /// Atomically add `value` to the u64 at `dst`; the old value comes back
    /// in `value`.
    pub fn add64(dst: u64, value: u64) -> Self {
        Self {
            op: sys::DRM_NSVM_OP_ATOMIC_ADD64,
            dst,
            value,
            ..Default::default()
        }
    }
}

/// A command list: commands built up, then run in order by one or more
/// EXECs (at most `DRM_NSVM_EXEC_MAX_CMDS` each).
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use nsvm_uapi::{Cmd, CmdList, Device};
/// let dev = Device::open_render(0)?;
/// dev.svm_init(0)?;
/// let (x, mut y) = (vec![1u32; 1024], vec![2u32; 1024]);
/// let mut list = CmdList::new();
/// list.push(Cmd::axpy32(y.as_mut_ptr() as u64, 3, x.as_ptr() as u64, 4096));
/// list.submit(&dev)?;
/// assert!(y.iter().all(|&e| e == 5));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Default, Clone)]
pub struct CmdList {
    cmds: Vec<Cmd>,
}

impl CmdList {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `cmd`.
    pub fn push(&mut self, cmd: Cmd) -> &mut Self {
        self.cmds.push(cmd);
        self
    }

    /// The commands, with the old values of the atomics once submitted.
    pub fn cmds(&self) -> &[Cmd] {
        &self.cmds
    }

    /// Runs the commands on `dev`'s GPU, in order; on failure,
    /// [`ExecError::completed`] counts the commands of the whole list that
    /// completed.
    pub fn submit(&mut self, dev: &Device) -> std::result::Result<(), ExecError> {
        let mut completed = 0;
        for part in self.cmds.chunks_mut(sys::DRM_NSVM_EXEC_MAX_CMDS as usize) {
            dev.exec(part).map_err(|e| ExecError {
                completed: completed + e.completed,
                ..e
            })?;
            completed += part.len() as u32;
        }
        Ok(())
    }
}

/// A failed EXEC: the errno and, for an unserved GPU fault, where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecError {
    /// The errno.
    pub error: Error,
    /// Commands that completed.
    pub completed: u32,
    /// The address of an unserved GPU fault (`EFAULT`), else 0.
    pub fault_addr: u64,
    /// The unserved fault was a write.
    pub fault_write: bool,
}

impl std::fmt::Display for ExecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} after {} commands", self.error, self.completed)?;
        if self.fault_addr != 0 {
            let kind = if self.fault_write { "write" } else { "read" };
            write!(f, ", GPU {kind} fault at {:#x}", self.fault_addr)?;
        }
        Ok(())
    }
}

impl std::error::Error for ExecError {}

/// An error from an nsvm ioctl: the errno the kernel returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Error {
    /// The positive errno value.
    pub errno: i32,
}

impl Error {
    fn last() -> Self {
        Self {
            errno: io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO),
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (errno {})",
            io::Error::from_raw_os_error(self.errno),
            self.errno
        )
    }
}

impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Self {
            errno: e.raw_os_error().unwrap_or(libc::EIO),
        }
    }
}

/// Result of the nsvm API.
pub type Result<T> = std::result::Result<T, Error>;

/// What `DRM_IOCTL_VERSION` tells of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// Driver major, minor and patch level.
    pub number: (i32, i32, i32),
    /// Driver name (`nsvm`).
    pub name: String,
    /// Driver description.
    pub desc: String,
}

/// An open nsvm DRM node (card or render node).
#[derive(Debug)]
pub struct Device {
    file: File,
    path: PathBuf,
}

/// Issues `ioctl(fd, cmd, arg)`.
///
/// # Safety
///
/// `arg` must be what `cmd` expects: a valid pointer to its argument struct
/// (or any value, for commands the kernel rejects before reading it).
pub unsafe fn raw_ioctl(fd: &impl AsRawFd, cmd: u64, arg: *mut libc::c_void) -> Result<i32> {
    loop {
        // SAFETY: The caller upholds the contract of `cmd`.
        let ret = unsafe { libc::ioctl(fd.as_raw_fd(), cmd as _, arg) };
        if ret >= 0 {
            return Ok(ret);
        }
        let err = Error::last();
        if err.errno != libc::EINTR && err.errno != libc::EAGAIN {
            return Err(err);
        }
    }
}

impl Device {
    /// Opens a DRM node and checks that nsvm drives it (`ENODEV` if not).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        let dev = Self { file, path };
        if dev.version()?.name != DRIVER_NAME {
            return Err(Error {
                errno: libc::ENODEV,
            });
        }
        Ok(dev)
    }

    /// Wraps an already open nsvm file (dup'ed or received over a socket):
    /// the same DRM file, so the same SVM mirror.
    pub fn from_fd(fd: std::os::fd::OwnedFd) -> Result<Self> {
        let path =
            std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap_or_default();
        let dev = Self {
            file: File::from(fd),
            path,
        };
        if dev.version()?.name != DRIVER_NAME {
            return Err(Error {
                errno: libc::ENODEV,
            });
        }
        Ok(dev)
    }

    /// Opens the render node of the nsvm device with `DEVICE_INDEX` `index`.
    pub fn open_render(index: u32) -> Result<Self> {
        for path in nodes("renderD")? {
            if let Ok(dev) = Self::open(&path) {
                if dev.get_param(sys::DRM_NSVM_PARAM_DEVICE_INDEX)? == u64::from(index) {
                    return Ok(dev);
                }
            }
        }
        Err(Error {
            errno: libc::ENOENT,
        })
    }

    /// The node's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open file, for raw ioctls.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The file's DRM fdinfo (`/proc/self/fdinfo/<fd>`): its `drm-*` keys
    /// (Documentation/gpu/drm-usage-stats.rst) and their values, in order.
    pub fn fdinfo(&self) -> Result<Vec<(String, String)>> {
        let text = fs::read_to_string(format!("/proc/self/fdinfo/{}", self.file.as_raw_fd()))?;
        Ok(text
            .lines()
            .filter_map(|l| l.split_once(':'))
            .filter(|(k, _)| k.starts_with("drm-"))
            .map(|(k, v)| (k.to_string(), v.trim().to_string()))
            .collect())
    }

    /// `DRM_IOCTL_VERSION`.
    pub fn version(&self) -> Result<Version> {
        let mut name = [0u8; 64];
        let mut desc = [0u8; 256];
        let mut v = sys::drm_version {
            name_len: name.len() as _,
            name: name.as_mut_ptr().cast(),
            desc_len: desc.len() as _,
            desc: desc.as_mut_ptr().cast(),
            ..Default::default()
        };
        // SAFETY: `v` is a `drm_version` whose buffers outlive the call and
        // whose lengths are those of the buffers.
        unsafe { raw_ioctl(&self.file, DRM_IOCTL_VERSION, (&raw mut v).cast())? };
        let text = |buf: &[u8], len: usize| {
            String::from_utf8_lossy(&buf[..len.min(buf.len())]).into_owned()
        };
        Ok(Version {
            number: (v.version_major, v.version_minor, v.version_patchlevel),
            name: text(&name, v.name_len as usize),
            desc: text(&desc, v.desc_len as usize),
        })
    }

    /// `DRM_IOCTL_NSVM_GET_PARAM` with the argument as given, for tests that
    /// probe the kernel's checks; see [`Device::get_param`].
    pub fn get_param_raw(&self, arg: &mut sys::drm_nsvm_get_param) -> Result<()> {
        // SAFETY: `arg` is a valid `drm_nsvm_get_param`.
        unsafe {
            raw_ioctl(
                &self.file,
                DRM_IOCTL_NSVM_GET_PARAM,
                (arg as *mut sys::drm_nsvm_get_param).cast(),
            )?
        };
        Ok(())
    }

    /// The value of `param` (one of `sys::DRM_NSVM_PARAM_*`).
    pub fn get_param(&self, param: sys::drm_nsvm_param) -> Result<u64> {
        let mut arg = sys::drm_nsvm_get_param {
            size: std::mem::size_of::<sys::drm_nsvm_get_param>() as u32,
            param,
            ..Default::default()
        };
        self.get_param_raw(&mut arg)?;
        Ok(arg.value)
    }

    /// `DRM_IOCTL_NSVM_SVM_INIT` with the argument as given.
    pub fn svm_init_raw(&self, arg: &mut sys::drm_nsvm_svm_init) -> Result<()> {
        // SAFETY: `arg` is a valid `drm_nsvm_svm_init`.
        unsafe {
            raw_ioctl(
                &self.file,
                DRM_IOCTL_NSVM_SVM_INIT,
                (arg as *mut sys::drm_nsvm_svm_init).cast(),
            )?
        };
        Ok(())
    }

    /// Binds this file to the calling process's address space, with a fault
    /// window of `fault_window` bytes (0: the default, 2 MiB).
    pub fn svm_init(&self, fault_window: u64) -> Result<()> {
        let mut arg = sys::drm_nsvm_svm_init {
            size: size_of_u32::<sys::drm_nsvm_svm_init>(),
            fault_window,
            ..Default::default()
        };
        self.svm_init_raw(&mut arg)
    }

    /// `DRM_IOCTL_NSVM_EXEC` with the argument as given.
    pub fn exec_raw(&self, arg: &mut sys::drm_nsvm_exec) -> Result<()> {
        // SAFETY: `arg` is a valid `drm_nsvm_exec`; the kernel checks the
        // command pointer it holds.
        unsafe {
            raw_ioctl(
                &self.file,
                DRM_IOCTL_NSVM_EXEC,
                (arg as *mut sys::drm_nsvm_exec).cast(),
            )?
        };
        Ok(())
    }

    /// Runs `cmds` on the GPU; atomics return their old value in place.
    pub fn exec(&self, cmds: &mut [Cmd]) -> std::result::Result<(), ExecError> {
        let mut arg = sys::drm_nsvm_exec {
            size: size_of_u32::<sys::drm_nsvm_exec>(),
            num_cmds: cmds.len() as u32,
            cmds: cmds.as_mut_ptr() as u64,
            cmd_size: size_of_u32::<Cmd>(),
            ..Default::default()
        };
        self.exec_raw(&mut arg).map_err(|error| ExecError {
            error,
            completed: arg.completed,
            fault_addr: arg.fault_addr,
            fault_write: arg.fault_write != 0,
        })
    }

    /// Runs ioctl `nr` on `arg`.
    fn ioctl<T>(&self, nr: u64, arg: &mut T) -> Result<()> {
        // SAFETY: `arg` is a valid, exclusively borrowed uapi struct whose
        // size is the one `nr` encodes (the callers pair them); pointers in
        // it are checked by the kernel.
        unsafe { raw_ioctl(&self.file, nr, (arg as *mut T).cast())? };
        Ok(())
    }

    /// `DRM_IOCTL_NSVM_QUEUE_CREATE` with the argument as given.
    pub fn queue_create_raw(&self, arg: &mut sys::drm_nsvm_queue_create) -> Result<()> {
        self.ioctl(DRM_IOCTL_NSVM_QUEUE_CREATE, arg)
    }

    /// Creates an exec queue whose jobs may go `timeout_ms` without progress
    /// (0: the driver's default); returns its id.
    pub fn queue_create(&self, timeout_ms: u32) -> Result<u32> {
        let mut arg = sys::drm_nsvm_queue_create {
            size: size_of_u32::<sys::drm_nsvm_queue_create>(),
            timeout_ms,
            ..Default::default()
        };
        self.queue_create_raw(&mut arg)?;
        Ok(arg.queue_id)
    }

    /// `DRM_IOCTL_NSVM_QUEUE_DESTROY` with the argument as given.
    pub fn queue_destroy_raw(&self, arg: &mut sys::drm_nsvm_queue_destroy) -> Result<()> {
        self.ioctl(DRM_IOCTL_NSVM_QUEUE_DESTROY, arg)
    }

    /// Cancels the jobs of exec queue `queue` and frees it.
    pub fn queue_destroy(&self, queue: u32) -> Result<()> {
        let mut arg = sys::drm_nsvm_queue_destroy {
            size: size_of_u32::<sys::drm_nsvm_queue_destroy>(),
            queue_id: queue,
            ..Default::default()
        };
        self.queue_destroy_raw(&mut arg)
    }

    /// `DRM_IOCTL_NSVM_SUBMIT` with the argument as given.
    pub fn submit_raw(&self, arg: &mut sys::drm_nsvm_submit) -> Result<()> {
        self.ioctl(DRM_IOCTL_NSVM_SUBMIT, arg)
    }

    /// Queues `cmds` on exec queue `queue`, then the write of `fence`'s
    /// value at its address; returns the job's sequence number.
    pub fn submit(&self, queue: u32, cmds: &[Cmd], fence: Option<(u64, u64)>) -> Result<u64> {
        self.submit_after(queue, cmds, fence, &[])
    }

    /// `DRM_IOCTL_NSVM_WAIT` with the argument as given.
    pub fn wait_raw(&self, arg: &mut sys::drm_nsvm_wait) -> Result<()> {
        self.ioctl(DRM_IOCTL_NSVM_WAIT, arg)
    }

    /// Waits until the u64 at `addr` is at least `value`, for at most
    /// `timeout_ns` (negative: forever); a failure of `queue` (0: none)
    /// ends the wait with its error.
    pub fn wait_fence(&self, addr: u64, value: u64, queue: u32, timeout_ns: i64) -> Result<()> {
        let mut arg = sys::drm_nsvm_wait {
            size: size_of_u32::<sys::drm_nsvm_wait>(),
            addr,
            value,
            mask: u64::MAX,
            op: sys::DRM_NSVM_WAIT_GTE,
            queue_id: queue,
            timeout_ns,
            ..Default::default()
        };
        self.wait_raw(&mut arg)
    }

    /// Waits until exec queue `queue` completed job `seqno`, for at most
    /// `timeout_ns` (negative: forever); reads no memory.
    pub fn wait_seqno(&self, queue: u32, seqno: u64, timeout_ns: i64) -> Result<()> {
        let mut arg = sys::drm_nsvm_wait {
            size: size_of_u32::<sys::drm_nsvm_wait>(),
            flags: sys::DRM_NSVM_WAIT_SEQNO,
            value: seqno,
            mask: u64::MAX,
            op: sys::DRM_NSVM_WAIT_GTE,
            queue_id: queue,
            timeout_ns,
            ..Default::default()
        };
        self.wait_raw(&mut arg)
    }

    /// `DRM_IOCTL_NSVM_QUEUE_QUERY`: what exec queue `queue` has done and
    /// why it failed, if it did.
    pub fn queue_query(&self, queue: u32) -> Result<sys::drm_nsvm_queue_query> {
        let mut arg = sys::drm_nsvm_queue_query {
            size: size_of_u32::<sys::drm_nsvm_queue_query>(),
            queue_id: queue,
            ..Default::default()
        };
        self.ioctl(DRM_IOCTL_NSVM_QUEUE_QUERY, &mut arg)?;
        Ok(arg)
    }

    /// The GPU page-table state of `states.len()` pages from `start` (one
    /// `DRM_NSVM_PTE_*` byte each) and the file's counters.
    pub fn snapshot(&self, start: u64, states: &mut [u8]) -> Result<sys::drm_nsvm_counters> {
        let mut arg = sys::drm_nsvm_snapshot {
            size: size_of_u32::<sys::drm_nsvm_snapshot>(),
            start,
            npages: states.len() as u64,
            states: states.as_mut_ptr() as u64,
            ..Default::default()
        };
        // SAFETY: `arg` is a valid `drm_nsvm_snapshot` whose buffer holds
        // `npages` bytes.
        unsafe { raw_ioctl(&self.file, DRM_IOCTL_NSVM_SNAPSHOT, (&raw mut arg).cast())? };
        Ok(arg.counters)
    }

    /// The CPU-side state of `states.len()` pages from `start` (one
    /// `DRM_NSVM_PTE_*` byte each: present, writable, huge, in device
    /// memory).
    pub fn snapshot_cpu(&self, start: u64, states: &mut [u8]) -> Result<()> {
        let mut arg = sys::drm_nsvm_snapshot {
            size: size_of_u32::<sys::drm_nsvm_snapshot>(),
            flags: sys::DRM_NSVM_SNAPSHOT_CPU,
            start,
            npages: states.len() as u64,
            states: states.as_mut_ptr() as u64,
            ..Default::default()
        };
        // SAFETY: As for `snapshot()`.
        unsafe { raw_ioctl(&self.file, DRM_IOCTL_NSVM_SNAPSHOT, (&raw mut arg).cast())? };
        Ok(())
    }

    /// `DRM_IOCTL_NSVM_MIGRATE` with the argument as given.
    pub fn migrate_raw(&self, arg: &mut sys::drm_nsvm_migrate) -> Result<()> {
        // SAFETY: `arg` is a valid `drm_nsvm_migrate`.
        unsafe {
            raw_ioctl(
                &self.file,
                DRM_IOCTL_NSVM_MIGRATE,
                (arg as *mut sys::drm_nsvm_migrate).cast(),
            )?
        };
        Ok(())
    }

    /// Moves `[start, start + len)` to `target` (a prefetch).
    pub fn migrate(&self, start: u64, len: u64, target: Mem) -> Result<Moved> {
        let mut arg = sys::drm_nsvm_migrate {
            size: size_of_u32::<sys::drm_nsvm_migrate>(),
            start,
            length: len,
            target: match target {
                Mem::System => sys::DRM_NSVM_MEM_SYSTEM,
                Mem::Device => sys::DRM_NSVM_MEM_DEVICE,
            },
            ..Default::default()
        };
        self.migrate_raw(&mut arg)?;
        Ok(Moved {
            migrated: arg.migrated,
            failed: arg.failed,
        })
    }

    /// `DRM_IOCTL_NSVM_SET_ATTR` with the argument as given.
    pub fn set_attr_raw(&self, arg: &mut sys::drm_nsvm_set_attr) -> Result<()> {
        // SAFETY: `arg` is a valid `drm_nsvm_set_attr`.
        unsafe {
            raw_ioctl(
                &self.file,
                DRM_IOCTL_NSVM_SET_ATTR,
                (arg as *mut sys::drm_nsvm_set_attr).cast(),
            )?
        };
        Ok(())
    }

    /// Sets the policy of `[start, start + len)`.
    pub fn set_attr(&self, start: u64, len: u64, attr: Attr) -> Result<()> {
        let mut arg = sys::drm_nsvm_set_attr {
            size: size_of_u32::<sys::drm_nsvm_set_attr>(),
            start,
            length: len,
            preferred: attr.preferred,
            migrate_on_fault: attr.migrate_on_fault.into(),
            atomic: attr.atomic,
            ..Default::default()
        };
        self.set_attr_raw(&mut arg)
    }

    /// The file's SVM counters.
    pub fn counters(&self) -> Result<sys::drm_nsvm_counters> {
        self.snapshot(0, &mut [])
    }

    /// The uapi version of the running driver, as (major, minor).
    pub fn uapi_version(&self) -> Result<(u32, u32)> {
        let v = self.get_param(sys::DRM_NSVM_PARAM_UAPI_VERSION)?;
        Ok(((v >> 16) as u32, (v & 0xffff) as u32))
    }
}

/// The `/dev/dri` nodes whose name starts with `prefix` (`card`, `renderD`),
/// in name order.
pub fn nodes(prefix: &str) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = fs::read_dir("/dev/dri")?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .collect();
    out.sort_by_key(|p| {
        let name = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let digits: String = name.chars().filter(char::is_ascii_digit).collect();
        digits.parse::<u32>().unwrap_or(u32::MAX)
    });
    Ok(out)
}

/// Every nsvm render node, opened, in node order.
pub fn render_devices() -> Result<Vec<Device>> {
    Ok(nodes("renderD")?
        .into_iter()
        .filter_map(|p| Device::open(p).ok())
        .collect())
}

/// Name of a `DRM_NSVM_PARAM_*` value, for reports.
pub fn param_name(param: sys::drm_nsvm_param) -> &'static str {
    match param {
        sys::DRM_NSVM_PARAM_UAPI_VERSION => "uapi_version",
        sys::DRM_NSVM_PARAM_FEATURES => "features",
        sys::DRM_NSVM_PARAM_PAGE_SIZES => "page_sizes",
        sys::DRM_NSVM_PARAM_VA_BITS => "va_bits",
        sys::DRM_NSVM_PARAM_VRAM_SIZE => "vram_size",
        sys::DRM_NSVM_PARAM_DEVICE_INDEX => "device_index",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_c_macros() {
        // DRM_IOWR(0x40, struct drm_nsvm_get_param): size 24, read/write.
        assert_eq!(DRM_IOCTL_NSVM_GET_PARAM, 0xc018_6440);
        // DRM_IOCTL_VERSION: DRM_IOWR(0x00, struct drm_version), size 64.
        assert_eq!(DRM_IOCTL_VERSION, 0xc040_6400);
    }
}
