// SPDX-License-Identifier: MIT

//! nsvm_syncobj: DRM sync objects on nsvm, and as in-fences of SUBMIT.
//!
//! The DRM core's sync object ioctls work on an nsvm file (binary and
//! timeline, as IGT's syncobj_basic and syncobj_timeline use them), and a
//! queued job waits for its in-fences before it starts: jobs behind it on
//! its queue wait too, other queues do not. The unsignaled fences come from
//! sw_sync (debugfs `sync/sw_sync`), as in IGT. Cancelling a waiting job
//! (queue destroy, file close) does not wait for its fences; a fence that
//! signals with an error does not fail the job; the queue's timeout starts
//! after the wait. And the boundaries of the new SUBMIT fields.

use std::{
    fs::File,
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
use nsvm_uapi::{sync, sys, Cmd, Device};

/// Long enough for any job of these tests under TCG.
const LONG_NS: i64 = 60_000_000_000;
/// How long a test watches a job that must not run.
const HOLD: Duration = Duration::from_millis(150);

/// `struct sw_sync_create_fence_data` of drivers/dma-buf/sw_sync.c (the
/// debug facility has no uapi header; IGT declares it the same way).
#[repr(C)]
struct SwSyncCreateFence {
    value: u32,
    name: [u8; 32],
    fence: i32,
}

const SW_SYNC_IOC_CREATE_FENCE: u64 =
    nsvm_uapi::ioc(3, b'W' as u32, 0, std::mem::size_of::<SwSyncCreateFence>());
const SW_SYNC_IOC_INC: u64 = nsvm_uapi::ioc(1, b'W' as u32, 1, 4);

/// A sw_sync timeline: fences that signal when userspace advances it.
/// Closing it signals its pending fences with `ENOENT`.
struct Timeline(File);

impl Timeline {
    /// The test kernel has `CONFIG_SW_SYNC`: no skip without it.
    fn new() -> Result<Self, Outcome> {
        Ok(Self(File::open("/sys/kernel/debug/sync/sw_sync")?))
    }

    /// A sync file whose fence signals at timeline value `value`.
    fn fence(&self, value: u32) -> Result<OwnedFd, Outcome> {
        let mut arg = SwSyncCreateFence {
            value,
            name: *b"nsvm_syncobj\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
            fence: -1,
        };
        // SAFETY: The argument is the struct this ioctl takes.
        let r = unsafe {
            libc::ioctl(
                self.0.as_raw_fd(),
                SW_SYNC_IOC_CREATE_FENCE as _,
                &raw mut arg,
            )
        };
        check!(r == 0 && arg.fence >= 0, "SW_SYNC_IOC_CREATE_FENCE failed");
        // SAFETY: The kernel returned a new descriptor, ours.
        Ok(unsafe { OwnedFd::from_raw_fd(arg.fence) })
    }

    /// Advances the timeline by `n`.
    fn inc(&self, n: u32) -> TestResult {
        // SAFETY: The argument is the u32 this ioctl takes.
        let r = unsafe { libc::ioctl(self.0.as_raw_fd(), SW_SYNC_IOC_INC as _, &raw const n) };
        check_eq!(r, 0);
        Ok(())
    }
}

/// A binary sync object holding an unsignaled fence of `tl` at `value`.
fn pending(dev: &Device, tl: &Timeline, value: u32) -> Result<u32, Outcome> {
    let f = tl.fence(value)?;
    Ok(dev.syncobj_import_sync_file(&f)?)
}

/// The u64 at `addr`, read volatile (the GPU writes it).
fn peek(addr: u64) -> u64 {
    // SAFETY: The tests only peek at their own mapped, aligned words.
    unsafe { std::ptr::read_volatile(addr as *const u64) }
}

/// `CLOCK_MONOTONIC` in ns, `after` from now: a sync object wait deadline.
fn deadline(after: Duration) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec + after.as_nanos() as i64
}

/// The capabilities and the feature bit say sync objects work.
fn caps() -> TestResult {
    let dev = open(0)?;
    check_eq!(dev.get_cap(sys::DRM_CAP_SYNCOBJ)?, 1);
    check_eq!(dev.get_cap(sys::DRM_CAP_SYNCOBJ_TIMELINE)?, 1);
    let features = dev.get_param(sys::DRM_NSVM_PARAM_FEATURES)?;
    check!(features & sys::DRM_NSVM_FEATURE_SYNCOBJ as u64 != 0);
    check_eq!(dev.uapi_version()?, (0, 6));
    Ok(())
}

/// The DRM core's sync object ioctls on an nsvm file: create, signal,
/// wait, timeline points, transfer, destroy; errors for bad handles.
fn core_ioctls() -> TestResult {
    let dev = open(0)?;
    let a = dev.syncobj_create(false)?;
    let b = dev.syncobj_create(true)?;
    check!(a != 0 && b != 0 && a != b);
    dev.syncobj_wait(&[b], deadline(Duration::ZERO), 0)?;
    // A sync object without a fence: the wait needs WAIT_FOR_SUBMIT, and
    // then times out.
    check_eq!(
        dev.syncobj_wait(&[a], deadline(Duration::ZERO), 0),
        Err(errno(libc::EINVAL))
    );
    check_eq!(
        dev.syncobj_wait(
            &[a],
            deadline(Duration::from_millis(10)),
            sys::DRM_SYNCOBJ_WAIT_FLAGS_WAIT_FOR_SUBMIT
        ),
        Err(errno(libc::ETIME))
    );
    dev.syncobj_signal(&[a])?;
    dev.syncobj_wait(&[a, b], deadline(Duration::ZERO), 0)?;
    // A timeline: points signal in order, a binary fence moves to a point.
    let t = dev.syncobj_create(false)?;
    check_eq!(dev.syncobj_query(t)?, 0);
    dev.syncobj_timeline_signal(t, 3)?;
    check_eq!(dev.syncobj_query(t)?, 3);
    dev.syncobj_timeline_wait(t, 2, deadline(Duration::ZERO), 0)?;
    dev.syncobj_transfer(b, 0, t, 5)?;
    check_eq!(dev.syncobj_query(t)?, 5);
    dev.syncobj_destroy(a)?;
    check_eq!(dev.syncobj_destroy(a), Err(errno(libc::EINVAL)));
    check_eq!(dev.syncobj_signal(&[a]), Err(errno(libc::ENOENT)));
    check_eq!(dev.syncobj_destroy(0), Err(errno(libc::EINVAL)));
    dev.syncobj_destroy(b)?;
    dev.syncobj_destroy(t)?;
    Ok(())
}

/// A job waits for its in-fence, and so does the job behind it on its
/// queue; another queue runs meanwhile. Once the fence signals both run,
/// in order.
fn in_fence_delays_job() -> TestResult {
    let dev = bound(0)?;
    let tl = Timeline::new()?;
    let s = pending(&dev, &tl, 1)?;
    let (q1, q2) = (dev.queue_create(0)?, dev.queue_create(0)?);
    let fences = Map::new(PAGE, RW);
    let (f1, f2) = (fences.addr(), fences.addr() + 8);
    let log = Map::new(PAGE, RW);
    // Job 1 copies q1's fence to log[0] (0: nothing ran before it) and
    // writes 1; job 2 copies it to log[1] and writes 2.
    dev.submit_after(
        q1,
        &[Cmd::copy(log.addr(), f1, 8)],
        Some((f1, 1)),
        &[sync(s, 0)],
    )?;
    dev.submit(q1, &[Cmd::copy(log.addr() + 8, f1, 8)], Some((f1, 2)))?;
    dev.submit(q2, &[Cmd::fill(log.addr() + 16, 8, 7)], Some((f2, 1)))?;
    dev.wait_fence(f2, 1, q2, LONG_NS)?;
    std::thread::sleep(HOLD);
    check_eq!(peek(f1), 0, "a job ran before its in-fence signaled");
    let st = dev.queue_query(q1)?;
    check_eq!((st.submitted, st.completed, st.error), (2, 0, 0));
    tl.inc(1)?;
    dev.wait_fence(f1, 2, q1, LONG_NS)?;
    check_eq!(peek(log.addr()), 0);
    check_eq!(peek(log.addr() + 8), 1);
    check_eq!(dev.queue_query(q1)?.completed, 2);
    Ok(())
}

/// Several in-fences: the job starts after the last of them, whatever
/// their order.
fn in_fence_many() -> TestResult {
    let dev = bound(0)?;
    let (ta, tb) = (Timeline::new()?, Timeline::new()?);
    let syncs = [
        sync(pending(&dev, &ta, 1)?, 0),
        sync(pending(&dev, &tb, 1)?, 0),
        sync(pending(&dev, &ta, 2)?, 0),
        sync(dev.syncobj_create(true)?, 0),
    ];
    let q = dev.queue_create(0)?;
    let fence = Map::new(PAGE, RW);
    dev.submit_after(q, &[], Some((fence.addr(), 1)), &syncs)?;
    ta.inc(2)?;
    std::thread::sleep(HOLD);
    check_eq!(peek(fence.addr()), 0, "ran before the second timeline");
    tb.inc(1)?;
    dev.wait_fence(fence.addr(), 1, q, LONG_NS)?;
    Ok(())
}

/// Timeline points as in-fences: a point already signaled does not hold
/// the job; a point whose fence is pending does until it signals; a point
/// with no fence yet is refused (SUBMIT does not wait for submission).
fn in_fence_timeline() -> TestResult {
    let dev = bound(0)?;
    let tl = Timeline::new()?;
    let t = dev.syncobj_create(false)?;
    let q = dev.queue_create(0)?;
    let fence = Map::new(PAGE, RW);
    let f = fence.addr();
    dev.syncobj_timeline_signal(t, 1)?;
    dev.submit_after(q, &[], Some((f, 1)), &[sync(t, 1)])?;
    dev.wait_fence(f, 1, q, LONG_NS)?;
    let s = pending(&dev, &tl, 1)?;
    dev.syncobj_transfer(s, 0, t, 2)?;
    dev.submit_after(q, &[], Some((f, 2)), &[sync(t, 2)])?;
    std::thread::sleep(HOLD);
    check_eq!(peek(f), 1, "ran before timeline point 2 signaled");
    tl.inc(1)?;
    dev.wait_fence(f, 2, q, LONG_NS)?;
    check_eq!(dev.syncobj_query(t)?, 2);
    check_eq!(
        dev.submit_after(q, &[], Some((f, 3)), &[sync(t, 9)]),
        Err(errno(libc::EINVAL))
    );
    check_eq!(dev.queue_query(q)?.submitted, 2);
    Ok(())
}

/// A fence that signals with an error (sw_sync signals its pending fences
/// with ENOENT when the timeline is closed) does not fail the job.
fn in_fence_error() -> TestResult {
    let dev = bound(0)?;
    let tl = Timeline::new()?;
    let s = pending(&dev, &tl, 1)?;
    let q = dev.queue_create(0)?;
    let fence = Map::new(PAGE, RW);
    dev.submit_after(q, &[], Some((fence.addr(), 1)), &[sync(s, 0)])?;
    std::thread::sleep(HOLD);
    check_eq!(peek(fence.addr()), 0);
    drop(tl);
    dev.wait_fence(fence.addr(), 1, q, LONG_NS)?;
    check_eq!(dev.queue_query(q)?.error, 0);
    Ok(())
}

/// Waiting for an in-fence is no lack of progress: a queue whose timeout
/// is far shorter than the wait still runs the job.
fn in_fence_not_timed() -> TestResult {
    let dev = bound(0)?;
    let tl = Timeline::new()?;
    let s = pending(&dev, &tl, 1)?;
    let q = dev.queue_create(50)?;
    let fence = Map::new(PAGE, RW);
    dev.submit_after(q, &[], Some((fence.addr(), 1)), &[sync(s, 0)])?;
    std::thread::sleep(Duration::from_millis(400));
    tl.inc(1)?;
    dev.wait_fence(fence.addr(), 1, q, LONG_NS)?;
    check_eq!(dev.queue_query(q)?.error, 0);
    Ok(())
}

/// Destroying a queue, or closing the file, whose job waits for a fence
/// that never signals returns at once; the job never runs, even once the
/// fence signals later.
fn in_fence_cancel() -> TestResult {
    let tl = Timeline::new()?;
    let fence = Map::new(PAGE, RW);
    let f = fence.addr();
    {
        let dev = bound(0)?;
        let s = pending(&dev, &tl, 1)?;
        let q = dev.queue_create(0)?;
        dev.submit_after(q, &[], Some((f, 1)), &[sync(s, 0)])?;
        dev.submit(q, &[], Some((f, 2)))?;
        let t = Instant::now();
        dev.queue_destroy(q)?;
        check!(
            t.elapsed() < Duration::from_secs(1),
            "destroy took {:?}",
            t.elapsed()
        );
        let s2 = pending(&dev, &tl, 2)?;
        let q = dev.queue_create(0)?;
        dev.submit_after(q, &[], Some((f, 3)), &[sync(s2, 0)])?;
        std::thread::sleep(Duration::from_millis(20));
        let t = Instant::now();
        drop(dev);
        check!(
            t.elapsed() < Duration::from_secs(1),
            "close took {:?}",
            t.elapsed()
        );
    }
    tl.inc(2)?;
    std::thread::sleep(HOLD);
    check_eq!(peek(f), 0, "a cancelled job ran");
    Ok(())
}

/// The new SUBMIT fields at their edges: bad handles, no fence yet,
/// flags, counts, sizes, pointers; and a uapi 0.5 `size`, whose in-fence
/// fields are ignored whatever they hold.
fn in_fence_bad_args() -> TestResult {
    let dev = bound(0)?;
    let q = dev.queue_create(0)?;
    let ok = dev.syncobj_create(true)?;
    let empty = dev.syncobj_create(false)?;
    let cases: [(sys::drm_nsvm_sync, i32); 5] = [
        (sync(0, 0), libc::ENOENT),
        (sync(u32::MAX, 0), libc::ENOENT),
        (sync(ok + 1000, 0), libc::ENOENT),
        (sync(empty, 0), libc::EINVAL),
        (
            sys::drm_nsvm_sync {
                handle: ok,
                flags: 1,
                point: 0,
            },
            libc::EINVAL,
        ),
    ];
    for (s, e) in cases {
        check_eq!(dev.submit_after(q, &[], None, &[s]), Err(errno(e)), "{s:?}");
    }
    let syncs = vec![sync(ok, 0); sys::DRM_NSVM_SUBMIT_MAX_SYNCS as usize + 1];
    let mut arg = sys::drm_nsvm_submit {
        size: std::mem::size_of::<sys::drm_nsvm_submit>() as u32,
        queue_id: q,
        cmd_size: std::mem::size_of::<Cmd>() as u32,
        syncs: syncs.as_ptr() as u64,
        num_syncs: sys::DRM_NSVM_SUBMIT_MAX_SYNCS + 1,
        sync_size: std::mem::size_of::<sys::drm_nsvm_sync>() as u32,
        ..Default::default()
    };
    for n in [sys::DRM_NSVM_SUBMIT_MAX_SYNCS + 1, u32::MAX] {
        arg.num_syncs = n;
        check_eq!(dev.submit_raw(&mut arg), Err(errno(libc::EINVAL)), "{n}");
    }
    arg.num_syncs = 1;
    for size in [0, 8, 15, 17, u32::MAX] {
        arg.sync_size = size;
        check_eq!(dev.submit_raw(&mut arg), Err(errno(libc::EINVAL)), "{size}");
    }
    arg.sync_size = std::mem::size_of::<sys::drm_nsvm_sync>() as u32;
    let limit = (1u64 << dev.get_param(sys::DRM_NSVM_PARAM_VA_BITS)?) - 4096;
    for p in [0, 8, limit - 8, limit, 1 << 63, u64::MAX - 15] {
        arg.syncs = p;
        check_eq!(dev.submit_raw(&mut arg), Err(errno(libc::EFAULT)), "{p:#x}");
    }
    check_eq!(dev.queue_query(q)?.submitted, 0);
    // The maximum is accepted; no syncs with any pointer is no in-fence.
    arg.syncs = syncs.as_ptr() as u64;
    arg.num_syncs = sys::DRM_NSVM_SUBMIT_MAX_SYNCS;
    dev.submit_raw(&mut arg)?;
    arg.syncs = u64::MAX;
    arg.num_syncs = 0;
    arg.sync_size = 0;
    dev.submit_raw(&mut arg)?;
    // uapi 0.5's size: the fields past it are not read.
    let old = std::mem::offset_of!(sys::drm_nsvm_submit, syncs) as u32;
    arg.size = old;
    arg.syncs = 8;
    arg.num_syncs = u32::MAX;
    arg.sync_size = 3;
    dev.submit_raw(&mut arg)?;
    for size in [old - 8, old + 8, old + 1] {
        arg.size = size;
        check_eq!(dev.submit_raw(&mut arg), Err(errno(libc::EINVAL)), "{size}");
    }
    dev.wait_seqno(q, 3, LONG_NS)?;
    Ok(())
}

igt_main! {
    "caps" => caps,
    "core-ioctls" => core_ioctls,
    "in-fence-delays-job" => in_fence_delays_job,
    "in-fence-many" => in_fence_many,
    "in-fence-timeline" => in_fence_timeline,
    "in-fence-error" => in_fence_error,
    "in-fence-not-timed" => in_fence_not_timed,
    "in-fence-cancel" => in_fence_cancel,
    "in-fence-bad-args" => in_fence_bad_args,
}
