// SPDX-License-Identifier: MIT

//! nsvm_async: exec queues, user fences and the device fault handler.
//!
//! Jobs run after SUBMIT returned and their faults are served by the
//! device's handler, in no process's context. The lifetime matrix of that
//! work: the owner exiting with jobs queued, running and stalled on faults
//! (the fd, passed by SCM_RIGHTS, still waits, queries and closes), the
//! file released while its faults are served, a forked child's queue ops,
//! SIGKILL in a wait; and the fences: order, exactly once, unmapped,
//! read-only, in device memory, freed while the job runs, and the waits'
//! timeouts.

use std::{
    os::fd::{
        AsRawFd,
        FromRawFd,
        OwnedFd, //
    },
    time::{
        Duration,
        Instant, //
    },
};

use nsvm_igt_tests::{check, check_eq, igt_main, svm::*, Outcome, TestResult};
use nsvm_uapi::{sys, Cmd, Device, Mem};

const PAGE64: u64 = PAGE as u64;
/// A wait that does not end on its own.
const FOREVER: i64 = -1;
/// Long enough for any job of these tests under TCG.
const LONG_NS: i64 = 60_000_000_000;

/// The u64 at `addr`, read volatile (the GPU writes it).
fn peek(addr: u64) -> u64 {
    // SAFETY: The tests only peek at their own mapped, aligned words.
    unsafe { std::ptr::read_volatile(addr as *const u64) }
}

/// Writes `v` at `addr`.
fn poke(addr: u64, v: u64) {
    // SAFETY: As for `peek`.
    unsafe { std::ptr::write_volatile(addr as *mut u64, v) }
}

/// The error a queue failed with (0 if it did not), as a positive errno.
fn queue_errno(dev: &Device, q: u32) -> Result<i32, Outcome> {
    Ok(-dev.queue_query(q)?.error)
}

/// Waits (polling QUEUE_QUERY) until queue `q` failed; its errno.
fn wait_failed(dev: &Device, q: u32) -> Result<i32, Outcome> {
    let t = Instant::now();
    loop {
        let e = queue_errno(dev, q)?;
        if e != 0 {
            return Ok(e);
        }
        check!(
            t.elapsed() < Duration::from_secs(60),
            "queue {q} never failed"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Queue ids, flags and limits.
fn queue_create_destroy() -> TestResult {
    let unbound = open(0)?;
    check_eq!(unbound.queue_create(0), Err(errno(libc::ENOENT)));
    let dev = bound(0)?;
    let a = dev.queue_create(0)?;
    let b = dev.queue_create(100)?;
    check!(a != 0 && b != 0 && a != b);
    let mut arg = sys::drm_nsvm_queue_create {
        size: std::mem::size_of::<sys::drm_nsvm_queue_create>() as u32,
        flags: 1,
        ..Default::default()
    };
    check_eq!(dev.queue_create_raw(&mut arg), Err(errno(libc::EINVAL)));
    arg.flags = 0;
    arg.pad = 1;
    check_eq!(dev.queue_create_raw(&mut arg), Err(errno(libc::EINVAL)));
    arg.pad = 0;
    arg.timeout_ms = sys::DRM_NSVM_MAX_TIMEOUT_MS + 1;
    check_eq!(dev.queue_create_raw(&mut arg), Err(errno(libc::EINVAL)));
    arg.size -= 1;
    arg.timeout_ms = 0;
    check_eq!(dev.queue_create_raw(&mut arg), Err(errno(libc::EINVAL)));
    let mut d = sys::drm_nsvm_queue_destroy {
        size: std::mem::size_of::<sys::drm_nsvm_queue_destroy>() as u32,
        queue_id: a,
        pad: 1,
    };
    check_eq!(dev.queue_destroy_raw(&mut d), Err(errno(libc::EINVAL)));
    dev.queue_destroy(a)?;
    check_eq!(dev.queue_destroy(a), Err(errno(libc::ENOENT)));
    check_eq!(dev.queue_destroy(0), Err(errno(libc::ENOENT)));
    check_eq!(dev.queue_destroy(u32::MAX), Err(errno(libc::ENOENT)));
    check_eq!(dev.queue_query(a).map(|_| ()), Err(errno(libc::ENOENT)));
    // Up to the limit, then ENOSPC; ids are never reused.
    let mut ids = vec![b];
    while ids.len() < sys::DRM_NSVM_MAX_QUEUES as usize {
        ids.push(dev.queue_create(0)?);
    }
    check_eq!(dev.queue_create(0), Err(errno(libc::ENOSPC)));
    check!(!ids.contains(&a));
    dev.queue_destroy(b)?;
    check!(dev.queue_create(0)? != b);
    Ok(())
}

/// A job fills memory and writes its fence; SUBMIT returned before.
fn submit_fence() -> TestResult {
    let dev = bound(0)?;
    let q = dev.queue_create(0)?;
    let data = Map::new(4 * MB2, RW);
    let fence = Map::new(PAGE, RW);
    let f = fence.addr();
    let seq = dev.submit(
        q,
        &[Cmd::fill(
            data.addr(),
            data.len as u64,
            0x1122_3344_5566_7788,
        )],
        Some((f, 7)),
    )?;
    check_eq!(seq, 1);
    dev.wait_fence(f, 7, q, LONG_NS)?;
    check_eq!(peek(f), 7);
    check!(data
        .bytes()
        .chunks(8)
        .all(|w| w == 0x1122_3344_5566_7788u64.to_le_bytes()));
    let st = dev.queue_query(q)?;
    check_eq!((st.submitted, st.completed, st.error), (1, 1, 0));
    // A job of no commands: only the fence.
    let seq = dev.submit(q, &[], Some((f, 8)))?;
    check_eq!(seq, 2);
    dev.wait_seqno(q, 2, LONG_NS)?;
    check_eq!(peek(f), 8);
    Ok(())
}

/// Two threads submit to one queue at once: each SUBMIT returns its own
/// job's sequence number, and together they are 1 to N.
fn submit_seqno_concurrent() -> TestResult {
    const N: u64 = 400;
    let dev = bound(0)?;
    let q = dev.queue_create(0)?;
    // SAFETY: A second fd of the same DRM file, for the second thread.
    let fd = unsafe { libc::dup(dev.file().as_raw_fd()) };
    check!(fd >= 0);
    // SAFETY: `fd` is ours.
    let other = Device::from_fd(unsafe { OwnedFd::from_raw_fd(fd) })?;
    let run =
        |d: &Device| -> Vec<u64> { (0..N).filter_map(|_| d.submit(q, &[], None).ok()).collect() };
    let (a, b) = std::thread::scope(|s| {
        let t = s.spawn(|| run(&other));
        let a = run(&dev);
        (a, t.join().unwrap_or_default())
    });
    let mut all: Vec<u64> = a.iter().chain(&b).copied().collect();
    all.sort_unstable();
    check_eq!(all.len() as u64, 2 * N);
    check!(
        all.iter().copied().eq(1..=2 * N),
        "sequence numbers repeat or skip"
    );
    dev.wait_seqno(q, 2 * N, LONG_NS)?;
    Ok(())
}

/// Bad SUBMIT arguments: EINVAL before anything is queued.
fn submit_bad_args() -> TestResult {
    let dev = bound(0)?;
    let q = dev.queue_create(0)?;
    let m = Map::new(PAGE, RW);
    let ok = [Cmd::fill(m.addr(), 8, 1)];
    let limit = (1u64 << dev.get_param(sys::DRM_NSVM_PARAM_VA_BITS)?) - PAGE64;
    for fence in [m.addr() + 4, limit, limit - 4, u64::MAX - 7, 1 << 63] {
        check_eq!(
            dev.submit(q, &ok, Some((fence, 1))),
            Err(errno(libc::EINVAL)),
            "fence {fence:#x}"
        );
    }
    let mut out = [0u8; 8];
    let read = [Cmd::read(out.as_mut_ptr() as u64, m.addr(), 8)];
    check_eq!(dev.submit(q, &read, None), Err(errno(libc::EINVAL)));
    let bad = [Cmd::fill(limit - 4, 8, 1)];
    check_eq!(dev.submit(q, &bad, None), Err(errno(libc::EINVAL)));
    check_eq!(dev.submit(0, &ok, None), Err(errno(libc::ENOENT)));
    check_eq!(dev.submit(q + 1000, &ok, None), Err(errno(libc::ENOENT)));
    let mut arg = sys::drm_nsvm_submit {
        size: std::mem::size_of::<sys::drm_nsvm_submit>() as u32,
        queue_id: q,
        cmds: ok.as_ptr() as u64,
        num_cmds: 1,
        cmd_size: std::mem::size_of::<Cmd>() as u32,
        pad: 1,
        ..Default::default()
    };
    check_eq!(dev.submit_raw(&mut arg), Err(errno(libc::EINVAL)));
    arg.pad = 0;
    arg.num_cmds = sys::DRM_NSVM_EXEC_MAX_CMDS + 1;
    check_eq!(dev.submit_raw(&mut arg), Err(errno(libc::EINVAL)));
    arg.num_cmds = 1;
    arg.cmds = 8;
    check_eq!(dev.submit_raw(&mut arg), Err(errno(libc::EFAULT)));
    // Nothing of that was queued.
    check_eq!(dev.queue_query(q)?.submitted, 0);
    Ok(())
}

/// One queue, many jobs: job i copies the fence (job i-1's value) to
/// log[i] and then writes i. Every fence is written once and in order.
fn fence_order() -> TestResult {
    const N: u64 = 200;
    let dev = bound(0)?;
    let q = dev.queue_create(0)?;
    let fence = Map::new(PAGE, RW);
    let log = Map::new((N as usize + 1) * 8, RW);
    let f = fence.addr();
    for i in 1..=N {
        let slot = log.addr() + i * 8;
        dev.submit(q, &[Cmd::copy(slot, f, 8)], Some((f, i)))?;
    }
    dev.wait_fence(f, N, q, LONG_NS)?;
    for i in 1..=N {
        check_eq!(
            peek(log.addr() + i * 8),
            i - 1,
            "job {i} saw the fence of job {}",
            i - 1
        );
    }
    check_eq!(dev.queue_query(q)?.completed, N);
    Ok(())
}

/// Queues run beside each other: one waits on a semaphore that a job of
/// another queue releases.
fn queues_concurrent() -> TestResult {
    let dev = bound(0)?;
    let (a, b) = (dev.queue_create(0)?, dev.queue_create(0)?);
    let m = Map::new(PAGE, RW);
    let (sem, fa, fb) = (m.addr(), m.addr() + 8, m.addr() + 16);
    dev.submit(a, &[Cmd::sem_wait(sem, 1)], Some((fa, 1)))?;
    std::thread::sleep(Duration::from_millis(20));
    check_eq!(peek(fa), 0);
    dev.submit(b, &[Cmd::fill(sem, 8, 1)], Some((fb, 1)))?;
    dev.wait_fence(fa, 1, a, LONG_NS)?;
    dev.wait_fence(fb, 1, b, LONG_NS)?;
    Ok(())
}

/// A job that runs long without faulting or sleeping gives its CPU up at
/// the end of each time slice: a queue's job submitted behind it on the
/// same CPU completes while it still runs, and the device counts the
/// slices given up.
fn time_slices() -> TestResult {
    // One CPU: both queues' workers run in its pool.
    // SAFETY: A zeroed cpu_set_t is valid; this thread only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        check_eq!(
            libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set),
            0
        );
    }
    let dev = bound(0)?;
    let (a, b) = (dev.queue_create(0)?, dev.queue_create(0)?);
    let buf = Map::new(64 << 20, RW);
    let f = Map::new(PAGE, RW);
    let (fa, fb) = (f.addr(), f.addr() + 8);
    let fill = |q, v: u64| -> Result<(), Outcome> {
        dev.submit(
            q,
            &[Cmd::fill(buf.addr(), buf.len as u64, v)],
            Some((fa, v)),
        )?;
        Ok(())
    };
    // Mapped first: the job below neither faults nor sleeps.
    fill(a, 1)?;
    dev.wait_fence(fa, 1, a, LONG_NS)?;
    let before = debugfs_stat(0, "faults", "yields")?;
    let t = Instant::now();
    fill(a, 2)?;
    dev.submit(b, &[], Some((fb, 1)))?;
    dev.wait_fence(fb, 1, b, LONG_NS)?;
    let short = t.elapsed();
    let long_running = peek(fa) == 1;
    dev.wait_fence(fa, 2, a, LONG_NS)?;
    let long = t.elapsed();
    let yields = debugfs_stat(0, "faults", "yields")? - before;
    println!("short job {short:?}, long one {long:?}, {yields} slices given up");
    check!(long_running, "the short job waited for the long one");
    check!(yields > 0);
    check!(buf.bytes().chunks_exact(8).all(|w| w == 2u64.to_le_bytes()));
    Ok(())
}

/// The commands of EXEC through four queues with overlapping jobs: each
/// queue fills, copies, runs AXPY32 and an atomic on its own buffers
/// while the others do.
fn exec_ops_async() -> TestResult {
    const Q: usize = 4;
    const LEN: usize = MB2;
    let dev = bound(0)?;
    let counter = Map::new(PAGE, RW);
    let fences = Map::new(PAGE, RW);
    let mut bufs = Vec::new();
    let mut queues = Vec::new();
    for i in 0..Q {
        let (x, y, z) = (Map::new(LEN, RW), Map::new(LEN, RW), Map::new(LEN, RW));
        let q = dev.queue_create(0)?;
        let cmds = [
            Cmd::fill(x.addr(), LEN as u64, (2 + i as u64) * 0x1_0000_0001),
            Cmd::fill(y.addr(), LEN as u64, 0x0000_0005_0000_0005),
            Cmd::axpy32(y.addr(), 3, x.addr(), LEN as u64),
            Cmd::copy(z.addr(), y.addr(), LEN as u64),
            Cmd::add64(counter.addr(), 1),
        ];
        dev.submit(q, &cmds, Some((fences.addr() + i as u64 * 8, 1)))?;
        queues.push(q);
        bufs.push((x, y, z));
    }
    for (i, &q) in queues.iter().enumerate() {
        dev.wait_fence(fences.addr() + i as u64 * 8, 1, q, LONG_NS)?;
        let want = 5 + 3 * (2 + i as u32);
        check!(
            bufs[i].2.bytes().chunks(4).all(|w| w == want.to_le_bytes()),
            "queue {i}: z is not {want}"
        );
    }
    check_eq!(peek(counter.addr()), Q as u64);
    Ok(())
}

/// Device memory through queues: jobs on two queues read, write and add
/// to data in device memory while a range with a migrate-on-fault policy
/// moves there on the jobs' faults; the CPU then finds everything as the
/// jobs left it (its reads bring the pages back).
fn device_memory_async() -> TestResult {
    let dev = bound(0)?;
    if dev.get_param(sys::DRM_NSVM_PARAM_VRAM_SIZE)? == 0 {
        nsvm_igt_tests::skip!("no device memory");
    }
    let (qa, qb) = (dev.queue_create(0)?, dev.queue_create(0)?);
    let mut v = aligned(2 * MB2);
    cpu_fill(&mut v, 5);
    let want = pattern(5, 2 * MB2);
    check!(dev.migrate(v.addr(), v.len as u64, Mem::Device)?.migrated > 0);
    // Migrates to device memory when the GPU faults on it.
    let mut p = aligned(MB2);
    cpu_fill(&mut p, 6);
    dev.set_attr(
        p.addr(),
        MB2 as u64,
        nsvm_uapi::Attr {
            preferred: sys::DRM_NSVM_LOCATION_DEVICE,
            migrate_on_fault: true,
            atomic: sys::DRM_NSVM_ATOMIC_DEVICE,
        },
    )?;
    let out = Map::new(2 * MB2, RW);
    let counter = aligned(MB2);
    let f = Map::new(PAGE, RW);
    // Queue a: copy the device-memory data out, then fill the policy range.
    dev.submit(
        qa,
        &[
            Cmd::copy(out.addr(), v.addr(), v.len as u64),
            Cmd::fill(p.addr(), MB2 as u64, 0x0707_0707_0707_0707),
        ],
        Some((f.addr(), 1)),
    )?;
    // Queue b, at the same time: write the second half of the device data
    // and add to a counter whose policy migrates it for atomics.
    dev.set_attr(
        counter.addr(),
        MB2 as u64,
        nsvm_uapi::Attr {
            preferred: sys::DRM_NSVM_LOCATION_NONE,
            migrate_on_fault: false,
            atomic: sys::DRM_NSVM_ATOMIC_DEVICE,
        },
    )?;
    let half = v.addr() + MB2 as u64;
    let adds: Vec<Cmd> = (0..64).map(|_| Cmd::add64(counter.addr(), 1)).collect();
    dev.submit(
        qb,
        &[Cmd::fill(half, MB2 as u64, 0x0909_0909_0909_0909)],
        None,
    )?;
    dev.submit(qb, &adds, Some((f.addr() + 8, 1)))?;
    dev.wait_fence(f.addr(), 1, qa, LONG_NS)?;
    dev.wait_fence(f.addr() + 8, 1, qb, LONG_NS)?;
    // What the GPU left, in device memory or not: the policy range moved
    // (or was mapped where it was, best effort), the copy saw the data
    // before queue b's fill or after it, page by page.
    let moved = count(
        &cpu_states(&dev, p.addr(), MB2 / PAGE)?,
        sys::DRM_NSVM_PTE_DEVICE,
    );
    println!(
        "policy range: {moved} of {} pages in device memory",
        MB2 / PAGE
    );
    check!(p.bytes().iter().all(|&b| b == 7));
    check!(v.bytes()[..MB2] == want[..MB2]);
    check!(v.bytes()[MB2..].iter().all(|&b| b == 9));
    check!(out.bytes()[..MB2] == want[..MB2]);
    for (i, pg) in out.bytes()[MB2..].chunks(PAGE).enumerate() {
        let before = &want[MB2 + i * PAGE..MB2 + (i + 1) * PAGE];
        check!(
            pg == before || pg.iter().all(|&b| b == 9),
            "page {i} of the copy is torn"
        );
    }
    check_eq!(peek(counter.addr()), 64);
    Ok(())
}

/// A fence whose page is gone, read-only or freed while the job runs fails
/// the queue with EFAULT at the fence; a fence in device memory works.
fn fence_bad_memory() -> TestResult {
    let dev = bound(0)?;
    // Unmapped.
    let gone = Map::new(PAGE, RW);
    let ga = gone.addr();
    drop(gone);
    let q = dev.queue_create(0)?;
    dev.submit(q, &[], Some((ga, 1)))?;
    check_eq!(wait_failed(&dev, q)?, libc::EFAULT);
    let st = dev.queue_query(q)?;
    check_eq!((st.fault_addr, st.fault_write, st.completed), (ga, 1, 0));
    // Read-only.
    let ro = Map::new(PAGE, libc::PROT_READ);
    let q = dev.queue_create(0)?;
    dev.submit(q, &[], Some((ro.addr(), 1)))?;
    check_eq!(wait_failed(&dev, q)?, libc::EFAULT);
    check_eq!(dev.queue_query(q)?.fault_addr, ro.addr());
    check_eq!(peek(ro.addr()), 0);
    // Freed while the job waits on a semaphore before it.
    let m = Map::new(PAGE, RW);
    let late = Map::new(PAGE, RW);
    let la = late.addr();
    let q = dev.queue_create(0)?;
    dev.submit(q, &[Cmd::sem_wait(m.addr(), 1)], Some((la, 1)))?;
    std::thread::sleep(Duration::from_millis(20));
    drop(late);
    poke(m.addr(), 1);
    check_eq!(wait_failed(&dev, q)?, libc::EFAULT);
    check_eq!(dev.queue_query(q)?.fault_addr, la);
    // In device memory: the GPU writes it there, the CPU's read brings it
    // back.
    if dev.get_param(sys::DRM_NSVM_PARAM_VRAM_SIZE)? > 0 {
        let v = aligned(MB2);
        poke(v.addr(), 0);
        check!(dev.migrate(v.addr(), MB2 as u64, Mem::Device)?.migrated > 0);
        let q = dev.queue_create(0)?;
        dev.submit(q, &[], Some((v.addr(), 42)))?;
        dev.wait_seqno(q, 1, LONG_NS)?;
        check_eq!(peek(v.addr()), 42);
    }
    Ok(())
}

/// A job faulting on an unmapped address fails its queue with the address;
/// the jobs behind it are cancelled, SUBMIT says ECANCELED, a wait naming
/// the queue returns at once, and other queues are unaffected.
fn unmapped_fault_fails_queue() -> TestResult {
    let dev = bound(0)?;
    let (q, other) = (dev.queue_create(0)?, dev.queue_create(0)?);
    let fence = Map::new(PAGE, RW);
    let gone = Map::new(4 * PAGE, RW);
    let bad = gone.addr() + PAGE64 + 24;
    drop(gone);
    // The first job faults only once both are queued: a queue that failed
    // refuses submissions (ECANCELED, checked below).
    let gate = fence.addr() + 24;
    dev.submit(
        q,
        &[Cmd::sem_wait(gate, 1), Cmd::fill(bad, 8, 1)],
        Some((fence.addr(), 1)),
    )?;
    dev.submit(q, &[], Some((fence.addr() + 8, 2)))?;
    poke(gate, 1);
    check_eq!(wait_failed(&dev, q)?, libc::EFAULT);
    let st = dev.queue_query(q)?;
    check_eq!(st.fault_addr & !(PAGE64 - 1), bad & !(PAGE64 - 1));
    check_eq!(st.fault_write, 1);
    check_eq!((st.submitted, st.completed), (2, 0));
    let t = Instant::now();
    check_eq!(
        dev.wait_fence(fence.addr(), 1, q, LONG_NS),
        Err(errno(libc::EFAULT))
    );
    check!(t.elapsed() < Duration::from_secs(5));
    check_eq!(dev.wait_seqno(q, 2, LONG_NS), Err(errno(libc::EFAULT)));
    check_eq!(dev.submit(q, &[], None), Err(errno(libc::ECANCELED)));
    check_eq!((peek(fence.addr()), peek(fence.addr() + 8)), (0, 0));
    dev.submit(other, &[], Some((fence.addr() + 16, 3)))?;
    dev.wait_fence(fence.addr() + 16, 3, other, LONG_NS)?;
    Ok(())
}

/// A job that never makes progress fails its queue with ETIMEDOUT after
/// the queue's timeout.
fn hung_job_times_out() -> TestResult {
    let dev = bound(0)?;
    let q = dev.queue_create(200)?;
    let m = Map::new(PAGE, RW);
    let t = Instant::now();
    dev.submit(q, &[Cmd::sem_wait(m.addr(), 1)], Some((m.addr() + 8, 1)))?;
    check_eq!(
        dev.wait_fence(m.addr() + 8, 1, q, LONG_NS),
        Err(errno(libc::ETIMEDOUT))
    );
    let took = t.elapsed();
    check!(
        took >= Duration::from_millis(200),
        "timed out after {took:?}"
    );
    check!(took < Duration::from_secs(20), "timed out after {took:?}");
    check_eq!(peek(m.addr() + 8), 0);
    Ok(())
}

/// A job whose faults are served makes progress however long it takes in
/// all: the queue's timeout bounds the time without a fault served, not
/// the job. With 4 KiB fault windows an 8 MiB FILL is 2048 faults, served
/// 64 at a time before the first page is written; a queue whose timeout is
/// a quarter of what the job took on a queue with the default completes it.
fn faulting_job_makes_progress() -> TestResult {
    let dev = open(0)?;
    dev.svm_init(PAGE as u64)?;
    let fence = Map::new(PAGE, RW);
    let run = |q: u32, value: u64| -> Result<Duration, Outcome> {
        let buf = Map::new(4 * MB2, RW);
        let t = Instant::now();
        dev.submit(
            q,
            &[Cmd::fill(buf.addr(), buf.len as u64, value)],
            Some((fence.addr(), value)),
        )?;
        dev.wait_fence(fence.addr(), value, q, LONG_NS)?;
        let took = t.elapsed();
        check!(buf
            .bytes()
            .chunks_exact(8)
            .all(|w| w == value.to_le_bytes()));
        Ok(took)
    };
    let took = run(dev.queue_create(0)?, 1)?;
    let timeout = Duration::from_millis((took.as_millis() / 4).max(1) as u64);
    let again = run(dev.queue_create(timeout.as_millis() as u32)?, 2)?;
    println!("{took:?} on the default timeout, {again:?} on {timeout:?}");
    check!(again > timeout, "{again:?} is no longer than {timeout:?}");
    Ok(())
}

/// WAIT's timeouts and arguments.
fn wait_timeouts() -> TestResult {
    let dev = bound(0)?;
    let q = dev.queue_create(0)?;
    let m = Map::new(PAGE, RW);
    let f = m.addr();
    // Already satisfied, and timeout 0 on an unsatisfied one.
    check_eq!(dev.wait_fence(f, 0, 0, 0), Ok(()));
    let t = Instant::now();
    check_eq!(dev.wait_fence(f, 1, 0, 0), Err(errno(libc::ETIME)));
    check!(t.elapsed() < Duration::from_millis(500));
    // Short.
    let t = Instant::now();
    check_eq!(dev.wait_fence(f, 1, q, 30_000_000), Err(errno(libc::ETIME)));
    check!(t.elapsed() >= Duration::from_millis(30));
    // Infinite, ended by a job.
    let s = m.addr() + 8;
    dev.submit(q, &[Cmd::sem_wait(s, 1)], Some((f, 5)))?;
    std::thread::sleep(Duration::from_millis(20));
    poke(s, 1);
    dev.wait_fence(f, 5, q, FOREVER)?;
    // Comparisons under a mask.
    let mut w = sys::drm_nsvm_wait {
        size: std::mem::size_of::<sys::drm_nsvm_wait>() as u32,
        addr: f,
        value: 0xff05,
        mask: 0xff,
        op: sys::DRM_NSVM_WAIT_EQ,
        timeout_ns: 0,
        ..Default::default()
    };
    check_eq!(dev.wait_raw(&mut w), Ok(()));
    for (op, value, ok) in [
        (sys::DRM_NSVM_WAIT_NEQ, 5, false),
        (sys::DRM_NSVM_WAIT_GT, 4, true),
        (sys::DRM_NSVM_WAIT_GT, 5, false),
        (sys::DRM_NSVM_WAIT_LT, 6, true),
        (sys::DRM_NSVM_WAIT_LTE, 5, true),
        (sys::DRM_NSVM_WAIT_GTE, 6, false),
    ] {
        w.op = op;
        w.value = value;
        let want = if ok { Ok(()) } else { Err(errno(libc::ETIME)) };
        check_eq!(dev.wait_raw(&mut w), want, "op {op} value {value}");
    }
    // Bad arguments.
    let limit = (1u64 << dev.get_param(sys::DRM_NSVM_PARAM_VA_BITS)?) - PAGE64;
    let bad: [fn(&mut sys::drm_nsvm_wait); 8] = [
        |w| w.op = 6,
        |w| w.flags = 2,
        |w| w.pad = 1,
        |w| w.addr += 4,
        |w| w.size += 8,
        |w| w.flags = sys::DRM_NSVM_WAIT_SEQNO,
        |w| {
            w.flags = sys::DRM_NSVM_WAIT_SEQNO;
            w.addr = 0;
        },
        |w| w.addr = u64::MAX - 7,
    ];
    for (i, f) in bad.iter().enumerate() {
        let mut a = sys::drm_nsvm_wait {
            op: sys::DRM_NSVM_WAIT_EQ,
            ..w
        };
        f(&mut a);
        check_eq!(dev.wait_raw(&mut a), Err(errno(libc::EINVAL)), "case {i}");
    }
    for addr in [limit, limit - 4, 1 << 63] {
        let mut a = sys::drm_nsvm_wait { addr, ..w };
        check_eq!(dev.wait_raw(&mut a), Err(errno(libc::EINVAL)), "{addr:#x}");
    }
    let mut a = sys::drm_nsvm_wait { addr: 8, ..w };
    check_eq!(dev.wait_raw(&mut a), Err(errno(libc::EFAULT)));
    let mut a = sys::drm_nsvm_wait {
        queue_id: q + 100,
        ..w
    };
    check_eq!(dev.wait_raw(&mut a), Err(errno(libc::ENOENT)));
    Ok(())
}

/// A one-byte message with room for one fd of control data: `iov` and
/// `cbuf` must outlive its use.
fn fd_msg(iov: &mut libc::iovec, cbuf: &mut Vec<u8>) -> libc::msghdr {
    // SAFETY: Only computes a size.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<i32>() as u32) } as usize;
    cbuf.resize(space, 0);
    // SAFETY: A zeroed msghdr is valid; the fields set point at live buffers.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    msg
}

/// Sends `fd` over the unix socket `sock`.
fn send_fd(sock: i32, fd: i32) {
    let mut buf = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut cbuf = Vec::new();
    let msg = fd_msg(&mut iov, &mut cbuf);
    // SAFETY: `msg` has room for one fd's control message.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<i32>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<i32>(), fd);
        assert_eq!(libc::sendmsg(sock, &msg, 0), 1);
    }
}

/// Receives an fd from the unix socket `sock`.
fn recv_fd(sock: i32) -> Option<OwnedFd> {
    let mut buf = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut cbuf = Vec::new();
    let mut msg = fd_msg(&mut iov, &mut cbuf);
    // SAFETY: As in `send_fd`; the fd received is ours.
    unsafe {
        if libc::recvmsg(sock, &mut msg, 0) != 1 {
            return None;
        }
        let c = libc::CMSG_FIRSTHDR(&msg);
        if c.is_null() {
            return None;
        }
        Some(OwnedFd::from_raw_fd(std::ptr::read_unaligned(
            libc::CMSG_DATA(c).cast::<i32>(),
        )))
    }
}

/// The owner exits with jobs queued, running (on a semaphore) and stalled
/// on faults; the fd, passed over SCM_RIGHTS, still waits, queries and
/// closes; device memory returns to where it was.
fn owner_exits_with_jobs() -> TestResult {
    for kill in [false, true] {
        let base = vram_used_settled(0)?;
        let mut sv = [0i32; 2];
        // SAFETY: A socket pair for the fd.
        check_eq!(
            unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, sv.as_mut_ptr()) },
            0
        );
        let (pid, ready_) = fork_ready(|wfd| {
            let Ok(dev) = bound(0) else { return 1 };
            let (Ok(running), Ok(faulting)) = (dev.queue_create(0), dev.queue_create(0)) else {
                return 2;
            };
            // Leaked on purpose: the address space goes with the process.
            let sem = Box::leak(Box::new(Map::new(PAGE, RW)));
            let big = Box::leak(Box::new(Map::new(64 << 20, RW)));
            let vram = Box::leak(Box::new(aligned(4 * MB2)));
            cpu_fill(vram, 3);
            let _ = dev.migrate(vram.addr(), vram.len as u64, Mem::Device);
            let f = sem.addr() + 8;
            let ok = dev
                .submit(running, &[Cmd::sem_wait(sem.addr(), 1)], Some((f, 1)))
                .and_then(|_| dev.submit(running, &[Cmd::fill(big.addr(), 8, 1)], Some((f, 2))))
                .and_then(|_| {
                    dev.submit(
                        faulting,
                        &[Cmd::fill(big.addr(), big.len as u64, 9)],
                        Some((f + 8, 1)),
                    )
                });
            if ok.is_err() {
                return 3;
            }
            send_fd(sv[0], dev.file().as_raw_fd());
            ready(wfd);
            if kill {
                // SAFETY: Kills ourselves, mid-work.
                unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
            }
            0
        })?;
        check!(ready_, "child not ready");
        let fd = recv_fd(sv[1]);
        // SAFETY: Our socket pair and our child.
        let mut st = 0;
        unsafe {
            libc::close(sv[0]);
            libc::close(sv[1]);
            libc::waitpid(pid, &mut st, 0);
        }
        let dev = Device::from_fd(fd.ok_or_else(|| Outcome::Fail("no fd".into()))?)?;
        for q in [1, 2] {
            let t = Instant::now();
            let r = dev.wait_seqno(q, 2, LONG_NS);
            check!(t.elapsed() < Duration::from_secs(30));
            let e = queue_errno(&dev, q)?;
            check!(
                e == libc::ESRCH || e == libc::ECANCELED,
                "queue {q}: error {e}, wait {r:?}"
            );
            check_eq!(r, Err(errno(e)));
        }
        // What needs the address space says it is gone.
        check_eq!(dev.queue_create(0), Err(errno(libc::ESRCH)));
        check_eq!(dev.submit(1, &[], None), Err(errno(libc::ESRCH)));
        drop(dev);
        let t = Instant::now();
        while vram_used_settled(0)? > base && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        check_eq!(vram_used_settled(0)?, base, "kill {kill}");
    }
    Ok(())
}

/// The file is released while the handler serves its faults: many
/// processes submit big first-touch jobs and close at once.
fn release_while_serving() -> TestResult {
    for round in 0..40 {
        let st = in_child(|| {
            let Ok(dev) = bound(0) else { return 1 };
            let Ok(q) = dev.queue_create(0) else { return 2 };
            let big = Box::leak(Box::new(Map::new(16 << 20, RW)));
            if dev
                .submit(q, &[Cmd::fill(big.addr(), big.len as u64, 1)], None)
                .is_err()
            {
                return 3;
            }
            // Let some faults reach the handler, then close mid-service.
            std::thread::sleep(Duration::from_micros(200 * (round % 5)));
            drop(dev);
            0
        });
        check_eq!(st, 0, "round {round}");
    }
    Ok(())
}

/// A forked child's queue operations on the inherited fd fail with EPERM
/// (its reads of queue state work), and the parent's jobs go on.
fn fork_child_eperm() -> TestResult {
    let dev = bound(0)?;
    let q = dev.queue_create(0)?;
    let m = Map::new(PAGE, RW);
    let (sem, f) = (m.addr(), m.addr() + 8);
    dev.submit(q, &[Cmd::sem_wait(sem, 1)], Some((f, 1)))?;
    let st = in_child(|| {
        let eperm = |r: Result<(), nsvm_uapi::Error>| r == Err(errno(libc::EPERM));
        if !eperm(dev.queue_create(0).map(drop))
            || !eperm(dev.submit(q, &[], None).map(drop))
            || !eperm(dev.queue_destroy(q))
            || !eperm(dev.wait_fence(f, 1, q, 0))
        {
            return 1;
        }
        // Reading queue state is fine.
        match (dev.queue_query(q), dev.wait_seqno(q, 1, 0)) {
            (Ok(s), Err(e)) if s.submitted == 1 && e.errno == libc::ETIME => 0,
            _ => 2,
        }
    });
    check_eq!(st, 0);
    poke(sem, 1);
    dev.wait_fence(f, 1, q, LONG_NS)?;
    check_eq!(dev.queue_query(q)?.error, 0);
    Ok(())
}

/// SIGKILL ends a process sleeping in WAIT.
fn sigkill_in_wait() -> TestResult {
    let (pid, ok) = fork_ready(|wfd| {
        let Ok(dev) = bound(0) else { return 1 };
        let m = Box::leak(Box::new(Map::new(PAGE, RW)));
        ready(wfd);
        let _ = dev.wait_fence(m.addr(), 1, 0, FOREVER);
        2
    })?;
    check!(ok);
    std::thread::sleep(Duration::from_millis(50));
    let mut st = 0;
    // SAFETY: Our child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, &mut st, 0);
    }
    check!(libc::WIFSIGNALED(st) && libc::WTERMSIG(st) == libc::SIGKILL);
    Ok(())
}

/// Destroying a queue cancels its jobs: none writes its fence after.
fn destroy_cancels() -> TestResult {
    let dev = bound(0)?;
    let q = dev.queue_create(0)?;
    let m = Map::new(PAGE, RW);
    let big = Map::new(32 << 20, RW);
    dev.submit(q, &[Cmd::sem_wait(m.addr(), 1)], Some((m.addr() + 8, 1)))?;
    dev.submit(
        q,
        &[Cmd::fill(big.addr(), big.len as u64, 1)],
        Some((m.addr() + 16, 1)),
    )?;
    dev.queue_destroy(q)?;
    poke(m.addr(), 1);
    std::thread::sleep(Duration::from_millis(50));
    check_eq!((peek(m.addr() + 8), peek(m.addr() + 16)), (0, 0));
    Ok(())
}

/// Two processes fault at once, one with a storm of jobs: the other's job
/// still completes.
fn fault_storm_fairness() -> TestResult {
    let (pid, ok) = fork_ready(|wfd| {
        let Ok(dev) = bound(0) else { return 1 };
        let mut qs = Vec::new();
        for _ in 0..8 {
            match dev.queue_create(0) {
                Ok(q) => qs.push(q),
                Err(_) => return 2,
            }
        }
        ready(wfd);
        loop {
            let m = Box::leak(Box::new(Map::new(8 << 20, RW)));
            for &q in &qs {
                let _ = dev.submit(q, &[Cmd::fill(m.addr(), m.len as u64, 1)], None);
            }
            std::thread::sleep(Duration::from_millis(100));
            for &q in &qs {
                let _ = dev.wait_seqno(q, dev.queue_query(q).map_or(0, |s| s.submitted), LONG_NS);
            }
            // SAFETY: Our own mapping.
            unsafe { libc::munmap(m.ptr.cast(), m.len) };
        }
    })?;
    check!(ok);
    let dev = bound(0)?;
    let q = dev.queue_create(0)?;
    let m = Map::new(4 * MB2, RW);
    let f = Map::new(PAGE, RW);
    let t = Instant::now();
    dev.submit(
        q,
        &[Cmd::fill(m.addr(), m.len as u64, 2)],
        Some((f.addr(), 1)),
    )?;
    let r = dev.wait_fence(f.addr(), 1, q, LONG_NS);
    let took = t.elapsed();
    // SAFETY: Our child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    r?;
    println!("job beside a fault storm: {took:?}");
    check!(took < Duration::from_secs(30));
    Ok(())
}

igt_main! {
    "queue-create-destroy" => queue_create_destroy,
    "submit-fence" => submit_fence,
    "submit-seqno-concurrent" => submit_seqno_concurrent,
    "submit-bad-args" => submit_bad_args,
    "fence-order" => fence_order,
    "queues-concurrent" => queues_concurrent,
    "time-slices" => time_slices,
    "exec-ops-async" => exec_ops_async,
    "fence-bad-memory" => fence_bad_memory,
    "device-memory-async" => device_memory_async,
    "unmapped-fault-fails-queue" => unmapped_fault_fails_queue,
    "hung-job-times-out" => hung_job_times_out,
    "faulting-job-makes-progress" => faulting_job_makes_progress,
    "wait-timeouts" => wait_timeouts,
    "owner-exits-with-jobs" => owner_exits_with_jobs,
    "release-while-serving" => release_while_serving,
    "fork-child-eperm" => fork_child_eperm,
    "sigkill-in-wait" => sigkill_in_wait,
    "destroy-cancels" => destroy_cancels,
    "fault-storm-fairness" => fault_storm_fairness,
}
