// SPDX-License-Identifier: MIT

//! nsvm_stress: hostile and unlucky userspace. A seeded ioctl fuzzer that
//! accepts only the documented error codes, a multi-threaded stress run
//! checked against a model of memory, processes killed mid-EXEC and
//! mid-MIGRATE, isolation of the owner's memory, injected allocation
//! failures, and the guest running out of memory with pages in VRAM. Each subtest is bounded in time and count.
//!
//! Environment: `NSVM_SEED` (default 0x5eed), `NSVM_FUZZ_CALLS` (default
//! 100000), `NSVM_STRESS_SECS` (default 6), `NSVM_INJECT_ROUNDS` (default
//! 300). Failures print the seed.

use std::{
    collections::BTreeMap,
    os::fd::AsRawFd,
    ptr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::{Duration, Instant},
};

use nsvm_igt_tests::{check, check_eq, igt_main, skip, svm::*, Outcome, TestResult};
use nsvm_uapi::{self as nsvm, sys, Attr, Cmd, Device, Mem};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| {
            v.strip_prefix("0x")
                .map_or_else(|| v.parse().ok(), |h| u64::from_str_radix(h, 16).ok())
        })
        .unwrap_or(default)
}

/// xorshift64*: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[self.below(v.len() as u64) as usize]
    }
}

/// One ioctl as a plain call: the errno, no restart.
fn ioctl<T>(fd: i32, cmd: u64, arg: &mut T) -> i32 {
    // SAFETY: `arg` is a valid `T` for the call; the kernel checks it.
    match unsafe { libc::ioctl(fd, cmd as _, ptr::from_mut(arg)) } {
        0 => 0,
        _ => std::io::Error::last_os_error().raw_os_error().unwrap_or(-1),
    }
}

// ---- the fuzzer ----

/// The errnos each ioctl documents (see Documentation/nsvm/errors.rst).
fn allowed(nr: u32) -> &'static [i32] {
    use libc::*;
    match nr {
        sys::DRM_NSVM_GET_PARAM => &[0, EINVAL],
        sys::DRM_NSVM_SVM_INIT => &[0, EINVAL, EBUSY],
        sys::DRM_NSVM_EXEC => &[0, EINVAL, EFAULT, ENOENT, EBUSY, ENOMEM, ETIMEDOUT],
        sys::DRM_NSVM_SNAPSHOT => &[0, EINVAL, EFAULT, ENOENT, EBUSY],
        sys::DRM_NSVM_MIGRATE => &[0, EINVAL, ENOENT, ENOMEM],
        sys::DRM_NSVM_SET_ATTR => &[0, EINVAL, ENOENT, ENOSPC],
        sys::DRM_NSVM_QUEUE_CREATE => &[0, EINVAL, ENOENT, ENOSPC],
        sys::DRM_NSVM_QUEUE_DESTROY => &[0, EINVAL, ENOENT],
        sys::DRM_NSVM_SUBMIT => &[0, EINVAL, EFAULT, ENOENT, ECANCELED, EAGAIN],
        // The wait's own errors, then a failed queue's.
        sys::DRM_NSVM_WAIT => &[
            0, EINVAL, EFAULT, ENOENT, ETIME, EINTR, ESRCH, ETIMEDOUT, ENOMEM, ECANCELED,
        ],
        sys::DRM_NSVM_QUEUE_QUERY => &[0, EINVAL, ENOENT],
        // Unknown driver ioctls: the DRM core.
        _ => &[EINVAL],
    }
}

/// The call the fuzzer is making, in memory shared with the parent: if
/// the call kills the fuzzing child (a kernel BUG kills the caller), the
/// parent names it.
#[repr(C)]
struct LastCall {
    index: u64,
    nr: u32,
    len: u32,
    /// The argument, then for EXEC its first commands.
    bytes: [u8; 256],
}

/// The bytes of `v`.
fn bytes_of<T>(v: &T) -> &[u8] {
    // SAFETY: The uapi structs are plain integers without padding.
    unsafe { std::slice::from_raw_parts(ptr::from_ref(v).cast(), size_of::<T>()) }
}

struct Fuzz {
    rng: Rng,
    /// Addresses of this process's own test mappings.
    targets: Vec<u64>,
    /// The user address limit (`TASK_SIZE`, from VA_BITS).
    limit: u64,
    buf: Vec<u8>,
    cmds: Vec<Cmd>,
    syncs: Vec<sys::drm_nsvm_sync>,
    last: *mut LastCall,
}

/// Values at the edges, for any address, length or count: 0, 1, a page
/// less one, a page, 2 MiB and a page either side, the user address
/// limit and a page below it, 2^47, 2^63, and the top of the 64-bit space.
fn edges(limit: u64) -> [u64; 15] {
    let page = PAGE as u64;
    let mb2 = 2u64 << 20;
    [
        0,
        1,
        page - 1,
        page,
        mb2 - page,
        mb2,
        mb2 + page,
        limit - page,
        limit,
        1 << 47,
        1 << 63,
        0u64.wrapping_sub(mb2),
        0u64.wrapping_sub(page),
        u64::MAX,
        limit + page,
    ]
}

impl Fuzz {
    fn edge(&mut self) -> u64 {
        let e = edges(self.limit);
        self.rng.pick(&e)
    }

    fn addr(&mut self) -> u64 {
        match self.rng.below(8) {
            0..=3 => {
                let a = self.rng.pick(&self.targets);
                match self.rng.below(4) {
                    0 => a.wrapping_add(self.rng.below(8192)),
                    _ => a,
                }
            }
            4 => self.rng.next(),
            _ => self.edge(),
        }
    }

    /// A length for a range from `start`: an edge value, a random one, a
    /// short one, or one whose sum with `start` lands exactly on (or one
    /// byte or page past) 2^64 or the address limit.
    fn len_from(&mut self, start: u64) -> u64 {
        match self.rng.below(8) {
            0 => self.rng.next(),
            1..=2 => self.edge(),
            3..=4 => {
                let target = if self.rng.below(2) == 0 {
                    0
                } else {
                    self.limit
                };
                let past = self.rng.pick(&[0, 0, 1, PAGE as u64]);
                target.wrapping_sub(start).wrapping_add(past)
            }
            _ => self.rng.pick(&[
                8,
                PAGE as u64 + 1,
                16 * PAGE as u64,
                1 << 30,
                (1 << 30) + 1,
                1 << 40,
            ]),
        }
    }

    /// A count: an edge value, or near `max` (what the ioctl accepts).
    fn count(&mut self, max: u64) -> u64 {
        match self.rng.below(4) {
            0 => self.edge(),
            1 => self.rng.pick(&[max, max + 1, u64::from(u32::MAX)]),
            _ => self.rng.below(max + 1),
        }
    }

    fn small(&mut self, valid: u32) -> u32 {
        match self.rng.below(8) {
            0 => self.rng.next() as u32,
            _ => self.rng.below(u64::from(valid) + 1) as u32,
        }
    }

    /// A queue id: mostly one of the first few (which exist once created),
    /// sometimes an edge value.
    fn queue_id(&mut self) -> u32 {
        match self.rng.below(8) {
            0 => self.edge() as u32,
            1 => u32::MAX,
            _ => self.rng.below(16) as u32,
        }
    }

    /// A zero-or-garbage value for a must-be-zero field.
    fn zeroish(&mut self) -> u32 {
        if self.rng.below(16) == 0 {
            1 << self.rng.below(32)
        } else {
            0
        }
    }

    fn size<T>(&mut self) -> u32 {
        if self.rng.below(16) == 0 {
            self.rng.below(256) as u32
        } else {
            nsvm::size_of_u32::<T>()
        }
    }

    fn cmd(&mut self) -> Cmd {
        self.cmd_of(6)
    }

    /// A command of op up to `ops` (mostly): SUBMIT takes SEM_WAIT too.
    fn cmd_of(&mut self, ops: u32) -> Cmd {
        let op = self.small(ops);
        let dst = self.addr();
        Cmd {
            op,
            flags: self.zeroish(),
            dst,
            src: self.addr(),
            // Valid commands stay short, so that the run stays fast.
            len: if self.rng.below(4) == 0 {
                self.len_from(dst)
            } else {
                self.rng.below(3 * PAGE as u64)
            },
            value: self.rng.next(),
        }
    }

    /// Records call `index` of ioctl `nr` with argument `arg` (and `cmds`)
    /// in the shared [`LastCall`], then makes it.
    fn ioctl<T>(
        &mut self,
        index: u64,
        fd: i32,
        nr: u32,
        cmd: u64,
        arg: &mut T,
        cmds: &[Cmd],
    ) -> i32 {
        // SAFETY: `last` is the shared page, only this process writes it.
        let last = unsafe { &mut *self.last };
        let mut v = bytes_of(arg).to_vec();
        for c in cmds {
            v.extend_from_slice(bytes_of(c));
        }
        let n = v.len().min(last.bytes.len());
        last.bytes[..n].copy_from_slice(&v[..n]);
        last.len = n as u32;
        last.nr = nr;
        last.index = index;
        ioctl(fd, cmd, arg)
    }

    /// Call `index`, with structured random arguments; returns (nr, errno).
    fn call(&mut self, index: u64, fds: &[i32]) -> (u32, i32) {
        let fd = self.rng.pick(fds);
        let nr = match self.rng.below(24) {
            0 => 11 + self.rng.below(0x35) as u32,
            n => (n % 11) as u32,
        };
        let iowr =
            |t: u32, size: usize| nsvm::ioc(3, b'd' as u32, nsvm::DRM_COMMAND_BASE + t, size);
        let errno = match nr {
            sys::DRM_NSVM_GET_PARAM => {
                let mut a = sys::drm_nsvm_get_param {
                    size: self.size::<sys::drm_nsvm_get_param>(),
                    param: self.small(7),
                    value: self.rng.next(),
                    pad: u64::from(self.zeroish()),
                };
                self.ioctl(index, fd, nr, nsvm::DRM_IOCTL_NSVM_GET_PARAM, &mut a, &[])
            }
            sys::DRM_NSVM_SVM_INIT => {
                let mut a = sys::drm_nsvm_svm_init {
                    size: self.size::<sys::drm_nsvm_svm_init>(),
                    flags: self.zeroish(),
                    fault_window: self.len_from(0),
                    pad: u64::from(self.zeroish()),
                };
                self.ioctl(index, fd, nr, nsvm::DRM_IOCTL_NSVM_SVM_INIT, &mut a, &[])
            }
            sys::DRM_NSVM_EXEC => {
                let n = self.rng.below(4) as usize;
                let mut cmds = std::mem::take(&mut self.cmds);
                cmds.clear();
                for _ in 0..n {
                    cmds.push(self.cmd());
                }
                let ptr = match self.rng.below(16) {
                    0 => self.addr(),
                    _ => cmds.as_mut_ptr() as u64,
                };
                let max = sys::DRM_NSVM_EXEC_MAX_CMDS;
                let num_cmds = match self.rng.below(16) {
                    0 => self.count(u64::from(max)) as u32,
                    _ => n as u32,
                };
                let mut a = sys::drm_nsvm_exec {
                    size: self.size::<sys::drm_nsvm_exec>(),
                    // Over the maximum: EINVAL before anything is read. Up
                    // to it, never past our own commands: those read from
                    // elsewhere could point the GPU at our heap.
                    num_cmds: if num_cmds > max || ptr != cmds.as_ptr() as u64 {
                        num_cmds
                    } else {
                        num_cmds.min(n as u32)
                    },
                    cmds: ptr,
                    cmd_size: if self.rng.below(16) == 0 {
                        self.rng.below(64) as u32
                    } else {
                        40
                    },
                    flags: self.zeroish(),
                    ..Default::default()
                };
                let e = self.ioctl(index, fd, nr, nsvm::DRM_IOCTL_NSVM_EXEC, &mut a, &cmds);
                self.cmds = cmds;
                e
            }
            sys::DRM_NSVM_SNAPSHOT => {
                let states = match self.rng.below(8) {
                    0 => self.addr(),
                    _ => self.buf.as_mut_ptr() as u64,
                };
                let start = self.addr();
                let npages = match self.rng.below(8) {
                    0 => self.count(u64::from(sys::DRM_NSVM_SNAPSHOT_MAX_PAGES)),
                    1 => self.len_from(start) / PAGE as u64,
                    _ => self.rng.below(self.buf.len() as u64),
                };
                // `buf` holds the most pages a SNAPSHOT may report.
                let mut a = sys::drm_nsvm_snapshot {
                    size: self.size::<sys::drm_nsvm_snapshot>(),
                    flags: self.small(1),
                    start,
                    npages,
                    states,
                    ..Default::default()
                };
                self.ioctl(index, fd, nr, nsvm::DRM_IOCTL_NSVM_SNAPSHOT, &mut a, &[])
            }
            sys::DRM_NSVM_MIGRATE => {
                let start = self.addr();
                let mut a = sys::drm_nsvm_migrate {
                    size: self.size::<sys::drm_nsvm_migrate>(),
                    flags: self.zeroish(),
                    start,
                    length: if self.rng.below(4) == 0 {
                        self.len_from(start)
                    } else {
                        self.rng.below(16) * PAGE as u64
                    },
                    target: self.small(1),
                    pad: self.zeroish(),
                    ..Default::default()
                };
                self.ioctl(index, fd, nr, nsvm::DRM_IOCTL_NSVM_MIGRATE, &mut a, &[])
            }
            sys::DRM_NSVM_SET_ATTR => {
                let start = self.addr();
                let mut a = sys::drm_nsvm_set_attr {
                    size: self.size::<sys::drm_nsvm_set_attr>(),
                    flags: self.zeroish(),
                    start,
                    length: self.len_from(start),
                    preferred: self.small(2),
                    migrate_on_fault: self.small(1),
                    atomic: self.small(2),
                    pad: self.zeroish(),
                };
                self.ioctl(index, fd, nr, nsvm::DRM_IOCTL_NSVM_SET_ATTR, &mut a, &[])
            }
            sys::DRM_NSVM_QUEUE_CREATE => {
                let mut a = sys::drm_nsvm_queue_create {
                    size: self.size::<sys::drm_nsvm_queue_create>(),
                    flags: self.zeroish(),
                    // Short timeouts: a fuzzed SEM_WAIT ends soon.
                    timeout_ms: match self.rng.below(8) {
                        0 => self.edge() as u32,
                        1 => sys::DRM_NSVM_MAX_TIMEOUT_MS + self.rng.below(2) as u32,
                        _ => 1 + self.rng.below(50) as u32,
                    },
                    queue_id: self.rng.next() as u32,
                    pad: u64::from(self.zeroish()),
                };
                self.ioctl(
                    index,
                    fd,
                    nr,
                    nsvm::DRM_IOCTL_NSVM_QUEUE_CREATE,
                    &mut a,
                    &[],
                )
            }
            sys::DRM_NSVM_QUEUE_DESTROY => {
                let mut a = sys::drm_nsvm_queue_destroy {
                    size: self.size::<sys::drm_nsvm_queue_destroy>(),
                    queue_id: self.queue_id(),
                    pad: u64::from(self.zeroish()),
                };
                self.ioctl(
                    index,
                    fd,
                    nr,
                    nsvm::DRM_IOCTL_NSVM_QUEUE_DESTROY,
                    &mut a,
                    &[],
                )
            }
            sys::DRM_NSVM_SUBMIT => {
                let n = self.rng.below(4) as usize;
                let mut cmds = std::mem::take(&mut self.cmds);
                cmds.clear();
                for _ in 0..n {
                    let c = self.cmd_of(7);
                    cmds.push(c);
                }
                let fence_addr = match self.rng.below(4) {
                    0 => 0,
                    _ => self.addr() & !7,
                };
                let mut a = sys::drm_nsvm_submit {
                    size: self.size::<sys::drm_nsvm_submit>(),
                    queue_id: self.queue_id(),
                    cmds: match self.rng.below(16) {
                        0 => self.addr(),
                        _ => cmds.as_mut_ptr() as u64,
                    },
                    num_cmds: match self.rng.below(16) {
                        0 => self.count(u64::from(sys::DRM_NSVM_EXEC_MAX_CMDS)) as u32,
                        _ => n as u32,
                    },
                    cmd_size: if self.rng.below(16) == 0 {
                        self.rng.below(64) as u32
                    } else {
                        40
                    },
                    fence_addr: if self.rng.below(8) == 0 {
                        fence_addr | self.rng.below(8)
                    } else {
                        fence_addr
                    },
                    fence_value: self.rng.next(),
                    seqno: self.rng.next(),
                    flags: self.zeroish(),
                    pad: self.zeroish(),
                    ..Default::default()
                };
                // In-fences: handles that exist (1, 2) or not, points and
                // flags, counts and sizes at their edges; sometimes the
                // size of uapi 0.5, which has none.
                let ns = self.rng.below(3) as usize;
                let mut syncs = std::mem::take(&mut self.syncs);
                syncs.clear();
                for _ in 0..ns {
                    let s = sys::drm_nsvm_sync {
                        handle: match self.rng.below(8) {
                            0 => self.edge() as u32,
                            _ => self.rng.below(4) as u32,
                        },
                        flags: self.zeroish(),
                        point: match self.rng.below(8) {
                            0 => self.edge(),
                            _ => self.rng.below(3),
                        },
                    };
                    syncs.push(s);
                }
                a.syncs = match self.rng.below(16) {
                    0 => self.addr(),
                    _ => syncs.as_ptr() as u64,
                };
                a.num_syncs = match self.rng.below(16) {
                    0 => self.count(u64::from(sys::DRM_NSVM_SUBMIT_MAX_SYNCS)) as u32,
                    _ => ns as u32,
                };
                a.sync_size = match self.rng.below(16) {
                    0 => self.rng.below(64) as u32,
                    _ => nsvm::size_of_u32::<sys::drm_nsvm_sync>(),
                };
                if a.syncs == syncs.as_ptr() as u64 && a.num_syncs <= sys::DRM_NSVM_SUBMIT_MAX_SYNCS
                {
                    a.num_syncs = a.num_syncs.min(ns as u32);
                }
                if self.rng.below(16) == 0 {
                    a.size = std::mem::offset_of!(sys::drm_nsvm_submit, syncs) as u32;
                }
                // As for EXEC: never past our own commands.
                if a.cmds == cmds.as_ptr() as u64 && a.num_cmds <= sys::DRM_NSVM_EXEC_MAX_CMDS {
                    a.num_cmds = a.num_cmds.min(n as u32);
                }
                let e = self.ioctl(index, fd, nr, nsvm::DRM_IOCTL_NSVM_SUBMIT, &mut a, &cmds);
                self.cmds = cmds;
                self.syncs = syncs;
                e
            }
            sys::DRM_NSVM_WAIT => {
                let seqno = self.rng.below(3) == 0;
                let (v, m) = (self.rng.next(), self.rng.next());
                let mut a = sys::drm_nsvm_wait {
                    size: self.size::<sys::drm_nsvm_wait>(),
                    flags: if seqno {
                        sys::DRM_NSVM_WAIT_SEQNO
                    } else {
                        self.zeroish()
                    },
                    addr: match (seqno, self.rng.below(4)) {
                        (true, 0) | (false, _) => self.addr(),
                        _ => 0,
                    },
                    value: self.rng.pick(&[0, 1, v]),
                    mask: self.rng.pick(&[u64::MAX, 0, m]),
                    op: self.small(6),
                    queue_id: if self.rng.below(2) == 0 {
                        0
                    } else {
                        self.queue_id()
                    },
                    // Never long: a wait that is not satisfied times out.
                    timeout_ns: self.rng.pick(&[0, 1, 1000, 1_000_000]),
                    pad: u64::from(self.zeroish()),
                };
                self.ioctl(index, fd, nr, nsvm::DRM_IOCTL_NSVM_WAIT, &mut a, &[])
            }
            sys::DRM_NSVM_QUEUE_QUERY => {
                let mut a = sys::drm_nsvm_queue_query {
                    size: self.size::<sys::drm_nsvm_queue_query>(),
                    queue_id: self.queue_id(),
                    pad: u64::from(self.zeroish()),
                    ..Default::default()
                };
                self.ioctl(index, fd, nr, nsvm::DRM_IOCTL_NSVM_QUEUE_QUERY, &mut a, &[])
            }
            _ => {
                let mut junk = [0u64; 8];
                for j in junk.iter_mut() {
                    *j = self.rng.next();
                }
                self.ioctl(index, fd, nr, iowr(nr, 64), &mut junk, &[])
            }
        };
        (nr, errno)
    }
}

/// At least NSVM_FUZZ_CALLS (100000) seeded calls with structured random
/// arguments on a bound and an unbound file: only documented errnos, and
/// the device still works afterwards. Every address, length and count is
/// drawn from the edges (see [`edges`]) as well as at random, and lengths
/// land exactly on or just past 2^64 and the user address limit. The calls
/// run in a child: if one kills it (a kernel BUG does), the parent names
/// the call, with its arguments.
fn fuzz_ioctls() -> TestResult {
    let seed = env_u64("NSVM_SEED", 0x5eed);
    let calls = env_u64("NSVM_FUZZ_CALLS", 100_000);
    // SAFETY: A fresh shared anonymous page for the last call.
    let shared = unsafe {
        libc::mmap(
            ptr::null_mut(),
            PAGE,
            RW,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    check!(shared != libc::MAP_FAILED);
    let last = shared.cast::<LastCall>();
    let (pid, started) = fork_ready(|wfd| match fuzz_child(seed, calls, last, wfd) {
        Ok(()) => 0,
        Err(Outcome::Skip(why)) => {
            println!("Test requirement not met: {why}");
            77
        }
        Err(Outcome::Fail(why)) => {
            println!("{why}");
            1
        }
    })?;
    let mut st = 0;
    // SAFETY: Our child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    if libc::WIFSIGNALED(st) {
        // SAFETY: The child is gone; the page is ours to read.
        let last = unsafe { &*last };
        let bytes: Vec<String> = last.bytes[..last.len as usize]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        return Err(Outcome::Fail(format!(
            "seed {seed:#x}: the fuzzer died (signal {}) in call {} of {calls}: ioctl {:#x}, argument {}",
            libc::WTERMSIG(st),
            last.index,
            last.nr,
            bytes.join("")
        )));
    }
    check!(started, "the fuzzer did not start (status {st:#x})");
    match libc::WEXITSTATUS(st) {
        0 => Ok(()),
        77 => skip!("see above"),
        c => Err(Outcome::Fail(format!("the fuzzer failed (exit {c})"))),
    }
}

/// The fuzzer's side of [`fuzz_ioctls`].
fn fuzz_child(seed: u64, calls: u64, last: *mut LastCall, wfd: i32) -> TestResult {
    let bound_dev = bound(0)?;
    let unbound = open(0)?;
    let other = bound(1)?;
    ready(wfd);
    let bits = bound_dev.get_param(sys::DRM_NSVM_PARAM_VA_BITS)?;
    let limit = (1u64 << bits) - PAGE as u64;
    // Every target sits inside 4 GiB of PROT_NONE: a command or a copy-out
    // that runs past one faults instead of writing over this process's own
    // heap or stack. Writable pages at the start, a read-only page at
    // 512 MiB, PROT_NONE elsewhere.
    let guard = Map::new(4 << 30, libc::PROT_NONE);
    // SAFETY: Maps over the start of our own reservation.
    let p = unsafe {
        libc::mmap(
            guard.ptr.cast(),
            16 * PAGE,
            RW,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
            -1,
            0,
        )
    };
    check!(p == guard.ptr.cast());
    let mut m = Map {
        ptr: guard.ptr,
        len: 16 * PAGE,
    };
    cpu_fill(&mut m, 1);
    std::mem::forget(m);
    let m_addr = guard.addr();
    let ro = m_addr + (512 << 20);
    // SAFETY: Maps over a page of our own reservation.
    let p = unsafe {
        libc::mmap(
            ro as *mut _,
            PAGE,
            libc::PROT_READ,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
            -1,
            0,
        )
    };
    check!(p as u64 == ro);
    let none = m_addr + (3 << 30);
    let mut fuzz = Fuzz {
        rng: Rng::new(seed),
        targets: vec![
            m_addr,
            m_addr + 8 * PAGE as u64,
            m_addr + (1 << 30),
            ro,
            none,
            0xffff_8880_0000_0000,
        ],
        limit,
        // SNAPSHOT writes one byte per page, up to its maximum.
        buf: vec![0u8; sys::DRM_NSVM_SNAPSHOT_MAX_PAGES as usize],
        cmds: Vec::with_capacity(4),
        syncs: Vec::with_capacity(4),
        last,
    };
    // Sync objects for the in-fences: signaled ones on every file (handles
    // 1 and 2 of a fresh file), so that some in-fences are valid.
    for d in [&bound_dev, &unbound, &other] {
        for _ in 0..2 {
            d.syncobj_create(true)?;
        }
    }
    let fds = [
        bound_dev.file().as_raw_fd(),
        unbound.file().as_raw_fd(),
        other.file().as_raw_fd(),
    ];
    let mut seen: BTreeMap<(u32, i32), u64> = BTreeMap::new();
    let mut time: BTreeMap<u32, Duration> = BTreeMap::new();
    for i in 0..calls {
        let t = Instant::now();
        let (nr, errno) = fuzz.call(i, &fds);
        *time.entry(nr.min(6)).or_default() += t.elapsed();
        *seen.entry((nr.min(6), errno)).or_default() += 1;
        if !allowed(nr).contains(&errno) {
            return Err(Outcome::Fail(format!(
                "seed {seed:#x} call {i}: ioctl {nr:#x} returned undocumented errno {errno}"
            )));
        }
    }
    println!("fuzz: seed {seed:#x}, {calls} calls, address limit {limit:#x}; (ioctl, errno) -> count: {seen:?}");
    println!("fuzz: time per ioctl: {time:?}");
    // Still working: the bound file serves EXEC on fresh memory.
    let mut n = Map::new(4 * PAGE, RW);
    cpu_fill(&mut n, 2);
    check!(gpu_read(&bound_dev, n.addr(), 4 * PAGE)? == pattern(2, 4 * PAGE));
    Ok(())
}

// ---- the stress run with a model ----

/// The value a writer filled a page with; `u64::MAX`: unknown (MADV_FREE).
const UNKNOWN: u64 = u64::MAX;

struct Shared {
    dev: Device,
    base: u64,
    /// A u64 fence per writer, outside the region.
    fences: u64,
    pages: usize,
    model: Vec<AtomicU64>,
    stop: AtomicBool,
    ops: AtomicU64,
    mismatches: AtomicU64,
}

impl Shared {
    fn page(&self, p: usize) -> *mut u64 {
        (self.base as usize + p * PAGE) as *mut u64
    }

    fn mismatch(&self, what: &str) {
        println!("stress: mismatch: {what}");
        self.mismatches.fetch_add(1, Relaxed);
    }

    /// Checks page `p` holds `v` (every u64), by GPU or CPU read.
    fn verify(&self, p: usize, v: u64, gpu: bool) {
        if v == UNKNOWN {
            return;
        }
        let words: Vec<u64> = if gpu {
            let mut out = vec![0u64; PAGE / 8];
            if let Err(e) = self.dev.exec(&mut [Cmd::read(
                out.as_mut_ptr() as u64,
                self.page(p) as u64,
                PAGE as u64,
            )]) {
                self.mismatch(&format!("GPU read of page {p} failed: {e}"));
                return;
            }
            out
        } else {
            // SAFETY: The page is ours and readable; only this thread writes it.
            (0..PAGE / 8)
                .map(|i| unsafe { ptr::read_volatile(self.page(p).add(i)) })
                .collect()
        };
        if let Some(w) = words.iter().position(|w| *w != v) {
            self.mismatch(&format!(
                "page {p} word {w}: {:#x} != {v:#x} ({})",
                words[w],
                if gpu { "GPU" } else { "CPU" }
            ));
        }
    }
}

/// Writer `id` owns pages `id, id + nw, ...`: writes them by GPU or CPU,
/// zaps them, checks them, in a seeded random order.
fn writer(s: &Shared, id: usize, nw: usize, seed: u64) {
    let mut rng = Rng::new(seed ^ ((id as u64 + 1) * 0x9e37_79b9));
    let mine: Vec<usize> = (id..s.pages).step_by(nw).collect();
    // Two exec queues of its own, and its fence.
    let queues = [s.dev.queue_create(0), s.dev.queue_create(0)];
    let fence = s.fences + id as u64 * 8;
    let mut seq = 0u64;
    while !s.stop.load(Relaxed) {
        let p = rng.pick(&mine);
        let v = rng.next() | 1;
        match rng.below(13) {
            10..=12 => {
                // Jobs on both queues, overlapping, each filling a page of
                // ours; the model changes once both fences are written.
                let (Ok(qa), Ok(qb)) = (&queues[0], &queues[1]) else {
                    s.mismatch("QUEUE_CREATE failed");
                    break;
                };
                let p2 = rng.pick(&mine);
                let v2 = if p2 == p { v } else { rng.next() | 1 };
                let fb = s.fences + (nw + id) as u64 * 8;
                seq += 1;
                let r = s
                    .dev
                    .submit(
                        *qa,
                        &[Cmd::fill(s.page(p) as u64, PAGE as u64, v)],
                        Some((fence, seq)),
                    )
                    .and_then(|_| {
                        s.dev.submit(
                            *qb,
                            &[Cmd::fill(s.page(p2) as u64, PAGE as u64, v2)],
                            Some((fb, seq)),
                        )
                    })
                    .and_then(|_| s.dev.wait_fence(fence, seq, *qa, 60_000_000_000))
                    .and_then(|_| s.dev.wait_fence(fb, seq, *qb, 60_000_000_000));
                match r {
                    Ok(()) => {
                        s.model[p].store(v, Relaxed);
                        s.model[p2].store(v2, Relaxed);
                    }
                    Err(e) => {
                        s.mismatch(&format!("async fill of pages {p}, {p2} failed: {e}"));
                        break;
                    }
                }
            }
            0..=2 => {
                if let Err(e) = s
                    .dev
                    .exec(&mut [Cmd::fill(s.page(p) as u64, PAGE as u64, v)])
                {
                    s.mismatch(&format!("GPU fill of page {p} failed: {e}"));
                } else {
                    s.model[p].store(v, Relaxed);
                }
            }
            3..=4 => {
                for i in 0..PAGE / 8 {
                    // SAFETY: Our page; only this thread writes it.
                    unsafe { ptr::write_volatile(s.page(p).add(i), v) };
                }
                s.model[p].store(v, Relaxed);
            }
            5 => {
                // SAFETY: One page of our own mapping.
                unsafe { libc::madvise(s.page(p).cast(), PAGE, libc::MADV_DONTNEED) };
                s.model[p].store(0, Relaxed);
            }
            6 => {
                // SAFETY: As above.
                unsafe { libc::madvise(s.page(p).cast(), PAGE, libc::MADV_FREE) };
                s.model[p].store(UNKNOWN, Relaxed);
            }
            7..=8 => s.verify(p, s.model[p].load(Relaxed), true),
            _ => s.verify(p, s.model[p].load(Relaxed), false),
        }
        s.ops.fetch_add(1, Relaxed);
    }
}

/// Moves random parts of the region between memories and changes their
/// policies; never changes their content.
fn migrator(s: &Shared, seed: u64) {
    let mut rng = Rng::new(seed ^ 0xabcd);
    while !s.stop.load(Relaxed) {
        let first = rng.below(s.pages as u64);
        let n = 1 + rng.below(s.pages as u64 - first);
        let (start, len) = (s.base + first * PAGE as u64, n * PAGE as u64);
        let r = match rng.below(4) {
            0 | 1 => s.dev.migrate(start, len, Mem::Device).map(|_| ()),
            2 => s.dev.migrate(start, len, Mem::System).map(|_| ()),
            _ => s.dev.set_attr(
                start,
                len,
                Attr {
                    preferred: rng.below(3) as u32,
                    migrate_on_fault: rng.below(2) == 1,
                    atomic: rng.below(3) as u32,
                },
            ),
        };
        if let Err(e) = r {
            s.mismatch(&format!("migrate/set_attr failed: {e}"));
        }
        s.ops.fetch_add(1, Relaxed);
    }
}

/// A churning region of its own: map, GPU-fill, mprotect, mremap, remap
/// PROT_NONE, fork a reader, with the expected outcome of each.
fn churner(s: &Shared, seed: u64) {
    let mut rng = Rng::new(seed ^ 0x1234);
    while !s.stop.load(Relaxed) {
        let n = 1 + rng.below(64) as usize;
        let mut c = Map::new(n * PAGE, RW);
        let v = rng.next() | 1;
        let res = s.dev.exec(&mut [Cmd::fill(c.addr(), c.len as u64, v)]);
        let expect = |c: &Map, what: &str| {
            // SAFETY: Readable mapping.
            let ok = (0..c.len / 8)
                .all(|i| unsafe { ptr::read_volatile(c.ptr.cast::<u64>().add(i)) } == v);
            if !ok {
                s.mismatch(&format!("churn: {what}"));
            }
        };
        if res.is_err() {
            s.mismatch("churn: GPU fill failed");
        }
        match rng.below(5) {
            0 => {
                c.protect(libc::PROT_READ);
                if s.dev.exec(&mut [Cmd::fill(c.addr(), 8, 0)]).is_ok() {
                    s.mismatch("churn: GPU wrote read-only memory");
                }
                expect(&c, "read-only");
            }
            1 => {
                // SAFETY: Moves our own mapping.
                let p =
                    unsafe { libc::mremap(c.ptr.cast(), c.len, 2 * c.len, libc::MREMAP_MAYMOVE) };
                if p != libc::MAP_FAILED {
                    c.ptr = p.cast();
                    c.len *= 2;
                    let mut out = vec![0u64; n * PAGE / 8];
                    match s.dev.exec(&mut [Cmd::read(
                        out.as_mut_ptr() as u64,
                        c.addr(),
                        (n * PAGE) as u64,
                    )]) {
                        Ok(()) if out.iter().all(|w| *w == v) => {}
                        _ => s.mismatch("churn: GPU read after mremap"),
                    }
                }
            }
            2 => {
                // Replace with PROT_NONE: the GPU must fault, not write.
                // SAFETY: Replaces our own mapping.
                let p = unsafe {
                    libc::mmap(
                        c.ptr.cast(),
                        c.len,
                        libc::PROT_NONE,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                        -1,
                        0,
                    )
                };
                if p != libc::MAP_FAILED && s.dev.exec(&mut [Cmd::fill(c.addr(), 8, 0)]).is_ok() {
                    s.mismatch("churn: GPU wrote PROT_NONE memory");
                }
            }
            3 => {
                let ptr = c.ptr as usize;
                let len = c.len;
                let fd = s.dev.file().as_raw_fd();
                let st = in_child(|| {
                    // SAFETY: The child's copy of the mapping.
                    let ok = (0..len / 8)
                        .all(|i| unsafe { ptr::read_volatile((ptr as *const u64).add(i)) } == v);
                    // The inherited fd reaches nothing of the parent's.
                    let mut arg = sys::drm_nsvm_snapshot {
                        size: nsvm::size_of_u32::<sys::drm_nsvm_snapshot>(),
                        ..Default::default()
                    };
                    let eperm = ioctl(fd, nsvm::DRM_IOCTL_NSVM_SNAPSHOT, &mut arg) == libc::EPERM;
                    i32::from(!(ok && eperm))
                });
                if st != 0 {
                    s.mismatch("churn: forked child");
                }
            }
            _ => expect(&c, "fill"),
        }
        s.ops.fetch_add(1, Relaxed);
    }
}

/// Threads write (by CPU, EXEC and jobs on exec queues), check, zap and
/// migrate overlapping parts of one region, and churn mappings beside it,
/// for NSVM_STRESS_SECS seconds in a seeded random order; every check
/// compares with a model of what memory holds.
fn stress_model() -> TestResult {
    let seed = env_u64("NSVM_SEED", 0x5eed);
    let secs = env_u64("NSVM_STRESS_SECS", 6);
    let (ops, bad) = run_model(seed, secs)?;
    println!("stress: seed {seed:#x}, {secs} s, {ops} operations, {bad} mismatches");
    check!(ops > 0);
    check_eq!(bad, 0);
    Ok(())
}

/// The model run of [`stress_model`] in three processes at once, each its
/// own file and queues, on one device: the fault handler serves them all.
fn stress_model_procs() -> TestResult {
    let seed = env_u64("NSVM_SEED", 0x5eed);
    let secs = env_u64("NSVM_STRESS_SECS", 6);
    let mut pids = Vec::new();
    for i in 0..3u64 {
        let _ = std::io::Write::flush(&mut std::io::stdout());
        // SAFETY: The child runs the model and exits.
        match unsafe { libc::fork() } {
            0 => {
                let code = match run_model(seed ^ ((i + 1) * 0x51), secs) {
                    Ok((ops, 0)) if ops > 0 => {
                        println!("stress: process {i}: {ops} operations, no mismatch");
                        0
                    }
                    Ok((ops, bad)) => {
                        println!("stress: process {i}: {ops} operations, {bad} mismatches");
                        1
                    }
                    Err(e) => {
                        println!("stress: process {i}: {e:?}");
                        2
                    }
                };
                let _ = std::io::Write::flush(&mut std::io::stdout());
                // SAFETY: Ends the child.
                unsafe { libc::_exit(code) };
            }
            pid => pids.push(pid),
        }
    }
    let mut failed = 0;
    for pid in pids {
        let mut st = 0;
        // SAFETY: Our child.
        unsafe { libc::waitpid(pid, &mut st, 0) };
        if !(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0) {
            failed += 1;
        }
    }
    check_eq!(failed, 0);
    Ok(())
}

/// One model run for `secs` seconds: (operations, mismatches).
fn run_model(seed: u64, secs: u64) -> Result<(u64, u64), Outcome> {
    let dev = bound(0)?;
    let pages = 512;
    let region = Map::new(pages * PAGE, RW);
    let fences = Map::new(PAGE, RW);
    let shared = Arc::new(Shared {
        dev,
        base: region.addr(),
        fences: fences.addr(),
        pages,
        model: (0..pages).map(|_| AtomicU64::new(0)).collect(),
        stop: AtomicBool::new(false),
        ops: AtomicU64::new(0),
        mismatches: AtomicU64::new(0),
    });
    let nw = 3;
    let mut threads = Vec::new();
    for id in 0..nw {
        let s = shared.clone();
        threads.push(std::thread::spawn(move || writer(&s, id, nw, seed)));
    }
    let s = shared.clone();
    threads.push(std::thread::spawn(move || migrator(&s, seed)));
    let s = shared.clone();
    threads.push(std::thread::spawn(move || churner(&s, seed)));
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_millis(100));
    }
    shared.stop.store(true, Relaxed);
    for t in threads {
        t.join()
            .map_err(|_| Outcome::Fail("a stress thread panicked".into()))?;
    }
    // Final check of every page, by GPU and by CPU.
    for p in 0..pages {
        let v = shared.model[p].load(Relaxed);
        shared.verify(p, v, true);
        shared.verify(p, v, false);
    }
    let ops = shared.ops.load(Relaxed);
    let bad = shared.mismatches.load(Relaxed);
    drop(region);
    drop(fences);
    Ok((ops, bad))
}

// ---- killed mid-work ----

/// Children are SIGKILLed while an EXEC or a MIGRATE of 32 MiB runs; the
/// device memory they held is freed and the device still works.
fn sigkill_mid_work() -> TestResult {
    let before = vram_used_settled(0)?;
    for (round, delay_ms) in [5u64, 20, 60, 150, 5, 40].into_iter().enumerate() {
        let (pid, _) = fork_ready(|wfd| {
            let code = (|| {
                let dev = Device::open_render(0).ok()?;
                dev.svm_init(0).ok()?;
                let len = 32 << 20;
                let m = Map::new(len, RW);
                // Tells the parent we are about to start.
                ready(wfd);
                if round % 2 == 0 {
                    let _ = dev.exec(&mut [Cmd::fill(m.addr(), len as u64, 7)]);
                } else {
                    let _ = dev.exec(&mut [Cmd::fill(m.addr(), len as u64, 7)]);
                    let _ = dev.migrate(m.addr(), len as u64, Mem::Device);
                }
                Some(())
            })();
            i32::from(code.is_none())
        })?;
        std::thread::sleep(Duration::from_millis(delay_ms));
        // SAFETY: Our child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let mut st = 0;
        // SAFETY: Our child.
        unsafe { libc::waitpid(pid, &mut st, 0) };
        check!(libc::WIFSIGNALED(st) || libc::WEXITSTATUS(st) == 0);
    }
    check_eq!(vram_stat(0, "pages_used")?, before);
    let dev = bound(0)?;
    let mut m = Map::new(4 * PAGE, RW);
    cpu_fill(&mut m, 3);
    check!(gpu_read(&dev, m.addr(), 4 * PAGE)? == pattern(3, 4 * PAGE));
    Ok(())
}

// ---- isolation ----

/// A forked child holding the owner's fd can neither read nor write the
/// owner's memory, nor move it or change its policy, through any ioctl.
fn isolation_fork() -> TestResult {
    let dev = bound(0)?;
    let mut m = Map::new(4 * PAGE, RW);
    cpu_fill(&mut m, 4);
    migrate_dev(&dev, &m)?;
    let fd = dev.file().as_raw_fd();
    let addr = m.addr();
    let st = in_child(|| {
        let mut bad = 0;
        let mut buf = vec![0u8; 4 * PAGE];
        let cmds = [
            Cmd::read(buf.as_mut_ptr() as u64, addr, PAGE as u64),
            Cmd::fill(addr, PAGE as u64, 0),
            Cmd::copy(buf.as_mut_ptr() as u64, addr, PAGE as u64),
            Cmd::add64(addr, 1),
        ];
        for c in cmds {
            bad += i32::from(raw_exec(fd, c) != Err(libc::EPERM));
        }
        for flags in [0, sys::DRM_NSVM_SNAPSHOT_CPU] {
            let mut a = sys::drm_nsvm_snapshot {
                size: nsvm::size_of_u32::<sys::drm_nsvm_snapshot>(),
                flags,
                start: addr,
                npages: 4,
                states: buf.as_mut_ptr() as u64,
                ..Default::default()
            };
            bad += i32::from(ioctl(fd, nsvm::DRM_IOCTL_NSVM_SNAPSHOT, &mut a) != libc::EPERM);
        }
        for target in [sys::DRM_NSVM_MEM_SYSTEM, sys::DRM_NSVM_MEM_DEVICE] {
            let mut a = sys::drm_nsvm_migrate {
                size: nsvm::size_of_u32::<sys::drm_nsvm_migrate>(),
                start: addr,
                length: 4 * PAGE as u64,
                target,
                ..Default::default()
            };
            bad += i32::from(ioctl(fd, nsvm::DRM_IOCTL_NSVM_MIGRATE, &mut a) != libc::EPERM);
        }
        let mut a = sys::drm_nsvm_set_attr {
            size: nsvm::size_of_u32::<sys::drm_nsvm_set_attr>(),
            start: addr,
            length: 4 * PAGE as u64,
            ..Default::default()
        };
        bad += i32::from(ioctl(fd, nsvm::DRM_IOCTL_NSVM_SET_ATTR, &mut a) != libc::EPERM);
        // The child's own copy is intact (its CPU reads fault it back).
        // SAFETY: The child's copy of the mapping.
        let own = unsafe { std::slice::from_raw_parts(addr as *const u8, 4 * PAGE) };
        bad += i32::from(own != pattern(4, 4 * PAGE).as_slice());
        bad
    });
    check_eq!(st, 0);
    check!(m.bytes() == pattern(4, 4 * PAGE).as_slice());
    Ok(())
}

fn migrate_dev(dev: &Device, m: &Map) -> Result<(), Outcome> {
    dev.migrate(m.addr(), m.len as u64, Mem::Device)?;
    Ok(())
}

/// Whether `text` holds something that looks like a kernel address: 16
/// hex digits starting with ffff.
fn has_kernel_pointer(text: &str) -> bool {
    let b = text.as_bytes();
    (0..b.len().saturating_sub(15)).any(|i| {
        b[i..i + 16].iter().all(u8::is_ascii_hexdigit)
            && b[i..i + 4].eq_ignore_ascii_case(b"ffff")
            && (i == 0 || !b[i - 1].is_ascii_hexdigit())
    })
}

/// No debugfs file of nsvm and no ioctl output shows a kernel address.
fn no_kernel_pointers() -> TestResult {
    let dev = bound(0)?;
    let mut m = Map::new(8 * PAGE, RW);
    cpu_fill(&mut m, 5);
    check!(gpu_read(&dev, m.addr(), 8 * PAGE)? == pattern(5, 8 * PAGE));
    let mut files = 0;
    let root = std::path::Path::new("/sys/kernel/debug/nsvm");
    if !root.exists() {
        skip!("no nsvm debugfs");
    }
    for d in std::fs::read_dir(root)? {
        let d = d?.path();
        for f in std::fs::read_dir(&d)? {
            let f = f?.path();
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            check!(!has_kernel_pointer(&text), "{}: {text}", f.display());
            files += 1;
        }
    }
    check!(files >= 2);
    for p in 0..sys::DRM_NSVM_PARAM_COUNT {
        check!(dev.get_param(p)? < 1 << 47);
    }
    let c = dev.counters()?;
    for v in [
        c.faults,
        c.batches,
        c.retries,
        c.invalidations,
        c.pages_mapped,
        c.pages_unmapped,
    ] {
        check!(v < 1 << 40);
    }
    // The check itself finds one.
    check!(has_kernel_pointer("x ffff888012345678 y"));
    Ok(())
}

/// Render nodes as DRM has them: nsvm's ioctls are all allowed on them,
/// file permissions decide who may open one, and an unprivileged user who
/// may open it can use SVM on its own memory.
fn render_node_permissions() -> TestResult {
    let path = "/dev/dri/renderD128";
    let Ok(meta) = std::fs::metadata(path) else {
        skip!("no {path}");
    };
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    check_eq!(meta.rdev() >> 8 & 0xfff, 226);
    let old = meta.permissions();
    let as_nobody = || {
        in_child(|| {
            // SAFETY: Drops privileges in the child.
            if unsafe { libc::setgid(65534) } != 0 || unsafe { libc::setuid(65534) } != 0 {
                return 10;
            }
            match Device::open(path) {
                Err(e) if e.errno == libc::EACCES => 1,
                Err(_) => 2,
                Ok(dev) => {
                    let mut m = Map::new(PAGE, RW);
                    cpu_fill(&mut m, 6);
                    let ok = dev.svm_init(0).is_ok()
                        && gpu_read(&dev, m.addr(), PAGE).is_ok_and(|d| d == pattern(6, PAGE));
                    if ok {
                        0
                    } else {
                        3
                    }
                }
            }
        })
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    let denied = as_nobody();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    let allowed = as_nobody();
    std::fs::set_permissions(path, old)?;
    check_eq!(denied, 1);
    check_eq!(allowed, 0);
    Ok(())
}

// ---- fault injection ----

const FAILSLAB: &str = "/sys/kernel/debug/failslab";
const FAIL_PAGE_ALLOC: &str = "/sys/kernel/debug/fail_page_alloc";

fn knob(path: &str, value: &str) -> Result<(), Outcome> {
    std::fs::write(path, value).map_err(|e| Outcome::Fail(format!("{path}: {e}")))
}

/// Sets this task's make-it-fail; the write itself may hit an injected
/// failure, so it is retried until it took.
fn make_it_fail(on: bool) {
    let v = if on { "1" } else { "0" };
    for _ in 0..1000 {
        if std::fs::write("/proc/thread-self/make-it-fail", v).is_ok()
            && std::fs::read_to_string("/proc/thread-self/make-it-fail")
                .is_ok_and(|s| s.trim() == v)
        {
            return;
        }
    }
}

/// The core scenarios with injected allocation failures (failslab and
/// fail_page_alloc, this task only): every failure is a documented error
/// code, and without injection everything works again with intact data.
/// kmemleak runs at the end of the guest run.
fn fault_injection() -> TestResult {
    if !std::path::Path::new(FAILSLAB).exists() || !std::path::Path::new(FAIL_PAGE_ALLOC).exists() {
        skip!("no failslab or fail_page_alloc in debugfs");
    }
    let seed = env_u64("NSVM_SEED", 0x5eed);
    let rounds = env_u64("NSVM_INJECT_ROUNDS", 300);
    let mut rng = Rng::new(seed ^ 0xfa11);
    let dev = bound(0)?;
    let len = 64 * PAGE;
    let mut m = Map::new(len, RW);
    cpu_fill(&mut m, 7);
    let mut out = vec![0u8; len];
    let mut states = vec![0u8; 64];
    let mut seen: BTreeMap<(u64, i32), u64> = BTreeMap::new();
    let mut results = Vec::with_capacity(rounds as usize);
    for dir in [FAILSLAB, FAIL_PAGE_ALLOC] {
        for (k, v) in [
            ("verbose", "0"),
            ("task-filter", "Y"),
            ("interval", "1"),
            ("times", "-1"),
            ("probability", "10"),
        ] {
            knob(&format!("{dir}/{k}"), v)?;
        }
        knob(&format!("{dir}/ignore-gfp-wait"), "N")?;
    }
    // User pages (highmem) are left alone: the task's own page faults do
    // not fail, only kernel allocations do.
    knob(&format!("{FAIL_PAGE_ALLOC}/ignore-gfp-highmem"), "Y")?;
    for _ in 0..rounds {
        let op = rng.below(7);
        let fd = dev.file().as_raw_fd();
        make_it_fail(true);
        let errno = match op {
            0 | 1 => {
                let c = if op == 0 {
                    Cmd::fill(m.addr(), len as u64, 0x55)
                } else {
                    Cmd::read(out.as_mut_ptr() as u64, m.addr(), len as u64)
                };
                raw_exec(fd, c).err().unwrap_or(0)
            }
            2 | 3 => {
                let mut a = sys::drm_nsvm_migrate {
                    size: nsvm::size_of_u32::<sys::drm_nsvm_migrate>(),
                    start: m.addr(),
                    length: len as u64,
                    target: if op == 2 {
                        sys::DRM_NSVM_MEM_DEVICE
                    } else {
                        sys::DRM_NSVM_MEM_SYSTEM
                    },
                    ..Default::default()
                };
                ioctl(fd, nsvm::DRM_IOCTL_NSVM_MIGRATE, &mut a)
            }
            4 => {
                let mut a = sys::drm_nsvm_snapshot {
                    size: nsvm::size_of_u32::<sys::drm_nsvm_snapshot>(),
                    flags: sys::DRM_NSVM_SNAPSHOT_CPU,
                    start: m.addr(),
                    npages: 64,
                    states: states.as_mut_ptr() as u64,
                    ..Default::default()
                };
                ioctl(fd, nsvm::DRM_IOCTL_NSVM_SNAPSHOT, &mut a)
            }
            5 => {
                let mut a = sys::drm_nsvm_set_attr {
                    size: nsvm::size_of_u32::<sys::drm_nsvm_set_attr>(),
                    start: m.addr() + rng.below(64) * PAGE as u64,
                    length: PAGE as u64,
                    preferred: 2,
                    migrate_on_fault: 1,
                    ..Default::default()
                };
                ioctl(fd, nsvm::DRM_IOCTL_NSVM_SET_ATTR, &mut a)
            }
            _ => {
                // A whole file: open, bind, close.
                // SAFETY: A plain open of the render node.
                let f = unsafe { libc::open(c"/dev/dri/renderD128".as_ptr(), libc::O_RDWR) };
                if f < 0 {
                    std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
                } else {
                    let mut a = sys::drm_nsvm_svm_init {
                        size: nsvm::size_of_u32::<sys::drm_nsvm_svm_init>(),
                        ..Default::default()
                    };
                    let e = ioctl(f, nsvm::DRM_IOCTL_NSVM_SVM_INIT, &mut a);
                    // SAFETY: Our fd.
                    unsafe { libc::close(f) };
                    e
                }
            }
        };
        make_it_fail(false);
        results.push((op, errno));
    }
    for dir in [FAILSLAB, FAIL_PAGE_ALLOC] {
        knob(&format!("{dir}/probability"), "0")?;
    }
    for &(op, errno) in &results {
        *seen.entry((op, errno)).or_default() += 1;
    }
    println!("fault injection: seed {seed:#x}, {rounds} rounds; (op, errno) -> count: {seen:?}");
    let documented = [0, libc::ENOMEM, libc::EFAULT, libc::EBUSY, libc::EINTR];
    for &(op, errno) in &results {
        check!(
            documented.contains(&errno),
            "op {op}: undocumented errno {errno} under injection"
        );
    }
    check!(
        results.iter().any(|&(_, e)| e != 0),
        "no injected failure reached an ioctl"
    );
    // Without injection: everything works, the data is the CPU's.
    cpu_fill(&mut m, 8);
    check!(gpu_read(&dev, m.addr(), len)? == pattern(8, len));
    check_eq!(dev.migrate(m.addr(), len as u64, Mem::Device)?.failed, 0);
    check!(m.bytes() == pattern(8, len).as_slice());
    Ok(())
}

// ---- out of memory ----

/// The guest runs out of memory on purpose between `begin` and drop: the
/// marks go to the kernel log, where scripts/report.py accepts OOM-killer
/// reports inside them and nowhere else. The test task itself is exempt
/// from the OOM killer meanwhile; its children set their own score.
struct OomWindow;

impl OomWindow {
    fn begin() -> Result<Self, Outcome> {
        kmsg("nsvm-igt: expected OOM begins")?;
        let w = Self;
        oom_score_adj(-1000)?;
        Ok(w)
    }
}

impl Drop for OomWindow {
    fn drop(&mut self) {
        let _ = oom_score_adj(0);
        let _ = kmsg("nsvm-igt: expected OOM ends");
    }
}

fn kmsg(msg: &str) -> Result<(), Outcome> {
    knob("/dev/kmsg", msg)
}

fn oom_score_adj(v: i32) -> Result<(), Outcome> {
    knob("/proc/self/oom_score_adj", &v.to_string())
}

/// Touches anonymous memory until the OOM killer ends this process.
fn hog() -> ! {
    let _ = oom_score_adj(1000);
    loop {
        let len = 64 << 20;
        // SAFETY: A fresh private mapping, leaked on purpose.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            continue;
        }
        for off in (0..len).step_by(PAGE) {
            // SAFETY: Inside the mapping.
            unsafe { p.cast::<u8>().add(off).write_volatile(1) };
        }
    }
}

/// Forks `f` (which tells the parent it is ready through [`ready`], then
/// hogs memory or waits to be killed) and expects the OOM killer to end it.
fn oom_killed_child(f: impl FnOnce(i32) -> i32) -> Result<(), Outcome> {
    let (pid, started) = fork_ready(f)?;
    let mut st = 0;
    // SAFETY: Our child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    check!(
        started,
        "the child failed before it was ready (status {st:#x})"
    );
    check!(
        libc::WIFSIGNALED(st) && libc::WTERMSIG(st) == libc::SIGKILL,
        "the child was not OOM-killed (status {st:#x})"
    );
    Ok(())
}

/// The OOM victim holds 16 MiB in device memory and has a thread running
/// EXECs and MIGRATEs when the killer (and its reaper, which invalidates
/// without blocking) takes its address space. Its device memory comes
/// back, and the device works for the next process.
fn oom_victim_holds_vram() -> TestResult {
    let before = vram_used_settled(0)?;
    {
        let _w = OomWindow::begin()?;
        oom_killed_child(|wfd| {
            let _ = oom_score_adj(1000);
            let Ok(dev) = bound(0) else { return 2 };
            let len = 16 << 20;
            let mut m = Map::new(len, RW);
            cpu_fill(&mut m, 21);
            if !dev
                .migrate(m.addr(), len as u64, Mem::Device)
                .is_ok_and(|mv| mv.failed == 0)
            {
                return 3;
            }
            let dev = Arc::new(dev);
            let (d, addr) = (dev.clone(), m.addr());
            std::thread::spawn(move || {
                let mut out = vec![0u8; PAGE];
                for i in 0u64.. {
                    let a = addr + (i % 4096) * PAGE as u64;
                    let _ = d.exec(&mut [Cmd::read(out.as_mut_ptr() as u64, a, PAGE as u64)]);
                    let _ = d.exec(&mut [Cmd::fill(a, PAGE as u64, i)]);
                    let to = if i % 2 == 0 { Mem::System } else { Mem::Device };
                    let _ = d.migrate(addr + (i % 8) * MB2 as u64, MB2 as u64, to);
                }
            });
            ready(wfd);
            hog()
        })?;
    }
    check_eq!(vram_stat(0, "pages_used")?, before);
    let dev = bound(0)?;
    let len = 4 << 20;
    let mut m = Map::new(len, RW);
    cpu_fill(&mut m, 22);
    check_eq!(dev.migrate(m.addr(), len as u64, Mem::Device)?.failed, 0);
    check!(gpu_read(&dev, m.addr(), len)? == pattern(22, len));
    check!(m.bytes() == pattern(22, len).as_slice());
    Ok(())
}

/// Another process runs the guest out of memory while this one holds
/// 16 MiB in device memory: the killer takes the hog, and this process's
/// data is where it was and intact, for the GPU and for the CPU.
fn oom_bystander_keeps_vram() -> TestResult {
    let dev = bound(0)?;
    let len = 16 << 20;
    let mut m = Map::new(len, RW);
    cpu_fill(&mut m, 23);
    check_eq!(dev.migrate(m.addr(), len as u64, Mem::Device)?.failed, 0);
    let resident = count(
        &cpu_states(&dev, m.addr(), len / PAGE)?,
        sys::DRM_NSVM_PTE_DEVICE,
    );
    check_eq!(resident, len / PAGE);
    {
        let _w = OomWindow::begin()?;
        oom_killed_child(|wfd| {
            ready(wfd);
            hog()
        })?;
    }
    let after = count(
        &cpu_states(&dev, m.addr(), len / PAGE)?,
        sys::DRM_NSVM_PTE_DEVICE,
    );
    check_eq!(after, resident);
    check!(gpu_read(&dev, m.addr(), len)? == pattern(23, len));
    check!(m.bytes() == pattern(23, len).as_slice());
    Ok(())
}

igt_main! {
    "fuzz-ioctls" => fuzz_ioctls,
    "stress-model" => stress_model,
    "stress-model-procs" => stress_model_procs,
    "sigkill-mid-work" => sigkill_mid_work,
    "isolation-fork" => isolation_fork,
    "no-kernel-pointers" => no_kernel_pointers,
    "render-node-permissions" => render_node_permissions,
    "fault-injection" => fault_injection,
    "oom-victim-holds-vram" => oom_victim_holds_vram,
    "oom-bystander-keeps-vram" => oom_bystander_keeps_vram,
}
