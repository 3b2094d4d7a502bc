// SPDX-License-Identifier: MIT

//! nsvm_svm: the SVM mirror. Lifetime rules (SVM_INIT, fork, SCM_RIGHTS,
//! exit, close), GPU reads and writes of process memory through EXEC,
//! unserviceable faults, and coherence after munmap, mprotect, madvise and
//! fork-COW, checked with data patterns.

use std::{
    io::Write,
    os::fd::{
        AsRawFd,
        FromRawFd,
        OwnedFd, //
    },
    ptr,
};

use nsvm_igt_tests::{check, check_eq, igt_main, skip, svm::*, Outcome, TestResult};
use nsvm_uapi::{self as nsvm, sys, Cmd, Device, ExecError};

// ---- lifetime rules ----

/// SVM_INIT twice on one file: EBUSY; a second file of the same process binds.
fn double_init() -> TestResult {
    let dev = bound(0)?;
    check_eq!(dev.svm_init(0), Err(errno(libc::EBUSY)));
    let other = open(0)?;
    other.svm_init(0)?;
    Ok(())
}

/// EXEC and SNAPSHOT before SVM_INIT: ENOENT.
fn before_init() -> TestResult {
    let dev = open(0)?;
    let buf = Map::new(PAGE, RW);
    let err = dev.exec(&mut [Cmd::fill(buf.addr(), 8, 1)]).unwrap_err();
    check_eq!(err.error, errno(libc::ENOENT));
    check_eq!(dev.counters(), Err(errno(libc::ENOENT)));
    Ok(())
}

/// Bad SVM_INIT arguments: EINVAL, and the file stays unbound.
fn init_bad_args() -> TestResult {
    let dev = open(0)?;
    let good = nsvm::size_of_u32::<sys::drm_nsvm_svm_init>();
    let cases = [
        sys::drm_nsvm_svm_init {
            size: good - 8,
            ..Default::default()
        },
        sys::drm_nsvm_svm_init {
            size: good,
            flags: 1,
            ..Default::default()
        },
        sys::drm_nsvm_svm_init {
            size: good,
            pad: 1,
            ..Default::default()
        },
        sys::drm_nsvm_svm_init {
            size: good,
            fault_window: 4095,
            ..Default::default()
        },
        sys::drm_nsvm_svm_init {
            size: good,
            fault_window: 3 << 12,
            ..Default::default()
        },
        sys::drm_nsvm_svm_init {
            size: good,
            fault_window: 2 << 30,
            ..Default::default()
        },
    ];
    for mut arg in cases {
        check_eq!(
            dev.svm_init_raw(&mut arg),
            Err(errno(libc::EINVAL)),
            "{arg:?}"
        );
    }
    check_eq!(dev.counters(), Err(errno(libc::ENOENT)));
    dev.svm_init(PAGE as u64)?;
    Ok(())
}

/// An fd inherited by fork: the child's ioctls fail with EPERM and do not
/// touch the parent's memory; the parent is unaffected.
fn fork_child_eperm() -> TestResult {
    let dev = bound(0)?;
    let buf = Map::new(PAGE, RW);
    exec(&dev, &mut [Cmd::fill(buf.addr(), PAGE as u64, 0x1111)])?;
    let st = in_child(|| {
        let e = dev.exec(&mut [Cmd::fill(buf.addr(), PAGE as u64, 0x2222)]);
        let s = dev.counters();
        match (e, s) {
            (Err(e), Err(s)) if e.error == errno(libc::EPERM) && s == errno(libc::EPERM) => 0,
            _ => 1,
        }
    });
    check_eq!(st, 0);
    check!(buf.bytes().iter().step_by(8).all(|&b| b == 0x11));
    check_eq!(
        gpu_read(&dev, buf.addr(), 8)?,
        0x1111u64.to_le_bytes().to_vec()
    );
    Ok(())
}

fn send_fd(sock: &OwnedFd, fd: i32) {
    let mut space = [0u8; 64];
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: A zeroed msghdr is valid; the fields set below point at
    // buffers that outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = space.as_mut_ptr().cast();
    // SAFETY: Pure arithmetic.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(4) } as _;
    // SAFETY: The control buffer is large enough for one fd.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(4) as _;
        ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<i32>(), fd);
        assert_eq!(libc::sendmsg(sock.as_raw_fd(), &msg, 0), 1);
    }
}

fn recv_fd(sock: &OwnedFd) -> OwnedFd {
    let mut space = [0u8; 64];
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: As in send_fd.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = space.as_mut_ptr().cast();
    msg.msg_controllen = space.len() as _;
    // SAFETY: As in send_fd; the kernel wrote one fd.
    unsafe {
        assert_eq!(libc::recvmsg(sock.as_raw_fd(), &mut msg, 0), 1);
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        OwnedFd::from_raw_fd(ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<i32>()))
    }
}

/// An fd passed with SCM_RIGHTS: EPERM while the owner lives, ESRCH once
/// it exited; the receiver's close is clean.
fn scm_rights() -> TestResult {
    let mut sv = [0i32; 2];
    // SAFETY: `sv` receives two fds.
    check_eq!(
        unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, sv.as_mut_ptr()) },
        0
    );
    // SAFETY: Fresh fds, owned from here on.
    let (a, b) = unsafe { (OwnedFd::from_raw_fd(sv[0]), OwnedFd::from_raw_fd(sv[1])) };
    let mut go = [0i32; 2];
    // SAFETY: `go` receives two fds.
    check_eq!(unsafe { libc::pipe(go.as_mut_ptr()) }, 0);

    // SAFETY: The child only uses its own copies and exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let code = (|| {
            let dev = Device::open_render(0).ok()?;
            dev.svm_init(0).ok()?;
            let buf = Map::new(PAGE, RW);
            dev.exec(&mut [Cmd::fill(buf.addr(), PAGE as u64, 7)])
                .ok()?;
            let addr = buf.addr();
            std::mem::forget(buf);
            send_fd(&a, dev.file().as_raw_fd());
            // Tell the parent where our memory is, then wait to be released.
            // SAFETY: Writes 8 bytes from a local.
            unsafe { libc::write(a.as_raw_fd(), (&raw const addr).cast(), 8) };
            let mut x = 0u8;
            // SAFETY: Reads one byte into a local.
            unsafe { libc::read(go[0], (&raw mut x).cast(), 1) };
            Some(())
        })()
        .map_or(1, |()| 0);
        // SAFETY: Ends the child.
        unsafe { libc::_exit(code) };
    }
    let fd = recv_fd(&b);
    let mut addr = 0u64;
    // SAFETY: Reads 8 bytes into a local.
    unsafe { libc::read(b.as_raw_fd(), (&raw mut addr).cast(), 8) };
    let dev = nsvm_fd_device(&fd)?;
    let mut out = vec![0u8; 8];
    // The owner lives: another process is refused.
    let e = dev
        .exec(&mut [Cmd::read(out.as_mut_ptr() as u64, addr, 8)])
        .unwrap_err();
    check_eq!(e.error, errno(libc::EPERM));
    // Nor can it move, inspect or change the policy of the owner's memory.
    check_eq!(
        dev.migrate(addr, PAGE as u64, nsvm::Mem::Device).err(),
        Some(errno(libc::EPERM))
    );
    check_eq!(
        dev.migrate(addr, PAGE as u64, nsvm::Mem::System).err(),
        Some(errno(libc::EPERM))
    );
    check_eq!(
        dev.set_attr(addr, PAGE as u64, nsvm::Attr::default()).err(),
        Some(errno(libc::EPERM))
    );
    let mut st = [0u8; 1];
    check_eq!(
        dev.snapshot_cpu(addr, &mut st).err(),
        Some(errno(libc::EPERM))
    );
    check_eq!(dev.snapshot(addr, &mut st).err(), Some(errno(libc::EPERM)));
    // SAFETY: Releases the child.
    unsafe { libc::write(go[1], [1u8].as_ptr().cast(), 1) };
    let mut st = 0;
    // SAFETY: Our child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    check!(
        libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
        "owner failed: {st:#x}"
    );
    // The owner exited: its address space is gone.
    let mirror = dev;
    let e = mirror
        .exec(&mut [Cmd::read(out.as_mut_ptr() as u64, addr, 8)])
        .unwrap_err();
    check_eq!(e.error, errno(libc::ESRCH));
    check_eq!(mirror.counters(), Err(errno(libc::ESRCH)));
    check_eq!(mirror.svm_init(0), Err(errno(libc::EBUSY)));
    // SAFETY: Closes our ends.
    unsafe {
        libc::close(go[0]);
        libc::close(go[1]);
    }
    drop(mirror);
    drop(fd);
    Ok(())
}

/// A `Device` over the very file behind `fd` (not a new open).
fn nsvm_fd_device(fd: &OwnedFd) -> Result<Device, Outcome> {
    Ok(Device::from_fd(fd.try_clone()?)?)
}

/// The process exits with the fd open and GPU mappings live: the file is
/// released in do_exit after the address space is gone.
fn exit_with_mappings() -> TestResult {
    let st = in_child(|| {
        let Ok(dev) = Device::open_render(0) else {
            return 1;
        };
        if dev.svm_init(0).is_err() {
            return 1;
        }
        let buf = Map::new(4 * MB2, RW);
        if dev
            .exec(&mut [Cmd::fill(buf.addr(), buf.len as u64, 5)])
            .is_err()
        {
            return 1;
        }
        std::mem::forget(buf);
        std::mem::forget(dev);
        0
    });
    check_eq!(st, 0);
    Ok(())
}

/// Many open/INIT/close cycles: no leak (kmemleak at the end of the run),
/// bounded time.
fn init_close_cycles() -> TestResult {
    let path = open(0)?.path().to_path_buf();
    let n: usize = std::env::var("NSVM_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let buf = Map::new(PAGE, RW);
    for i in 0..n {
        let dev = Device::open(&path)?;
        dev.svm_init(0)?;
        if i % 100 == 0 {
            exec(&dev, &mut [Cmd::fill(buf.addr(), 8, i as u64)])?;
        }
    }
    Ok(())
}

/// The only fd is closed while another thread is in EXEC with faults
/// pending: the running EXEC holds the file, which is released when it
/// returns; the thread's next EXEC gets EBADF. Then the same through a dup,
/// where the mirror lives on.
fn close_while_faulting() -> TestResult {
    for round in 0..8u32 {
        let dev = bound(0)?;
        let buf = Map::new(16 * MB2, RW);
        let (addr, fd) = (buf.addr(), dev.file().as_raw_fd());
        let t = std::thread::spawn(move || loop {
            if let Err(e) = raw_exec(fd, Cmd::fill(addr, 16 * MB2 as u64, 1)) {
                return Some(e);
            }
        });
        // SAFETY: Plain sleep.
        unsafe { libc::usleep(round * 3000) };
        drop(dev);
        match t.join() {
            Ok(Some(libc::EBADF)) => {}
            other => {
                return Err(Outcome::Fail(format!(
                    "round {round}: faulting thread: {other:?}"
                )))
            }
        }
    }
    let dev = bound(0)?;
    let dup = nsvm_fd_device(&dev.file().try_clone()?.into())?;
    let buf = Map::new(8 * MB2, RW);
    let addr = buf.addr();
    let t = std::thread::spawn(move || {
        for i in 0..20u64 {
            dup.exec(&mut [Cmd::fill(addr, 8 * MB2 as u64, i)])
                .map_err(|e| e.to_string())?;
        }
        Ok::<_, String>(())
    });
    drop(dev);
    match t.join() {
        Ok(Ok(())) => Ok(()),
        other => Err(Outcome::Fail(format!("faulting thread: {other:?}"))),
    }
}

// ---- data paths ----

/// GPU fill, copy, read and atomics on malloc'd-like memory; the CPU sees
/// what the GPU wrote and the GPU what the CPU wrote.
fn exec_data() -> TestResult {
    let dev = bound(0)?;
    let len = 3 * MB2 + 3 * PAGE + 100;
    let mut a = Map::new(len, RW);
    let b = Map::new(len, RW);
    let src = pattern(1, len);
    a.bytes_mut().copy_from_slice(&src);
    // GPU reads what the CPU wrote.
    check!(gpu_read(&dev, a.addr(), len)? == src);
    // GPU copies; CPU checks.
    exec(
        &dev,
        &mut [Cmd::copy(b.addr() + 1, a.addr() + 3, (len - 3) as u64)],
    )?;
    check!(b.bytes()[1..len - 2] == src[3..]);
    // GPU fills with an 8-byte pattern from an odd address.
    let v = 0x0102_0304_0506_0708u64;
    exec(&dev, &mut [Cmd::fill(b.addr() + 5, 4096 + 11, v)])?;
    let pat = v.to_le_bytes();
    check!(b.bytes()[5..5 + 4107]
        .iter()
        .enumerate()
        .all(|(i, &x)| x == pat[i % 8]));
    // Atomics return the old value and add.
    let word = a.addr() + 64;
    let mut cmds = [
        Cmd::add32(word, 5),
        Cmd::add32(word, 7),
        Cmd::add64(word + 8, u64::MAX),
    ];
    a.bytes_mut()[64..68].copy_from_slice(&10u32.to_le_bytes());
    a.bytes_mut()[72..80].copy_from_slice(&3u64.to_le_bytes());
    exec(&dev, &mut cmds)?;
    check_eq!(cmds[0].value, 10);
    check_eq!(cmds[1].value, 15);
    check_eq!(cmds[2].value, 3);
    check_eq!(
        u32::from_le_bytes(a.bytes()[64..68].try_into().unwrap()),
        22
    );
    check_eq!(u64::from_le_bytes(a.bytes()[72..80].try_into().unwrap()), 2);
    let c = dev.counters()?;
    check!(c.faults > 0 && c.pages_mapped > 0, "{c:?}");
    Ok(())
}

/// Short FILL, COPY and READ commands at every phase, across a page
/// boundary and at a page's last bytes: exactly their bytes change, with
/// what they ask for. A job's commands are mostly this small (a fence is
/// an 8-byte FILL), and their scratch memory is sized by their length.
fn exec_short_lengths() -> TestResult {
    let dev = bound(0)?;
    let p = PAGE;
    let mut a = Map::new(3 * p, RW);
    let b = Map::new(3 * p, RW);
    let src = pattern(3, 3 * p);
    a.bytes_mut().copy_from_slice(&src);
    let lens = [1, 2, 7, 8, 9, 15, 17, p - 1, p, p + 1, p + 9];
    let offs = [0, 1, 3, 7, 8, 9, p - 9, p - 1];
    for (i, (&len, &off)) in lens
        .iter()
        .flat_map(|l| offs.iter().map(move |o| (l, o)))
        .enumerate()
    {
        let v = 0x0101_0101_0101_0101u64.wrapping_mul(i as u64 + 1) ^ 0x00ff_00ff_1234_5678;
        let before = b.bytes().to_vec();
        exec(&dev, &mut [Cmd::fill(b.addr() + off as u64, len as u64, v)])?;
        let pat = v.to_le_bytes();
        let got = b.bytes();
        check!(
            got[off..off + len]
                .iter()
                .enumerate()
                .all(|(j, &x)| x == pat[j % 8]),
            "FILL of {len} at +{off}"
        );
        check!(
            got[..off] == before[..off] && got[off + len..] == before[off + len..],
            "FILL of {len} at +{off} wrote outside"
        );
        let s = (off * 5 + 1) % p;
        exec(
            &dev,
            &mut [Cmd::copy(
                b.addr() + off as u64,
                a.addr() + s as u64,
                len as u64,
            )],
        )?;
        check!(
            b.bytes()[off..off + len] == src[s..s + len],
            "COPY of {len} at +{off}"
        );
        check!(
            gpu_read(&dev, a.addr() + off as u64, len)? == src[off..off + len],
            "READ of {len} at +{off}"
        );
    }
    // Long and short commands of one job, which run one after the other
    // in the same scratch memory: each does what it asks, as on the CPU.
    let mut model = b.bytes().to_vec();
    let (v, w) = (0x1111_2222_3333_4444u64, 0x5555_6666_7777_8888u64);
    let (in_a, in_b) = (
        |o: usize| a.addr() + o as u64,
        |o: usize| b.addr() + o as u64,
    );
    let mut cmds = [
        Cmd::copy(in_b(3), in_a(1), (2 * p + 5) as u64),
        Cmd::fill(in_b(13), 9, v),
        Cmd::copy(in_b(2 * p + 1), in_a(7), 5),
        Cmd::fill(in_b(p - 3), (p + 9) as u64, w),
    ];
    model[3..2 * p + 8].copy_from_slice(&src[1..2 * p + 6]);
    for (j, x) in model[13..22].iter_mut().enumerate() {
        *x = v.to_le_bytes()[j % 8];
    }
    model[2 * p + 1..2 * p + 6].copy_from_slice(&src[7..12]);
    for (j, x) in model[p - 3..2 * p + 6].iter_mut().enumerate() {
        *x = w.to_le_bytes()[j % 8];
    }
    exec(&dev, &mut cmds)?;
    check!(b.bytes() == &model[..], "a job of long and short commands");
    Ok(())
}

/// Repeated GPU reads: the second one needs no fault.
fn repeated_reads() -> TestResult {
    let dev = bound(0)?;
    let mut a = Map::new(MB2, RW);
    a.bytes_mut().copy_from_slice(&pattern(9, MB2));
    for _ in 0..4 {
        check!(gpu_read_ioctl(&dev, a.addr(), MB2)? == pattern(9, MB2));
    }
    let faults = dev.counters()?.faults;
    check!(gpu_read_ioctl(&dev, a.addr(), MB2)? == pattern(9, MB2));
    check_eq!(dev.counters()?.faults, faults);
    Ok(())
}

/// Bad EXEC arguments: EINVAL, nothing runs.
fn exec_bad_args() -> TestResult {
    let dev = bound(0)?;
    let a = Map::new(PAGE, RW);
    let good = |c: Cmd| -> Vec<Cmd> { vec![c] };
    let bad_cmds = [
        Cmd {
            op: 0,
            ..Cmd::fill(a.addr(), 8, 0)
        },
        Cmd {
            op: 99,
            ..Cmd::fill(a.addr(), 8, 0)
        },
        Cmd {
            flags: 1,
            ..Cmd::fill(a.addr(), 8, 0)
        },
        Cmd::fill(a.addr(), (1 << 30) + 1, 0),
        Cmd::fill(u64::MAX - 4, 8, 0),
        Cmd::add32(a.addr() + 2, 1),
        Cmd::add64(a.addr() + 4, 1),
        Cmd::copy(a.addr() + 8, a.addr(), 16),
    ];
    for c in bad_cmds {
        let e = dev.exec(&mut good(c)).unwrap_err();
        check_eq!(e.error, errno(libc::EINVAL), "{c:?}");
        check_eq!(e.completed, 0);
    }
    check!(a.bytes().iter().all(|&b| b == 0));
    let mut cmds = [Cmd::fill(a.addr(), 8, 1)];
    let mut arg = sys::drm_nsvm_exec {
        size: nsvm::size_of_u32::<sys::drm_nsvm_exec>(),
        num_cmds: 1,
        cmds: cmds.as_mut_ptr() as u64,
        cmd_size: nsvm::size_of_u32::<Cmd>(),
        ..Default::default()
    };
    for (field, bad) in [
        ("cmd_size", 0),
        ("flags", 1),
        ("num_cmds", sys::DRM_NSVM_EXEC_MAX_CMDS + 1),
        ("size", 8),
    ] {
        let mut x = arg;
        match field {
            "cmd_size" => x.cmd_size = bad,
            "flags" => x.flags = bad,
            "num_cmds" => x.num_cmds = bad,
            _ => x.size = bad,
        }
        check_eq!(dev.exec_raw(&mut x), Err(errno(libc::EINVAL)), "{field}");
    }
    arg.cmds = 8;
    check_eq!(dev.exec_raw(&mut arg), Err(errno(libc::EFAULT)));
    Ok(())
}

// ---- faults that cannot be served ----

fn expect_fault(e: std::result::Result<(), ExecError>, addr: u64, write: bool) -> TestResult {
    let Err(e) = e else {
        return Err(Outcome::Fail("EXEC succeeded".into()));
    };
    check_eq!(e.error, errno(libc::EFAULT));
    check_eq!(e.fault_addr & !(PAGE as u64 - 1), addr & !(PAGE as u64 - 1));
    check_eq!(e.fault_write, write);
    Ok(())
}

/// PROT_NONE: the GPU read fails with EFAULT at the address; after
/// mprotect it succeeds and sees the data.
fn read_prot_none() -> TestResult {
    let dev = bound(0)?;
    let mut a = Map::new(4 * PAGE, RW);
    a.bytes_mut().copy_from_slice(&pattern(3, 4 * PAGE));
    a.protect(libc::PROT_NONE);
    let mut out = vec![0u8; 4 * PAGE];
    let e = dev.exec(&mut [Cmd::read(
        out.as_mut_ptr() as u64,
        a.addr(),
        4 * PAGE as u64,
    )]);
    expect_fault(e, a.addr(), false)?;
    a.protect(libc::PROT_READ);
    check!(gpu_read(&dev, a.addr(), 4 * PAGE)? == pattern(3, 4 * PAGE));
    Ok(())
}

/// A GPU write to read-only memory fails with EFAULT (a write fault) and
/// leaves it untouched; after mprotect it goes through.
fn write_read_only() -> TestResult {
    let dev = bound(0)?;
    let mut a = Map::new(4 * PAGE, RW);
    a.bytes_mut().fill(0x33);
    a.protect(libc::PROT_READ);
    // Read first, so the GPU holds read-only entries.
    check!(gpu_read(&dev, a.addr(), 4 * PAGE)?
        .iter()
        .all(|&b| b == 0x33));
    let e = dev.exec(&mut [Cmd::fill(a.addr() + PAGE as u64, 8, 0x44)]);
    expect_fault(e, a.addr() + PAGE as u64, true)?;
    check!(a.bytes().iter().all(|&b| b == 0x33));
    a.protect(RW);
    exec(&dev, &mut [Cmd::fill(a.addr() + PAGE as u64, 8, 0x44)])?;
    check_eq!(a.bytes()[PAGE], 0x44);
    Ok(())
}

/// A copy from a read-only page to the writable page beside it, in one
/// fault window: the read is served read-only and the write writable; a
/// write request must not leak onto the read-only VMA.
fn copy_across_vmas() -> TestResult {
    let dev = bound(0)?;
    let mut big = Map::new(3 * MB2, RW);
    let off = (MB2 - big.addr() as usize % MB2) % MB2;
    let src = big.addr() + off as u64;
    let dst = src + PAGE as u64;
    big.bytes_mut()[off..off + PAGE].copy_from_slice(&pattern(21, PAGE));
    // SAFETY: The first page of the aligned window, inside our mapping.
    check_eq!(
        unsafe { libc::mprotect(src as *mut _, PAGE, libc::PROT_READ) },
        0
    );
    exec(&dev, &mut [Cmd::copy(dst, src, PAGE as u64)])?;
    check!(big.bytes()[off + PAGE..off + 2 * PAGE] == pattern(21, PAGE)[..]);
    let s = states(&dev, src, 2)?;
    let (v, w) = (sys::DRM_NSVM_PTE_VALID as u8, sys::DRM_NSVM_PTE_WRITE as u8);
    check_eq!(s[0] & (v | w), v);
    check_eq!(s[1] & (v | w), v | w);
    Ok(())
}

/// AXPY32, y = a * x + y on u32 elements, across pages and with wrapping;
/// a read-only y faults (a write fault) and stays as it was; bad operands
/// are EINVAL.
fn axpy32() -> TestResult {
    let dev = bound(0)?;
    let n = 3 * PAGE / 4 + 5;
    let (mut x, mut y) = (Map::new(4 * PAGE, RW), Map::new(4 * PAGE, RW));
    let xs: Vec<u32> = (0..n as u32).map(|i| i.wrapping_mul(0x9e37_79b9)).collect();
    let ys: Vec<u32> = (0..n as u32).map(|i| i ^ 0xdead_beef).collect();
    let put = |m: &mut Map, v: &[u32]| {
        for (i, e) in v.iter().enumerate() {
            m.bytes_mut()[4 * i..4 * i + 4].copy_from_slice(&e.to_le_bytes());
        }
    };
    put(&mut x, &xs);
    put(&mut y, &ys);
    // Start 12 bytes into the pages, so elements and pages do not line up.
    let (off, len) = (12, 4 * (n - 3));
    let a = 0x1234_5679;
    exec(
        &dev,
        &mut [Cmd::axpy32(y.addr() + off, a, x.addr() + off, len as u64)],
    )?;
    for i in 0..n {
        let got = u32::from_le_bytes(y.bytes()[4 * i..4 * i + 4].try_into().unwrap());
        let want = if (3..n).contains(&i) {
            ys[i].wrapping_add(a.wrapping_mul(xs[i]))
        } else {
            ys[i]
        };
        check_eq!(got, want, "element {i}");
    }
    let before = y.bytes().to_vec();
    y.protect(libc::PROT_READ);
    let e = dev.exec(&mut [Cmd::axpy32(y.addr(), 2, x.addr(), PAGE as u64)]);
    expect_fault(e, y.addr(), true)?;
    check!(y.bytes() == &before[..]);
    for bad in [
        Cmd::axpy32(y.addr() + 2, 1, x.addr(), 8),
        Cmd::axpy32(y.addr(), 1, x.addr() + 1, 8),
        Cmd::axpy32(y.addr(), 1, x.addr(), 6),
        Cmd::axpy32(y.addr(), 1, y.addr() + 4, 8),
    ] {
        check_eq!(
            dev.exec(&mut [bad]).map_err(|e| e.error),
            Err(errno(libc::EINVAL))
        );
    }
    Ok(())
}

/// An address with no VMA: EFAULT; the commands before it completed.
fn no_vma() -> TestResult {
    let dev = bound(0)?;
    let a = Map::new(PAGE, RW);
    let hole = Map::new(PAGE, RW);
    let hole_addr = hole.addr();
    drop(hole);
    let e = dev
        .exec(&mut [Cmd::fill(a.addr(), 8, 1), Cmd::fill(hole_addr, 8, 1)])
        .unwrap_err();
    check_eq!(e.error, errno(libc::EFAULT));
    check_eq!(e.completed, 1);
    check_eq!(e.fault_addr, hole_addr);
    check_eq!(a.bytes()[0], 1);
    Ok(())
}

// ---- coherence ----

/// munmap drops the GPU mappings: the snapshot empties, and a GPU write to
/// the old address faults instead of reaching the freed page.
fn munmap_invalidates() -> TestResult {
    let dev = bound(0)?;
    let a = Map::new(MB2, RW);
    exec(&dev, &mut [Cmd::fill(a.addr(), MB2 as u64, 0x55)])?;
    check!(states(&dev, a.addr(), MB2 / PAGE)?
        .iter()
        .all(|&s| s & sys::DRM_NSVM_PTE_VALID as u8 != 0));
    let addr = a.addr();
    let before = dev.counters()?;
    drop(a);
    check!(states(&dev, addr, MB2 / PAGE)?.iter().all(|&s| s == 0));
    let after = dev.counters()?;
    check!(after.invalidations > before.invalidations);
    check_eq!(
        after.pages_unmapped - before.pages_unmapped,
        (MB2 / PAGE) as u64
    );
    expect_fault(dev.exec(&mut [Cmd::fill(addr, 8, 1)]), addr, true)?;
    // New memory at the same place: the GPU sees its contents, not the
    // freed pages'.
    // The range we just unmapped, failing if it is taken.
    let b = Map::at(addr, MB2, RW);
    check!(b.is_some(), "{addr:#x} was taken");
    let mut b = b.unwrap();
    b.bytes_mut().copy_from_slice(&pattern(13, MB2));
    check!(gpu_read(&dev, addr, MB2)? == pattern(13, MB2));
    Ok(())
}

/// mprotect to read-only drops write access: a GPU write faults, a GPU read
/// still works.
fn mprotect_invalidates() -> TestResult {
    let dev = bound(0)?;
    let a = Map::new(16 * PAGE, RW);
    exec(
        &dev,
        &mut [Cmd::fill(a.addr(), 16 * PAGE as u64, 0x6666_6666_6666_6666)],
    )?;
    a.protect(libc::PROT_READ);
    expect_fault(
        dev.exec(&mut [Cmd::fill(a.addr(), 8, 0x77)]),
        a.addr(),
        true,
    )?;
    check!(a.bytes().iter().all(|&b| b == 0x66));
    check!(gpu_read(&dev, a.addr(), 16 * PAGE)?
        .iter()
        .all(|&b| b == 0x66));
    Ok(())
}

/// madvise(DONTNEED) frees the pages: the GPU then reads zeros, not the
/// stale data of the freed pages.
fn madvise_dontneed() -> TestResult {
    let dev = bound(0)?;
    let mut a = Map::new(MB2, RW);
    exec(&dev, &mut [Cmd::fill(a.addr(), MB2 as u64, 0x7777)])?;
    check!(a.bytes().iter().step_by(8).all(|&b| b == 0x77));
    // SAFETY: Our own mapping.
    check_eq!(
        unsafe { libc::madvise(a.ptr.cast(), MB2, libc::MADV_DONTNEED) },
        0
    );
    check!(gpu_read(&dev, a.addr(), MB2)?.iter().all(|&b| b == 0));
    a.bytes_mut()[100] = 9;
    check_eq!(gpu_read(&dev, a.addr() + 100, 1)?[0], 9);
    Ok(())
}

/// mremap moves the pages: the GPU sees them at the new address and faults
/// at the old one.
fn mremap_moves() -> TestResult {
    let dev = bound(0)?;
    let mut a = Map::new(4 * PAGE, RW);
    a.bytes_mut().copy_from_slice(&pattern(5, 4 * PAGE));
    check!(gpu_read(&dev, a.addr(), 4 * PAGE)? == pattern(5, 4 * PAGE));
    let old = a.addr();
    // SAFETY: Moves our own mapping; `a` is forgotten, `new` owns it.
    let new = unsafe { libc::mremap(a.ptr.cast(), 4 * PAGE, 8 * PAGE, libc::MREMAP_MAYMOVE) };
    check!(new != libc::MAP_FAILED);
    std::mem::forget(a);
    let b = Map {
        ptr: new.cast(),
        len: 8 * PAGE,
    };
    if b.addr() != old {
        let e = dev.exec(&mut [Cmd::fill(old, 8, 1)]);
        expect_fault(e, old, true)?;
    }
    check!(gpu_read(&dev, b.addr(), 4 * PAGE)? == pattern(5, 4 * PAGE));
    Ok(())
}

/// After fork, the parent's pages are COW: a GPU write in the parent goes
/// to the parent's new copy, and the child keeps the old data.
fn fork_cow() -> TestResult {
    let dev = bound(0)?;
    let a = Map::new(MB2, RW);
    exec(&dev, &mut [Cmd::fill(a.addr(), MB2 as u64, 0x1010)])?;
    let mut go = [0i32; 2];
    // SAFETY: `go` receives two fds.
    check_eq!(unsafe { libc::pipe(go.as_mut_ptr()) }, 0);
    let bytes = a.bytes().as_ptr() as usize;
    let st = {
        let _ = std::io::stdout().flush();
        // SAFETY: The child reads its own copy and exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let mut x = 0u8;
            // SAFETY: Waits for the parent's GPU write.
            unsafe { libc::read(go[0], (&raw mut x).cast(), 1) };
            // SAFETY: The child's copy of the mapping.
            let ok = unsafe { std::slice::from_raw_parts(bytes as *const u8, MB2) }
                .iter()
                .step_by(8)
                .all(|&b| b == 0x10);
            // SAFETY: Ends the child.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        exec(&dev, &mut [Cmd::fill(a.addr(), MB2 as u64, 0x2020)])?;
        check!(
            a.bytes().iter().step_by(8).all(|&b| b == 0x20),
            "parent did not see the GPU write"
        );
        // SAFETY: Releases the child.
        unsafe { libc::write(go[1], [1u8].as_ptr().cast(), 1) };
        let mut st = 0;
        // SAFETY: Our child.
        unsafe { libc::waitpid(pid, &mut st, 0) };
        st
    };
    check!(
        libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
        "child saw the parent's GPU write"
    );
    Ok(())
}

/// After fork, the child's GPU write (through its own file) goes to the
/// child's private copy: the parent keeps its data, and its own GPU
/// mapping keeps seeing it.
fn child_writes_private() -> TestResult {
    let dev = bound(0)?;
    let mut a = Map::new(MB2, RW);
    a.bytes_mut().fill(0x11);
    check!(gpu_read(&dev, a.addr(), MB2)?.iter().all(|&b| b == 0x11));
    let addr = a.addr();
    let st = in_child(|| {
        let Ok(d) = Device::open_render(0) else {
            return 1;
        };
        if d.svm_init(0).is_err() {
            return 1;
        }
        if d.exec(&mut [Cmd::fill(addr, MB2 as u64, 0x2222_2222_2222_2222)])
            .is_err()
        {
            return 1;
        }
        // SAFETY: The child's own copy of the mapping.
        let mine = unsafe { std::slice::from_raw_parts(addr as *const u8, MB2) };
        if mine.iter().all(|&b| b == 0x22) {
            0
        } else {
            2
        }
    });
    check_eq!(st, 0);
    check!(
        a.bytes().iter().all(|&b| b == 0x11),
        "the child's write reached the parent"
    );
    check!(gpu_read(&dev, a.addr(), MB2)?.iter().all(|&b| b == 0x11));
    Ok(())
}

/// A device read racing munmap in another thread: the read either completes
/// or faults cleanly; never a splat.
fn read_racing_munmap() -> TestResult {
    let dev = bound(0)?;
    for round in 0..20u64 {
        let mut a = Map::new(MB2, RW);
        a.bytes_mut().fill(round as u8);
        let (ptr, len) = (a.ptr as usize, a.len);
        std::mem::forget(a);
        let t = std::thread::spawn(move || {
            std::thread::yield_now();
            // SAFETY: Unmaps the region the other thread reads.
            unsafe { libc::munmap(ptr as *mut _, len) };
        });
        let mut out = vec![0u8; len];
        match dev.exec(&mut [Cmd::read(out.as_mut_ptr() as u64, ptr as u64, len as u64)]) {
            Ok(()) => check!(out.iter().all(|&b| b == round as u8), "stale or torn read"),
            Err(e) => check_eq!(e.error, errno(libc::EFAULT)),
        }
        t.join()
            .map_err(|_| Outcome::Fail("munmap thread".into()))?;
    }
    Ok(())
}

/// A THP-backed range is mapped huge on the GPU.
fn thp_huge() -> TestResult {
    let dev = bound(0)?;
    let big = Map::new(2 * MB2, RW);
    let aligned = (big.addr() + MB2 as u64 - 1) & !(MB2 as u64 - 1);
    // SAFETY: Inside our mapping.
    unsafe { libc::madvise(aligned as *mut _, MB2, libc::MADV_HUGEPAGE) };
    // SAFETY: Touch the first byte: the fault allocates a THP.
    unsafe { *(aligned as *mut u8) = 1 };
    exec(&dev, &mut [Cmd::fill(aligned, MB2 as u64, 0x99)])?;
    let s = states(&dev, aligned, MB2 / PAGE)?;
    if s[0] & sys::DRM_NSVM_PTE_HUGE as u8 == 0 {
        skip!("no THP for the range (THP disabled or memory fragmented)");
    }
    check!(s.iter().all(|&x| x & sys::DRM_NSVM_PTE_HUGE as u8 != 0));
    Ok(())
}

/// A snapshot of mixed states: untouched, GPU-read, GPU-written.
fn snapshot_mixed() -> TestResult {
    let dev = bound(0)?;
    // A 4 KiB fault window keeps the states apart.
    drop(dev);
    let dev = open(0)?;
    dev.svm_init(PAGE as u64)?;
    let mut a = Map::new(4 * PAGE, RW);
    a.bytes_mut().fill(1);
    gpu_read(&dev, a.addr() + PAGE as u64, 8)?;
    exec(&dev, &mut [Cmd::fill(a.addr() + 2 * PAGE as u64, 8, 0)])?;
    let s = states(&dev, a.addr(), 4)?;
    let (v, w) = (sys::DRM_NSVM_PTE_VALID as u8, sys::DRM_NSVM_PTE_WRITE as u8);
    check_eq!(s[0], 0);
    check_eq!(s[1] & v, v);
    check_eq!(s[2], v | w);
    check_eq!(s[3], 0);
    Ok(())
}

/// Two devices mirror the same memory: what one GPU writes the other reads.
fn two_devices() -> TestResult {
    let d0 = bound(0)?;
    let d1 = bound(1)?;
    let a = Map::new(MB2, RW);
    exec(&d0, &mut [Cmd::fill(a.addr(), MB2 as u64, 0x4242)])?;
    check!(gpu_read(&d1, a.addr(), MB2)?
        .iter()
        .step_by(8)
        .all(|&b| b == 0x42));
    exec(&d1, &mut [Cmd::fill(a.addr(), 8, 0x4343)])?;
    check_eq!(gpu_read(&d0, a.addr(), 1)?[0], 0x43);
    Ok(())
}

/// File-backed shared memory: GPU writes reach the file (checked with pread).
fn file_write() -> TestResult {
    let dev = bound(0)?;
    let path = "/tmp/nsvm-file-write";
    let f = temp_file(path)?;
    f.set_len(4 * PAGE as u64)?;
    // SAFETY: Maps our file.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            4 * PAGE,
            RW,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    check!(p != libc::MAP_FAILED);
    let m = Map {
        ptr: p.cast(),
        len: 4 * PAGE,
    };
    exec(
        &dev,
        &mut [Cmd::fill(m.addr(), 4 * PAGE as u64, 0x5a5a_5a5a_5a5a_5a5a)],
    )?;
    let mut buf = vec![0u8; 4 * PAGE];
    // SAFETY: Reads into `buf`.
    let n = unsafe { libc::pread(f.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    check_eq!(n, buf.len() as isize);
    check!(buf.iter().all(|&b| b == 0x5a));
    let _ = std::fs::remove_file(path);
    Ok(())
}

/// A sparse GPU access populates only 64 KiB around itself: a write of 8
/// bytes in an untouched 4 KiB-backed 2 MiB window faults in 16 pages, not
/// 512; pages the CPU populated elsewhere in the window are mapped too.
fn sparse_fault_around() -> TestResult {
    let dev = bound(0)?;
    let big = Map::new(2 * MB2, RW);
    let w = (big.addr() + MB2 as u64 - 1) & !(MB2 as u64 - 1);
    // SAFETY: Advice on our own mapping.
    check_eq!(
        unsafe { libc::madvise(w as *mut _, MB2, libc::MADV_NOHUGEPAGE) },
        0
    );
    // The CPU populates the window's last page only.
    let last = w + (MB2 - PAGE) as u64;
    // SAFETY: Inside the mapping.
    unsafe { *(last as *mut u8) = 1 };
    exec(&dev, &mut [Cmd::fill(w + 8 * PAGE as u64, 8, 7)])?;
    let n = MB2 / PAGE;
    let cpu = cpu_states(&dev, w, n)?;
    check_eq!(count(&cpu, sys::DRM_NSVM_PTE_VALID), 16 + 1);
    let gpu = states(&dev, w, n)?;
    check_eq!(count(&gpu, sys::DRM_NSVM_PTE_VALID), 16 + 1);
    check!(gpu[n - 1] & sys::DRM_NSVM_PTE_VALID as u8 != 0);
    // SAFETY: Inside the mapping.
    check_eq!(unsafe { *((w + 8 * PAGE as u64) as *const u64) }, 7);
    Ok(())
}

/// Fault-around extends a CPU fault: a GPU write of 8 bytes to a page the
/// CPU populated (writable) in an otherwise untouched 4 KiB-backed window
/// maps that page and allocates nothing around it; a read of the shared
/// zero page's neighbour block, which needs CPU faults, still gets its
/// 64 KiB block.
fn fault_around_populated() -> TestResult {
    let dev = bound(0)?;
    let big = Map::new(2 * MB2, RW);
    let w = (big.addr() + MB2 as u64 - 1) & !(MB2 as u64 - 1);
    // SAFETY: Advice on our own mapping.
    check_eq!(
        unsafe { libc::madvise(w as *mut _, MB2, libc::MADV_NOHUGEPAGE) },
        0
    );
    let page = w + 8 * PAGE as u64;
    // SAFETY: Inside the mapping.
    unsafe { *(page as *mut u64) = 1 };
    exec(&dev, &mut [Cmd::fill(page, 8, 7)])?;
    let n = MB2 / PAGE;
    let cpu = cpu_states(&dev, w, n)?;
    check_eq!(count(&cpu, sys::DRM_NSVM_PTE_VALID), 1, "CPU pages");
    let gpu = states(&dev, w, n)?;
    check_eq!(count(&gpu, sys::DRM_NSVM_PTE_VALID), 1, "GPU pages");
    // SAFETY: Inside the mapping.
    check_eq!(unsafe { *(page as *const u64) }, 7);
    // The next block's first page is not populated: its block is.
    let next = w + 16 * PAGE as u64;
    check_eq!(gpu_read(&dev, next, 8)?, vec![0u8; 8]);
    let cpu = cpu_states(&dev, w, n)?;
    check_eq!(count(&cpu, sys::DRM_NSVM_PTE_VALID), 1 + 16, "CPU pages");
    Ok(())
}

/// Faults come in batches and are deduplicated by fault window: a fill of
/// fresh memory raises one fault per 64 KiB block it misses (the GPU's
/// fault granule), 64 to a batch, so 8 MiB is served in about two batches
/// of two 2 MiB windows each.
fn fault_batching() -> TestResult {
    let dev = bound(0)?;
    let big = Map::new(5 * MB2, RW);
    let aligned = (big.addr() + MB2 as u64 - 1) & !(MB2 as u64 - 1);
    let before = dev.counters()?;
    exec_ioctl(
        &dev,
        &mut [Cmd::fill(aligned, 4 * MB2 as u64, 0x0101_0101_0101_0101)],
    )?;
    let c = dev.counters()?;
    let (faults, batches) = (c.faults - before.faults, c.batches - before.batches);
    check!((2..=4).contains(&batches), "batches {batches}");
    check!(
        (128..=192).contains(&faults),
        "faults {faults}: one per 64 KiB block"
    );
    check_eq!(
        c.pages_mapped - before.pages_mapped,
        (4 * MB2 / PAGE) as u64
    );
    // The whole range is mapped: a second pass raises nothing.
    exec_ioctl(&dev, &mut [Cmd::fill(aligned, 4 * MB2 as u64, 0)])?;
    check_eq!(dev.counters()?.faults, c.faults);
    Ok(())
}

/// The process exits while a thread is in EXEC with faults pending: the
/// EXEC's mmget keeps the address space until it returns, and everything
/// is torn down cleanly.
fn exit_during_exec() -> TestResult {
    for delay_us in [0u32, 200, 2000, 20000] {
        let st = in_child(|| {
            let Ok(dev) = Device::open_render(0) else {
                return 1;
            };
            if dev.svm_init(PAGE as u64).is_err() {
                return 1;
            }
            let buf = Map::new(64 * MB2, RW);
            let addr = buf.addr();
            std::mem::forget(buf);
            let dev = std::sync::Arc::new(dev);
            let d = dev.clone();
            std::thread::spawn(move || loop {
                let _ = d.exec(&mut [Cmd::fill(addr, 64 * MB2 as u64, 3)]);
            });
            // SAFETY: Plain sleep, then exit the whole process.
            unsafe {
                libc::usleep(delay_us);
                libc::_exit(0)
            }
        });
        check_eq!(st, 0, "delay {delay_us}");
    }
    Ok(())
}

/// MAP_SHARED anonymous memory across fork: the child's GPU writes (through
/// its own file) reach the parent.
fn shared_child_writes() -> TestResult {
    open(0)?;
    let a = Map::with_flags(MB2, RW, libc::MAP_SHARED | libc::MAP_ANONYMOUS);
    let addr = a.addr();
    let st = in_child(|| {
        let Ok(dev) = Device::open_render(0) else {
            return 1;
        };
        if dev.svm_init(0).is_err() {
            return 1;
        }
        match dev.exec(&mut [Cmd::fill(addr, MB2 as u64, 0x3c3c_3c3c_3c3c_3c3c)]) {
            Ok(()) => 0,
            Err(_) => 1,
        }
    });
    check_eq!(st, 0);
    check!(a.bytes().iter().all(|&b| b == 0x3c));
    Ok(())
}

/// hugetlbfs-backed memory: the GPU writes it, the CPU reads it.
fn hugetlbfs_write() -> TestResult {
    let dev = bound(0)?;
    // SAFETY: A fresh anonymous hugetlb mapping.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            MB2,
            RW,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_HUGETLB,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        skip!("no huge pages reserved");
    }
    let mut m = Map {
        ptr: p.cast(),
        len: MB2,
    };
    exec(
        &dev,
        &mut [Cmd::fill(m.addr(), MB2 as u64, 0x2e2e_2e2e_2e2e_2e2e)],
    )?;
    check!(m.bytes().iter().all(|&b| b == 0x2e));
    m.bytes_mut()[MB2 - 1] = 7;
    check_eq!(gpu_read(&dev, m.addr() + MB2 as u64 - 1, 1)?[0], 7);
    Ok(())
}

/// A file written with pwrite and mapped read-only: the GPU reads its
/// contents, and cannot write them.
fn file_read() -> TestResult {
    let dev = bound(0)?;
    let path = "/tmp/nsvm-file-read";
    let f = temp_file(path)?;
    let data = pattern(11, 4 * PAGE);
    // SAFETY: Writes `data`.
    let n = unsafe { libc::pwrite(f.as_raw_fd(), data.as_ptr().cast(), data.len(), 0) };
    check_eq!(n, data.len() as isize);
    // SAFETY: Maps our file.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            4 * PAGE,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    check!(p != libc::MAP_FAILED);
    let m = Map {
        ptr: p.cast(),
        len: 4 * PAGE,
    };
    check!(gpu_read(&dev, m.addr(), 4 * PAGE)? == data);
    expect_fault(dev.exec(&mut [Cmd::fill(m.addr(), 8, 0)]), m.addr(), true)?;
    let _ = std::fs::remove_file(path);
    Ok(())
}

extern "C" fn on_usr1(_: i32) {}

/// A signal interrupts a long EXEC: it returns EINTR (or completes first),
/// the GPU's job is cancelled and waited for, and the mirror keeps working.
fn exec_interrupted() -> TestResult {
    let dev = open(0)?;
    // 4 KiB windows: a long fill is many batches, plenty of time to signal.
    dev.svm_init(PAGE as u64)?;
    // SAFETY: Installs a no-op handler without SA_RESTART.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_usr1 as *const () as usize;
        check_eq!(libc::sigaction(libc::SIGUSR1, &sa, ptr::null_mut()), 0);
    }
    let dev = std::sync::Arc::new(dev);
    let mut interrupted = 0;
    for round in 0..6u32 {
        let buf = Map::new(32 * MB2, RW);
        let addr = buf.addr();
        let fd = dev.file().as_raw_fd();
        let t = std::thread::spawn(move || raw_exec(fd, Cmd::fill(addr, 32 * MB2 as u64, 9)));
        // SAFETY: Plain sleep, then a signal to the EXEC thread.
        unsafe {
            libc::usleep(2000 + round * 5000);
            libc::pthread_kill(
                std::os::unix::thread::JoinHandleExt::as_pthread_t(&t) as libc::pthread_t,
                libc::SIGUSR1,
            );
        }
        match t.join() {
            Ok(Ok(())) => {}
            Ok(Err(libc::EINTR)) => interrupted += 1,
            other => return Err(Outcome::Fail(format!("round {round}: {other:?}"))),
        }
        // Still usable: what the GPU reads is what the CPU sees.
        let mut b = buf;
        b.bytes_mut()[..8].copy_from_slice(&5u64.to_le_bytes());
        check_eq!(gpu_read(&dev, addr, 8)?, 5u64.to_le_bytes().to_vec());
    }
    println!("{interrupted} of 6 EXECs interrupted");
    check!(interrupted > 0, "no EXEC was interrupted");
    Ok(())
}

fn clients(index: u32) -> Result<Vec<std::path::PathBuf>, Outcome> {
    let dir = format!("/sys/kernel/debug/nsvm/nsvm.{index}");
    let Ok(rd) = std::fs::read_dir(&dir) else {
        skip!("no {dir}")
    };
    let mut v: Vec<_> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    v.sort();
    Ok(v)
}

/// Each mirror has a debugfs file that shows the counters SNAPSHOT reports,
/// and goes away with the file.
fn debugfs_counters() -> TestResult {
    let dev = open(0)?;
    let before = clients(0)?;
    dev.svm_init(0)?;
    let a = Map::new(MB2, RW);
    exec(&dev, &mut [Cmd::fill(a.addr(), MB2 as u64, 1)])?;
    let after = clients(0)?;
    let new: Vec<_> = after.iter().filter(|p| !before.contains(p)).collect();
    // client-<id> and client-<id>-pt.
    check_eq!(new.len(), 2);
    check!(new[1].to_string_lossy() == format!("{}-pt", new[0].display()));
    let text = std::fs::read_to_string(new[0])?;
    let c = dev.counters()?;
    for (key, val) in [
        ("faults", c.faults),
        ("batches", c.batches),
        ("pages_mapped", c.pages_mapped),
    ] {
        check!(
            text.lines().any(|l| l == format!("{key}: {val}")),
            "{key} {val} not in {text:?}"
        );
    }
    let paths = [new[0].clone(), new[1].clone()];
    drop(dev);
    for path in paths {
        check!(!path.exists(), "{} outlived its file", path.display());
    }
    Ok(())
}

/// The page-table dump of `client-<id>-pt` over `[start, start + len)`.
fn ptdump(path: &std::path::Path, start: u64, len: usize) -> Result<String, Outcome> {
    std::fs::write(path, format!("{start:#x} {len}"))?;
    Ok(std::fs::read_to_string(path)?)
}

/// `client-<id>-pt` dumps the GPU page table of a written range: runs of
/// system pages, a THP mapped huge, pages in device memory; bad ranges are
/// EINVAL.
fn debugfs_ptdump() -> TestResult {
    let dev = open(0)?;
    let before = clients(0)?;
    dev.svm_init(0)?;
    let new: Vec<_> = clients(0)?
        .into_iter()
        .filter(|p| !before.contains(p) && p.to_string_lossy().ends_with("-pt"))
        .collect();
    check_eq!(new.len(), 1);
    let pt = &new[0];
    check!(std::fs::read_to_string(pt)?.starts_with("write \"START LENGTH\""));

    let mut big = Map::new(2 * MB2, RW);
    let off = (MB2 - big.addr() as usize % MB2) % MB2;
    let thp = big.addr() + off as u64;
    // SAFETY: Inside our mapping.
    unsafe { libc::madvise(thp as *mut _, MB2, libc::MADV_HUGEPAGE) };
    big.bytes_mut()[off..off + MB2].fill(1);
    // 4 pages the GPU writes: one run, writable.
    exec(&dev, &mut [Cmd::fill(thp, MB2 as u64, 2)])?;
    let text = ptdump(pt, thp, MB2)?;
    check!(
        text.starts_with(&format!(
            "range {thp:#x}-{:#x} (512 pages)",
            thp + MB2 as u64
        )),
        "{text}"
    );
    check!(text.ends_with("mapped 512 of 512 pages\n"), "{text}");
    let huge = states(&dev, thp, 1)?[0] & sys::DRM_NSVM_PTE_HUGE as u8 != 0;
    let flags = if huge { "rwh-- system" } else { "rw--- system" };
    check!(text.contains(flags), "{flags} not in {text}");

    // Device memory: a run of device pages.
    if dev.get_param(sys::DRM_NSVM_PARAM_VRAM_SIZE)? != 0 {
        let a = Map::new(16 * PAGE, RW);
        dev.migrate(a.addr(), 16 * PAGE as u64, nsvm::Mem::Device)?;
        exec(&dev, &mut [Cmd::fill(a.addr(), 16 * PAGE as u64, 3)])?;
        let text = ptdump(pt, a.addr(), 16 * PAGE)?;
        check!(text.contains("   16 rw-ad vram "), "{text}");
    }
    for bad in [
        "0x1000",
        "0x1000 0",
        "zz 4096",
        "0x1000 4096 1",
        "0 2147483648",
    ] {
        check!(std::fs::write(pt, bad).is_err(), "{bad:?} accepted");
    }
    Ok(())
}

igt_main! {
    "double-init" => double_init,
    "before-init" => before_init,
    "init-bad-args" => init_bad_args,
    "fork-child-eperm" => fork_child_eperm,
    "scm-rights-owner-exits" => scm_rights,
    "exit-with-mappings" => exit_with_mappings,
    "init-close-cycles" => init_close_cycles,
    "close-while-faulting" => close_while_faulting,
    "exec-data" => exec_data,
    "exec-short-lengths" => exec_short_lengths,
    "repeated-reads" => repeated_reads,
    "exec-bad-args" => exec_bad_args,
    "read-prot-none" => read_prot_none,
    "write-read-only" => write_read_only,
    "no-vma" => no_vma,
    "copy-across-vmas" => copy_across_vmas,
    "axpy32" => axpy32,
    "munmap-invalidates" => munmap_invalidates,
    "mprotect-invalidates" => mprotect_invalidates,
    "madvise-dontneed" => madvise_dontneed,
    "mremap-moves" => mremap_moves,
    "fork-cow" => fork_cow,
    "child-writes-private" => child_writes_private,
    "read-racing-munmap" => read_racing_munmap,
    "thp-huge" => thp_huge,
    "snapshot-mixed" => snapshot_mixed,
    "two-devices" => two_devices,
    "file-write" => file_write,
    "file-read" => file_read,
    "fault-batching" => fault_batching,
    "sparse-fault-around" => sparse_fault_around,
    "fault-around-populated" => fault_around_populated,
    "exit-during-exec" => exit_during_exec,
    "shared-child-writes" => shared_child_writes,
    "hugetlbfs-write" => hugetlbfs_write,
    "debugfs-counters" => debugfs_counters,
    "debugfs-ptdump" => debugfs_ptdump,
    "exec-interrupted" => exec_interrupted,
}
