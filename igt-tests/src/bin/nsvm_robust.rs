// SPDX-License-Identifier: MIT

//! nsvm_robust: the edges of the uapi. Addresses and lengths at the user
//! address limit (`TASK_SIZE`) and beyond it on every ioctl that takes
//! them, GPU faults on memory whose fault handler drops the mmap lock
//! (userfaultfd), EXECs under an invalidation storm and under signals,
//! best-effort fault-around, write access only where the GPU writes, and
//! the device's own exclusive access surviving its fault-around.

use std::{
    io::Write,
    os::fd::AsRawFd,
    ptr,
    sync::{
        atomic::{
            AtomicBool,
            Ordering::Relaxed, //
        },
        Arc,
    },
    time::{
        Duration,
        Instant, //
    },
};

use nsvm_igt_tests::{check, check_eq, igt_main, skip, svm::*, Outcome, TestResult};
use nsvm_uapi::{self as nsvm, sys, Attr, Cmd, Device, Mem};

const PAGE64: u64 = PAGE as u64;
const MB2_64: u64 = MB2 as u64;

// ---- the user address limit ----

/// The user address limit the device reports: `TASK_SIZE`, the end of the
/// last page below `2^VA_BITS`.
fn task_size(dev: &Device) -> Result<u64, Outcome> {
    let bits = dev.get_param(sys::DRM_NSVM_PARAM_VA_BITS)?;
    check!((47..=56).contains(&bits), "VA_BITS {bits}");
    Ok((1u64 << bits) - PAGE64)
}

/// Whether `[start, start + len)` lies below the limit `ts` (without
/// wrapping).
fn fits(ts: u64, start: u64, len: u64) -> bool {
    start <= ts && len <= ts - start
}

/// Start addresses at the edges: low pages, around 2 MiB, the limit, 2^47,
/// 2^63 and the top of the 64-bit space.
fn edge_starts(ts: u64) -> Vec<u64> {
    vec![
        0,
        PAGE64,
        MB2_64 - PAGE64,
        MB2_64,
        MB2_64 + PAGE64,
        ts - MB2_64,
        ts - PAGE64,
        ts,
        ts + PAGE64,
        1 << 47,
        1 << 63,
        0u64.wrapping_sub(MB2_64),
        0u64.wrapping_sub(PAGE64),
    ]
}

/// Lengths for `start`: small ones, and those whose sum with `start` lands
/// exactly on the limit or on 2^64, or one page past either.
fn edge_lens(ts: u64, start: u64) -> Vec<u64> {
    let to_top = 0u64.wrapping_sub(start);
    vec![
        0,
        PAGE64,
        MB2_64,
        MB2_64 + PAGE64,
        ts.wrapping_sub(start),
        ts.wrapping_sub(start).wrapping_add(PAGE64),
        to_top,
        to_top.wrapping_add(PAGE64),
    ]
}

/// Runs `f` on every start of [`edge_starts`] with every length of
/// [`edge_lens`] for it; returns how many pairs it tried.
fn at_the_edges(ts: u64, mut f: impl FnMut(u64, u64) -> TestResult) -> Result<usize, Outcome> {
    let mut tried = 0;
    for start in edge_starts(ts) {
        for len in edge_lens(ts, start) {
            f(start, len)?;
            tried += 1;
        }
    }
    Ok(tried)
}

/// The errno of an ioctl result.
fn err_of<T>(r: nsvm::Result<T>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.errno,
    }
}

/// GET_PARAM's VA_BITS is the process's limit: a mapping can end exactly
/// at `TASK_SIZE`, and none can start there.
fn va_limit() -> TestResult {
    let dev = bound(0)?;
    let ts = task_size(&dev)?;
    drop(map_top(ts)?);
    check!(Map::at(ts, PAGE, RW).is_none(), "a page mapped at {ts:#x}");
    Ok(())
}

/// 16 pages ending at the limit; skips when something lives there.
fn map_top(ts: u64) -> Result<Map, Outcome> {
    match Map::at(ts - 16 * PAGE64, 16 * PAGE, RW) {
        Some(m) => Ok(m),
        None => skip!("the top 64 KiB below {ts:#x} are in use"),
    }
}

/// Memory right below the limit is memory like any other: the GPU reads,
/// writes and runs atomics on it, MIGRATE moves it to device memory and
/// back, SNAPSHOT reports it, and a migrate-on-fault policy over the last
/// 2 MiB (its fault window ends at the limit) serves a GPU fault there.
fn top_of_address_space() -> TestResult {
    let dev = bound(0)?;
    let ts = task_size(&dev)?;
    let mut m = map_top(ts)?;
    cpu_fill(&mut m, 3);
    let last = ts - PAGE64;
    check_eq!(gpu_read(&dev, m.addr(), m.len)?, pattern(3, m.len));
    exec(
        &dev,
        &mut [
            Cmd::fill(last, PAGE64, 0x0101_0101_0101_0101),
            Cmd::add64(ts - 8, 1),
        ],
    )?;
    let page = &m.bytes()[15 * PAGE..];
    check!(page[..PAGE - 8].iter().all(|&b| b == 1));
    check_eq!(
        u64::from_le_bytes(page[PAGE - 8..].try_into().unwrap()),
        0x0101_0101_0101_0102
    );
    let s = cpu_states(&dev, m.addr(), 16)?;
    check!(s
        .iter()
        .all(|&b| u32::from(b) & sys::DRM_NSVM_PTE_VALID != 0));
    check_eq!(states(&dev, last, 1)?.len(), 1);

    let moved = dev.migrate(m.addr(), m.len as u64, Mem::Device)?;
    check_eq!(moved.migrated, 16);
    check_eq!(
        count(&cpu_states(&dev, m.addr(), 16)?, sys::DRM_NSVM_PTE_DEVICE),
        16
    );
    check_eq!(
        dev.migrate(m.addr(), m.len as u64, Mem::System)?.migrated,
        16
    );

    // The last 2 MiB prefer device memory and migrate on GPU faults.
    dev.set_attr(
        ts - MB2_64,
        MB2_64,
        Attr {
            preferred: sys::DRM_NSVM_LOCATION_DEVICE,
            migrate_on_fault: true,
            ..Default::default()
        },
    )?;
    // A fresh mapping: the GPU faults on it.
    drop(m);
    let mut m = map_top(ts)?;
    cpu_fill(&mut m, 4);
    exec(&dev, &mut [Cmd::fill(last, 8, 7)])?;
    check_eq!(
        count(&cpu_states(&dev, m.addr(), 16)?, sys::DRM_NSVM_PTE_DEVICE),
        16
    );
    check_eq!(&m.bytes()[15 * PAGE..15 * PAGE + 8], &7u64.to_le_bytes());
    Ok(())
}

/// The reproducer of the issue that made this suite: EINVAL, and the
/// device goes on working.
fn still_works(dev: &Device) -> TestResult {
    let mut m = Map::new(4 * PAGE, RW);
    cpu_fill(&mut m, 9);
    check_eq!(gpu_read(dev, m.addr(), 4 * PAGE)?, pattern(9, 4 * PAGE));
    Ok(())
}

/// MIGRATE: a range that does not lie below the limit is EINVAL, before
/// any arithmetic on it; one that does is not (nothing is mapped there).
fn beyond_limit_migrate() -> TestResult {
    let dev = bound(0)?;
    let ts = task_size(&dev)?;
    // The 2 MiB step at the top of the 64-bit space used to overflow.
    check_eq!(
        err_of(dev.migrate(0xffff_ffff_ffe0_0000, PAGE64, Mem::Device)),
        libc::EINVAL
    );
    let tried = at_the_edges(ts, |start, len| {
        let want = if len == 0
            || len > sys::DRM_NSVM_MIGRATE_MAX_LEN
            || len % PAGE64 != 0
            || !fits(ts, start, len)
        {
            libc::EINVAL
        } else {
            0
        };
        for to in [Mem::Device, Mem::System] {
            let got = err_of(dev.migrate(start, len, to));
            check_eq!(got, want, "MIGRATE {start:#x} + {len:#x}");
        }
        Ok(())
    })?;
    println!("{tried} MIGRATE ranges at the edges");
    still_works(&dev)
}

/// SNAPSHOT, of the GPU and of the CPU side: likewise.
fn beyond_limit_snapshot() -> TestResult {
    let dev = bound(0)?;
    let ts = task_size(&dev)?;
    let mut buf = vec![0u8; sys::DRM_NSVM_SNAPSHOT_MAX_PAGES as usize];
    let snap = |start: u64, npages: u64, flags: u32, buf: &mut Vec<u8>| {
        let mut arg = sys::drm_nsvm_snapshot {
            size: nsvm::size_of_u32::<sys::drm_nsvm_snapshot>(),
            flags,
            start,
            npages,
            states: buf.as_mut_ptr() as u64,
            ..Default::default()
        };
        // SAFETY: `buf` holds DRM_NSVM_SNAPSHOT_MAX_PAGES bytes, more than
        // any accepted `npages`.
        err_of(unsafe {
            nsvm::raw_ioctl(
                dev.file(),
                nsvm::DRM_IOCTL_NSVM_SNAPSHOT,
                (&raw mut arg).cast(),
            )
        })
    };
    check_eq!(
        snap(
            0xffff_ffff_fc00_0000,
            1,
            sys::DRM_NSVM_SNAPSHOT_CPU,
            &mut buf
        ),
        libc::EINVAL
    );
    let tried = at_the_edges(ts, |start, len| {
        let npages = len / PAGE64;
        let want = if npages > u64::from(sys::DRM_NSVM_SNAPSHOT_MAX_PAGES)
            || !fits(ts, start, npages * PAGE64)
        {
            libc::EINVAL
        } else {
            0
        };
        for flags in [0, sys::DRM_NSVM_SNAPSHOT_CPU] {
            let got = snap(start, npages, flags, &mut buf);
            check_eq!(
                got,
                want,
                "SNAPSHOT {start:#x} + {npages} pages, flags {flags}"
            );
        }
        Ok(())
    })?;
    println!("{tried} SNAPSHOT ranges at the edges");
    still_works(&dev)
}

/// SET_ATTR, and a GPU fault under a migrate-on-fault policy there (the
/// third way the old overflow was reached): likewise.
fn beyond_limit_set_attr() -> TestResult {
    let dev = bound(0)?;
    let ts = task_size(&dev)?;
    let to_device = Attr {
        preferred: sys::DRM_NSVM_LOCATION_DEVICE,
        migrate_on_fault: true,
        ..Default::default()
    };
    check_eq!(
        err_of(dev.set_attr(0xffff_ffff_ffe0_0000, MB2_64, to_device)),
        libc::EINVAL
    );
    let e = dev
        .exec(&mut [Cmd::fill(0xffff_ffff_ffe0_0000, PAGE64, 1)])
        .unwrap_err();
    check_eq!(e.error, errno(libc::EINVAL));
    let tried = at_the_edges(ts, |start, len| {
        let want = if len == 0 || len % PAGE64 != 0 || !fits(ts, start, len) {
            libc::EINVAL
        } else {
            0
        };
        let got = err_of(dev.set_attr(start, len, to_device));
        check_eq!(got, want, "SET_ATTR {start:#x} + {len:#x}");
        Ok(())
    })?;
    println!("{tried} SET_ATTR ranges at the edges");
    // Below the limit the policy holds, and a GPU fault in the last 2 MiB
    // (nothing mapped) is an unserved fault, not a crash.
    dev.set_attr(ts - MB2_64, MB2_64, to_device)?;
    let e = dev
        .exec(&mut [Cmd::fill(ts - PAGE64, PAGE64, 1)])
        .unwrap_err();
    check_eq!(e.error, errno(libc::EFAULT));
    check_eq!(e.fault_addr, ts - PAGE64);
    still_works(&dev)
}

/// EXEC: every operand of every op is checked against the limit (EINVAL
/// for the whole list, nothing runs); below it, an unmapped operand is an
/// unserved fault.
fn beyond_limit_exec() -> TestResult {
    let dev = bound(0)?;
    let ts = task_size(&dev)?;
    let mut m = Map::new(4 * PAGE, RW);
    cpu_fill(&mut m, 5);
    let ok = m.addr();
    let max = u64::from(sys::DRM_NSVM_CMD_MAX_LEN);
    let mut out = vec![0u8; 4 * PAGE];
    let tried = at_the_edges(ts, |start, len| {
        // (command, whether its operands lie below the limit)
        let cmds = [
            (Cmd::fill(start, len, 1), fits(ts, start, len)),
            (
                Cmd::copy(start, ok, len),
                fits(ts, start, len) && fits(ts, ok, len),
            ),
            (
                Cmd::copy(ok, start, len),
                fits(ts, start, len) && fits(ts, ok, len),
            ),
            (
                Cmd::read(start, ok, len),
                fits(ts, start, len) && fits(ts, ok, len),
            ),
            (
                Cmd::read(out.as_mut_ptr() as u64, start, len.min(4 * PAGE64)),
                fits(ts, start, len.min(4 * PAGE64)),
            ),
            (
                Cmd::axpy32(start, 2, ok, len),
                fits(ts, start, len) && fits(ts, ok, len),
            ),
            // The atomics' operands end at `start`.
            (
                Cmd::add32(start.wrapping_sub(4), 1),
                fits(ts, start.wrapping_sub(4), 4),
            ),
            (
                Cmd::add64(start.wrapping_sub(8), 1),
                fits(ts, start.wrapping_sub(8), 8),
            ),
        ];
        for (cmd, inside) in cmds {
            let overlap = matches!(cmd.op, sys::DRM_NSVM_OP_COPY | sys::DRM_NSVM_OP_AXPY32)
                && cmd.src.max(cmd.dst) - cmd.src.min(cmd.dst) < cmd.len;
            let got = dev.exec(&mut [cmd]).err().map_or(0, |e| e.error.errno);
            if !inside || cmd.len > max {
                check_eq!(got, libc::EINVAL, "{cmd:?}");
            } else if !overlap {
                check!(got == 0 || got == libc::EFAULT, "{cmd:?}: errno {got}");
            }
        }
        Ok(())
    })?;
    // One bad command fails the whole list before anything runs.
    let e = dev
        .exec(&mut [Cmd::fill(ok, 8, 0), Cmd::fill(ts, PAGE64, 0)])
        .unwrap_err();
    check_eq!((e.error.errno, e.completed), (libc::EINVAL, 0));
    check_eq!(&m.bytes()[..8], &pattern(5, 8)[..]);
    println!("{tried} ranges at the edges, 8 commands each");
    still_works(&dev)
}

// ---- userfaultfd ----

/// `_IOWR(0xAA, nr, size)`.
const fn uffd_ioc(nr: u32, size: usize) -> u64 {
    nsvm::ioc(3, 0xaa, nr, size)
}

#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioRegister {
    start: u64,
    len: u64,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}

#[repr(C)]
struct UffdMsg {
    event: u8,
    _reserved: [u8; 7],
    flags: u64,
    address: u64,
    _feat: u64,
}

const UFFDIO_API: u64 = uffd_ioc(0x3f, size_of::<UffdioApi>());
const UFFDIO_REGISTER: u64 = uffd_ioc(0x00, size_of::<UffdioRegister>());
const UFFDIO_COPY: u64 = uffd_ioc(0x03, size_of::<UffdioCopy>());
const UFFD_API: u64 = 0xaa;
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;
const UFFD_EVENT_PAGEFAULT: u8 = 0x12;

/// A userfaultfd over `m` in missing mode.
fn uffd_register(m: &Map) -> Result<i32, Outcome> {
    // SAFETY: Plain syscall.
    let fd =
        unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) } as i32;
    if fd < 0 {
        skip!("no userfaultfd: {}", std::io::Error::last_os_error());
    }
    let mut api = UffdioApi {
        api: UFFD_API,
        features: 0,
        ioctls: 0,
    };
    // SAFETY: Valid arguments for the userfaultfd ioctls.
    unsafe {
        check_eq!(libc::ioctl(fd, UFFDIO_API as _, &raw mut api), 0);
        let mut reg = UffdioRegister {
            start: m.addr(),
            len: m.len as u64,
            mode: UFFDIO_REGISTER_MODE_MISSING,
            ioctls: 0,
        };
        check_eq!(libc::ioctl(fd, UFFDIO_REGISTER as _, &raw mut reg), 0);
    }
    Ok(fd)
}

/// Serves the missing-page faults of `uffd` with `pattern(seed + page
/// index from base)` until `stop`; returns how many it served.
fn uffd_serve(uffd: i32, base: u64, seed: u64, stop: &AtomicBool) -> u64 {
    let mut served = 0;
    while !stop.load(Relaxed) {
        let mut pfd = libc::pollfd {
            fd: uffd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: One pollfd.
        if unsafe { libc::poll(&mut pfd, 1, 20) } <= 0 {
            continue;
        }
        // SAFETY: All-zero bytes are a valid `UffdMsg`.
        let mut msg: UffdMsg = unsafe { std::mem::zeroed() };
        // SAFETY: Reads one message into `msg`.
        let n = unsafe { libc::read(uffd, (&raw mut msg).cast(), size_of::<UffdMsg>()) };
        if n != size_of::<UffdMsg>() as isize || msg.event != UFFD_EVENT_PAGEFAULT {
            continue;
        }
        let page = msg.address & !(PAGE64 - 1);
        let data = pattern(seed + (page - base) / PAGE64, PAGE);
        let mut copy = UffdioCopy {
            dst: page,
            src: data.as_ptr() as u64,
            len: PAGE64,
            mode: 0,
            copy: 0,
        };
        // SAFETY: `data` is a page; the kernel checks `dst`.
        if unsafe { libc::ioctl(uffd, UFFDIO_COPY as _, &raw mut copy) } == 0 {
            served += 1;
        }
    }
    served
}

/// A GPU read of memory registered with userfaultfd (missing mode) is
/// served by the process's handler thread, as a CPU access would be: the
/// GPU sees the handler's data, and no kernel warning is printed.
fn userfaultfd_read() -> TestResult {
    let dev = bound(0)?;
    let m = aligned_to(16 * PAGE, 16 * PAGE);
    madvise(&m, libc::MADV_NOHUGEPAGE);
    let uffd = uffd_register(&m)?;
    let stop = Arc::new(AtomicBool::new(false));
    let base = m.addr();
    let handler = {
        let stop = stop.clone();
        std::thread::spawn(move || uffd_serve(uffd, base, 40, &stop))
    };
    let got = gpu_read(&dev, m.addr() + PAGE64, 3 * PAGE);
    // The rest from the GPU too, across several faults.
    let all = gpu_read(&dev, m.addr(), 16 * PAGE);
    stop.store(true, Relaxed);
    let served = handler.join().unwrap_or(0);
    // SAFETY: Our descriptor.
    unsafe { libc::close(uffd) };
    let got = got?;
    let all = all?;
    let want: Vec<u8> = (0..16).flat_map(|i| pattern(40 + i, PAGE)).collect();
    check!(
        got == want[PAGE..4 * PAGE],
        "the GPU did not see the handler's data"
    );
    check!(all == want, "the GPU did not see the handler's data");
    check_eq!(served, 16);
    check!(m.bytes() == &want[..]);
    Ok(())
}

// ---- invalidation storms ----

/// One EXEC as a plain ioctl: (errno or 0, completed).
fn raw_exec_list(fd: i32, cmds: &mut [Cmd]) -> (i32, u32) {
    let mut arg = sys::drm_nsvm_exec {
        size: nsvm::size_of_u32::<sys::drm_nsvm_exec>(),
        num_cmds: cmds.len() as u32,
        cmds: cmds.as_mut_ptr() as u64,
        cmd_size: nsvm::size_of_u32::<Cmd>(),
        ..Default::default()
    };
    // SAFETY: `arg` and the commands outlive the call.
    let r = unsafe { libc::ioctl(fd, nsvm::DRM_IOCTL_NSVM_EXEC as _, &raw mut arg) };
    let e = if r == 0 {
        0
    } else {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    };
    (e, arg.completed)
}

/// A memfd of `len` bytes, filled with `seed`'s pattern.
fn memfd(len: usize, seed: u64) -> Result<i32, Outcome> {
    // SAFETY: Plain syscalls on a new descriptor.
    let fd = unsafe { libc::memfd_create(c"nsvm-storm".as_ptr(), 0) };
    check!(fd >= 0);
    let data = pattern(seed, len);
    // SAFETY: As above; `data` is `len` bytes.
    check_eq!(
        unsafe { libc::pwrite(fd, data.as_ptr().cast(), len, 0) },
        len as isize
    );
    Ok(fd)
}

/// `MAP_SHARED` of `len` bytes of `fd`.
fn map_shared(fd: i32, len: usize) -> Map {
    // SAFETY: A fresh shared mapping of our own file.
    let p = unsafe { libc::mmap(ptr::null_mut(), len, RW, libc::MAP_SHARED, fd, 0) };
    assert_ne!(p, libc::MAP_FAILED, "mmap");
    Map { ptr: p.cast(), len }
}

/// Punches `[0, len)` out of the memfd `fd` in a loop, in a child process,
/// until it is killed: every punch invalidates every mapping of the file.
/// Returns the child's pid.
fn punch_storm(fd: i32, len: usize) -> Result<i32, Outcome> {
    let (pid, started) = fork_ready(|wfd| {
        ready(wfd);
        loop {
            // SAFETY: Our memfd.
            unsafe {
                libc::fallocate(
                    fd,
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    0,
                    len as i64,
                );
            }
        }
    })?;
    check!(started);
    Ok(pid)
}

fn kill_wait(pid: i32) {
    // SAFETY: Our child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, ptr::null_mut(), 0);
    }
}

/// A sibling thread maps fresh memory over a buffer in a loop while the
/// GPU reads it, invalidating it over and over: each EXEC still ends
/// within a bound, completing or with EBUSY when invalidations keep
/// undoing its faults. Then another process punches a file under a shared
/// mapping the GPU reads (a storm that its death does not stop, and during
/// which every fault waits for a punch): SIGKILL ends the process in the
/// middle of an EXEC at once.
fn exec_invalidation_storm() -> TestResult {
    const LEN: usize = 16 * PAGE;
    let dev = bound(0)?;
    let m = Map::new(LEN, RW);
    let addr = m.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let remapper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Relaxed) {
                // SAFETY: Replaces our own mapping with fresh memory.
                let p = unsafe {
                    libc::mmap(
                        addr as *mut _,
                        LEN,
                        RW,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                        -1,
                        0,
                    )
                };
                assert_eq!(p as u64, addr);
                n += 1;
            }
            n
        })
    };
    let mut out = vec![0u8; LEN];
    let mut worst = Duration::ZERO;
    let mut seen = std::collections::BTreeMap::new();
    let mut bad = None;
    for _ in 0..10 {
        let t = Instant::now();
        let (e, _) = raw_exec_list(
            dev.file().as_raw_fd(),
            &mut [Cmd::read(out.as_mut_ptr() as u64, addr, LEN as u64)],
        );
        worst = worst.max(t.elapsed());
        *seen.entry(e).or_insert(0) += 1;
        if e != 0 && e != libc::EBUSY {
            bad = Some(e);
        }
    }
    stop.store(true, Relaxed);
    let remaps = remapper.join().unwrap_or(0);
    println!("10 EXECs over {remaps} remaps: (errno -> count) {seen:?}, longest {worst:?}");
    check!(bad.is_none(), "EXEC under a storm: errno {bad:?}");
    check!(worst < Duration::from_secs(10), "an EXEC took {worst:?}");
    drop(m);

    let fd = memfd(LEN, 1)?;
    let storm = punch_storm(fd, LEN)?;
    let res = (|| {
        let (pid, started) = fork_ready(|wfd| {
            let Ok(dev) = bound(0) else { return 1 };
            let m = map_shared(fd, LEN);
            let mut out = vec![0u8; LEN];
            ready(wfd);
            loop {
                raw_exec_list(
                    dev.file().as_raw_fd(),
                    &mut [Cmd::read(out.as_mut_ptr() as u64, m.addr(), LEN as u64)],
                );
            }
        })?;
        check!(started);
        std::thread::sleep(Duration::from_millis(300));
        let t = Instant::now();
        kill_wait(pid);
        let took = t.elapsed();
        println!("SIGKILL under a punch storm: the process was gone after {took:?}");
        check!(took < Duration::from_millis(500), "SIGKILL took {took:?}");
        Ok(())
    })();
    kill_wait(storm);
    res
}

// ---- signals ----

extern "C" fn on_usr1(_: i32) {}

/// A no-op SIGUSR1 handler without SA_RESTART.
fn catch_usr1() -> TestResult {
    // SAFETY: Installs a handler that does nothing.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_usr1 as *const () as usize;
        check_eq!(libc::sigaction(libc::SIGUSR1, &sa, ptr::null_mut()), 0);
    }
    Ok(())
}

/// 1024 FILLs of 16 MiB over memory the GPU already maps (seconds of
/// work): an EXEC with no fault at all to stall on.
fn mapped_fills(dev: &Device) -> Result<(Map, Vec<Cmd>), Outcome> {
    const LEN: usize = 16 << 20;
    let m = Map::new(LEN, RW);
    exec(dev, &mut [Cmd::fill(m.addr(), LEN as u64, 1)])?;
    let cmds = (0..sys::DRM_NSVM_EXEC_MAX_CMDS)
        .map(|i| Cmd::fill(m.addr(), LEN as u64, u64::from(i)))
        .collect();
    Ok((m, cmds))
}

/// A signal stops an EXEC whose commands never fault (EINTR, promptly:
/// within one lock run, not after the command or the list); exit_group()
/// and SIGKILL end a process with a thread in one at once.
fn exec_signal_mapped() -> TestResult {
    const BOUND: Duration = Duration::from_secs(1);
    catch_usr1()?;
    let dev = Arc::new(bound(0)?);
    let (m, mut cmds) = mapped_fills(&dev)?;
    let faults = dev.counters()?.faults;
    let fd = dev.file().as_raw_fd();
    let t = Instant::now();
    let runner = std::thread::spawn(move || {
        let r = raw_exec_list(fd, &mut cmds);
        (r, Instant::now())
    });
    std::thread::sleep(Duration::from_millis(300));
    let sent = Instant::now();
    // SAFETY: Signals the EXEC thread.
    unsafe {
        libc::pthread_kill(
            std::os::unix::thread::JoinHandleExt::as_pthread_t(&runner) as libc::pthread_t,
            libc::SIGUSR1,
        )
    };
    let ((e, completed), done) = runner
        .join()
        .map_err(|_| Outcome::Fail("EXEC thread".into()))?;
    let after = done.saturating_duration_since(sent);
    println!(
        "SIGUSR1 after {:?}: errno {e}, {completed} of 1024 completed, returned {after:?} after the signal",
        sent - t
    );
    check_eq!(e, libc::EINTR, "({completed} completed)");
    check!(completed < 1024);
    check!(after < BOUND, "EXEC returned {after:?} after the signal");
    check_eq!(dev.counters()?.faults, faults, "the commands faulted");
    drop(m);

    // exit_group() with a thread in such an EXEC, and SIGKILL.
    for how in ["exit_group", "SIGKILL"] {
        let (pid, started) = fork_ready(|wfd| {
            let Ok(dev) = bound(0) else { return 1 };
            let Ok((_m, mut cmds)) = mapped_fills(&dev) else {
                return 1;
            };
            let fd = dev.file().as_raw_fd();
            let _t = std::thread::spawn(move || raw_exec_list(fd, &mut cmds));
            std::thread::sleep(Duration::from_millis(300));
            ready(wfd);
            if how == "exit_group" {
                // SAFETY: Ends the whole process, the EXEC thread included.
                unsafe { libc::_exit(0) };
            }
            std::thread::sleep(Duration::from_secs(60));
            0
        })?;
        check!(started);
        let t = Instant::now();
        if how == "SIGKILL" {
            // SAFETY: Our child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        // SAFETY: Our child.
        unsafe { libc::waitpid(pid, ptr::null_mut(), 0) };
        let took = t.elapsed();
        println!("{how} with a thread in EXEC: gone after {took:?}");
        check!(took < BOUND, "{how} took {took:?}");
    }
    Ok(())
}

// ---- fault-around ----

/// Reads the first byte of `addr` from the CPU.
fn touch(addr: u64) -> u8 {
    // SAFETY: The caller's mapping is readable there.
    unsafe { ptr::read_volatile(addr as *const u8) }
}

/// The `[vvar]` mapping of this process.
fn vvar() -> Option<(u64, u64)> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let line = maps.lines().find(|l| l.ends_with("[vvar]"))?;
    let range = line.split(' ').next()?;
    let (a, b) = range.split_once('-')?;
    Some((
        u64::from_str_radix(a, 16).ok()?,
        u64::from_str_radix(b, 16).ok()?,
    ))
}

/// Fault-around is best effort: a GPU read of a page the CPU maps
/// succeeds when neighbours in its 64 KiB span cannot be faulted (pages
/// of a one-page file past its end, [vvar] pages, which refuse remote
/// faults); only the faulting page's own failure fails the access.
fn fault_around_best_effort() -> TestResult {
    let dev = bound(0)?;
    let path = "/tmp/nsvm-one-page";
    let mut f = temp_file(path)?;
    f.write_all(&pattern(7, PAGE))?;
    let hole = aligned_to(16 * PAGE, 16 * PAGE);
    // SAFETY: Maps the file over our own aligned mapping: 16 pages of a
    // one-page file, the last 15 past its end.
    let p = unsafe {
        libc::mmap(
            hole.ptr.cast(),
            16 * PAGE,
            libc::PROT_READ,
            libc::MAP_SHARED | libc::MAP_FIXED,
            f.as_raw_fd(),
            0,
        )
    };
    check!(p == hole.ptr.cast());
    let _ = std::fs::remove_file(path);
    touch(hole.addr());
    check_eq!(
        gpu_read(&dev, hole.addr(), 64)?,
        pattern(7, PAGE)[..64].to_vec()
    );
    // The page past the end fails on its own.
    let mut out = [0u8; 8];
    let e = dev
        .exec(&mut [Cmd::read(out.as_mut_ptr() as u64, hole.addr() + PAGE64, 8)])
        .unwrap_err();
    check_eq!(
        (e.error.errno, e.fault_addr),
        (libc::EFAULT, hole.addr() + PAGE64)
    );

    match vvar() {
        None => println!("no [vvar] mapping: that part skipped"),
        Some((start, _)) => {
            touch(start);
            let mut out = [0u8; 8];
            exec(&dev, &mut [Cmd::read(out.as_mut_ptr() as u64, start, 8)])?;
            println!("[vvar] page 0 at {start:#x} read by the GPU");
        }
    }
    Ok(())
}

/// A GPU write fault asks for write access only where the GPU writes: an
/// AXPY32 whose x (read) and y (written) lie in one fault window leaves
/// x's never-written pages read-only (still the shared zero page).
fn write_fault_span() -> TestResult {
    let dev = bound(0)?;
    let m = aligned(MB2);
    madvise(&m, libc::MADV_NOHUGEPAGE);
    let (x, y) = (m.addr(), m.addr() + (64 << 10));
    exec(&dev, &mut [Cmd::axpy32(y, 3, x, 64 << 10)])?;
    let cpu = cpu_states(&dev, x, 32)?;
    let gpu = states(&dev, x, 32)?;
    let (valid, write) = (sys::DRM_NSVM_PTE_VALID, sys::DRM_NSVM_PTE_WRITE);
    for i in 0..16 {
        let (c, g) = (u32::from(cpu[i]), u32::from(gpu[i]));
        check!(
            c & valid != 0 && c & write == 0,
            "x page {i}: CPU state {c:#x}"
        );
        check!(
            g & valid != 0 && g & write == 0,
            "x page {i}: GPU state {g:#x}"
        );
        let (c, g) = (u32::from(cpu[16 + i]), u32::from(gpu[16 + i]));
        check!(
            c & write != 0 && g & write != 0,
            "y page {i}: CPU {c:#x}, GPU {g:#x}"
        );
    }
    check!(m.bytes()[..128 << 10].iter().all(|&b| b == 0));
    Ok(())
}

/// The GPU's fault-around leaves the device's own exclusive access alone:
/// an atomic on page 1 keeps page 0 atomic-capable, and 1024 atomics over
/// 64 pages end with every page exclusive and no invalidation.
fn exclusive_fault_around() -> TestResult {
    let dev = bound(0)?;
    let mut m = aligned_to(64 * PAGE, 64 << 10);
    madvise(&m, libc::MADV_NOHUGEPAGE);
    m.bytes_mut().fill(0);
    let atomic = sys::DRM_NSVM_PTE_ATOMIC;
    exec(&dev, &mut [Cmd::add32(m.addr(), 1)])?;
    check!(u32::from(states(&dev, m.addr(), 1)?[0]) & atomic != 0);
    let before = dev.counters()?.invalidations;
    exec(&dev, &mut [Cmd::add32(m.addr() + PAGE64, 1)])?;
    let s = states(&dev, m.addr(), 2)?;
    check!(
        s.iter().all(|&b| u32::from(b) & atomic != 0),
        "page 0 lost its exclusive access: {s:?}"
    );
    check_eq!(dev.counters()?.invalidations, before);

    let mut cmds: Vec<Cmd> = (0..1024u64)
        .map(|i| Cmd::add32(m.addr() + (i % 64) * PAGE64, 1))
        .collect();
    exec(&dev, &mut cmds)?;
    let s = states(&dev, m.addr(), 64)?;
    let after = dev.counters()?.invalidations;
    println!(
        "{} of 64 pages exclusive after 1024 atomics, {} invalidations",
        count(&s, atomic),
        after - before
    );
    check_eq!(count(&s, atomic), 64);
    check_eq!(after, before);
    for i in 0..64 {
        let v = u32::from_le_bytes(m.bytes()[i * PAGE..i * PAGE + 4].try_into().unwrap());
        check_eq!(v, 16 + u32::from(i < 2), "page {i}");
    }
    Ok(())
}

igt_main! {
    "va-limit" => va_limit,
    "top-of-address-space" => top_of_address_space,
    "beyond-limit-migrate" => beyond_limit_migrate,
    "beyond-limit-snapshot" => beyond_limit_snapshot,
    "beyond-limit-set-attr" => beyond_limit_set_attr,
    "beyond-limit-exec" => beyond_limit_exec,
    "userfaultfd-read" => userfaultfd_read,
    "exec-invalidation-storm" => exec_invalidation_storm,
    "exec-signal-mapped" => exec_signal_mapped,
    "fault-around-best-effort" => fault_around_best_effort,
    "write-fault-span" => write_fault_span,
    "exclusive-fault-around" => exclusive_fault_around,
}
