// SPDX-License-Identifier: MIT

//! nsvm-bench: nsvm, the kernel's C peer (lib/test_hmm.c) and memcpy,
//! measured side by side in one guest run.
//!
//! Every figure is printed as one `NSVM-BENCH {json}` line on stdout;
//! scripts/bench.py turns them into a table of ratios, a JSON file and a
//! plot. Nothing here asserts on time.
//!
//! Environment: `NSVM_BENCH` (comma-separated sections, default all:
//! mirror, fill, migrate, invalidate, latency, threads, submit,
//! first-touch; and migrate-1ch,
//! which the guest runs on its own after reloading nsvm with one copy
//! channel),
//! `NSVM_BENCH_MAX_MB` (largest size, default 1024), `NSVM_BENCH_THREADS`
//! (largest thread count, default 4).

mod buf;
mod dmirror;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use buf::{Backing, Buf, MB2};
use dmirror::Dmirror;
use nsvm_uapi::{Cmd, Device, Mem};

/// Page size.
pub const PAGE: usize = 4096;
const MB: usize = 1 << 20;
const GIB: f64 = (1u64 << 30) as f64;

/// One figure of the report.
struct Row {
    bench: &'static str,
    imp: &'static str,
    backing: &'static str,
    size: usize,
    threads: usize,
    /// Bytes processed over all repetitions and threads.
    bytes: usize,
    /// Seconds over all repetitions (wall time for threads).
    secs: f64,
    extra: Vec<(&'static str, f64)>,
}

impl Row {
    fn new(bench: &'static str, imp: &'static str, backing: Backing, size: usize) -> Self {
        Self {
            bench,
            imp,
            backing: backing.name(),
            size,
            threads: 1,
            bytes: 0,
            secs: 0.0,
            extra: Vec::new(),
        }
    }

    fn add(&mut self, bytes: usize, d: Duration) {
        self.bytes += bytes;
        self.secs += d.as_secs_f64();
    }

    fn with(mut self, key: &'static str, v: f64) -> Self {
        self.extra.push((key, v));
        self
    }

    fn emit(self) {
        let gib_s = if self.secs > 0.0 {
            self.bytes as f64 / GIB / self.secs
        } else {
            0.0
        };
        let mut s = format!(
            "{{\"bench\":\"{}\",\"impl\":\"{}\",\"backing\":\"{}\",\"size\":{},\"threads\":{},\
             \"bytes\":{},\"secs\":{:.6},\"gib_s\":{:.4}",
            self.bench,
            self.imp,
            self.backing,
            self.size,
            self.threads,
            self.bytes,
            self.secs,
            gib_s
        );
        for (k, v) in &self.extra {
            s += &format!(",\"{k}\":{v:.4}");
        }
        println!("NSVM-BENCH {s}}}");
        eprintln!(
            "  {:<14} {:<8} {:<3} {:>5} MiB x{} {:>8.3} GiB/s",
            self.bench,
            self.imp,
            self.backing,
            self.size / MB,
            self.threads,
            gib_s
        );
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// 1 MiB to `NSVM_BENCH_MAX_MB`, by 4x.
fn sizes() -> Vec<usize> {
    let max = env_usize("NSVM_BENCH_MAX_MB", 1024) * MB;
    (0..)
        .map(|i| MB << (2 * i))
        .take_while(|&s| s <= max)
        .collect()
}

/// Repetitions at `size`: about 256 MiB of work per point, 1 to 16.
fn reps(size: usize) -> usize {
    (256 * MB / size).clamp(1, 16)
}

const BACKINGS: [Backing; 2] = [Backing::Small, Backing::Huge];

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let r = f();
    (r, t.elapsed())
}

fn nsvm_dev(window: u64) -> Device {
    let dev = Device::open_render(0).expect("open nsvm render node");
    dev.svm_init(window).expect("SVM_INIT");
    dev
}

fn nsvm_read(dev: &Device, dst: &Buf, src: &Buf) {
    dev.exec(&mut [Cmd::read(dst.addr(), src.addr(), src.len() as u64)])
        .expect("EXEC READ");
}

fn check_byte(b: &Buf, want: u8) {
    // SAFETY: Inside the buffer.
    let (first, last) = unsafe { (*b.ptr(), *b.ptr().add(b.len() - 1)) };
    assert!(
        first == want && last == want,
        "wrong data: {first} {last}, want {want}"
    );
}

/// Copies `len` bytes with 16-byte SSE2 loads and stores. musl's
/// `memcpy` (`rep movs`) ran anywhere from 0.26 to 4.3 GiB/s for the same
/// sizes in the emulated guest; a plain vector loop is steady, and it is
/// what a CPU copy costs.
fn copy_sse2(dst: *mut u8, src: *const u8, len: usize) {
    use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_storeu_si128};
    let mut i = 0;
    while i + 64 <= len {
        // SAFETY: `[i, i + 64)` is inside both buffers (caller).
        unsafe {
            let s = src.add(i).cast::<__m128i>();
            let d = dst.add(i).cast::<__m128i>();
            let (a, b, c, e) = (
                _mm_loadu_si128(s),
                _mm_loadu_si128(s.add(1)),
                _mm_loadu_si128(s.add(2)),
                _mm_loadu_si128(s.add(3)),
            );
            _mm_storeu_si128(d, a);
            _mm_storeu_si128(d.add(1), b);
            _mm_storeu_si128(d.add(2), c);
            _mm_storeu_si128(d.add(3), e);
        }
        i += 64;
    }
    // SAFETY: The tail, inside both buffers.
    unsafe { std::ptr::copy_nonoverlapping(src.add(i), dst.add(i), len - i) };
}

/// The copy limit: a CPU copy between two populated buffers, the best of
/// the repetitions (the emulator's own noise only ever slows a copy down).
fn memcpy_row(bench: &'static str, backing: Backing, size: usize) -> Row {
    let src = Buf::filled(size, backing, 1);
    let dst = Buf::filled(size, backing, 2);
    let mut row = Row::new(bench, "memcpy", backing, size);
    let mut best = Duration::MAX;
    for _ in 0..=reps(size) {
        let ((), d) = timed(|| copy_sse2(dst.ptr(), src.ptr(), size));
        best = best.min(d);
    }
    row.add(size, best);
    row
}

/// Mirroring (section 1): pages made GPU-visible (and read) for the first time.
/// nsvm: an EXEC READ of a fresh, CPU-populated buffer; test_hmm: its READ
/// ioctl (hmm_range_fault, then the copy out); memcpy: the copy alone.
fn mirror() {
    eprintln!("mirror: first GPU read of fresh CPU-populated memory");
    let dev = nsvm_dev(0);
    let dm = Dmirror::open().expect("open /dev/hmm_dmirror0");
    for backing in BACKINGS {
        for size in sizes() {
            let dst = Buf::filled(size, Backing::Small, 0);
            // Warm-up, untimed: the first call of a kind pays for the
            // emulator's translation and TLB sizing.
            let warm = Buf::filled(size, backing, 9);
            nsvm_read(&dev, &dst, &warm);
            dm.read(warm.addr(), dst.addr(), size)
                .expect("HMM_DMIRROR_READ");
            drop(warm);
            let mut row = Row::new("mirror", "nsvm", backing, size);
            let c0 = dev.counters().expect("counters");
            let mut thp = 0.0;
            for r in 0..reps(size) {
                let src = Buf::filled(size, backing, r as u8 + 1);
                thp = buf::thp_fraction();
                let ((), d) = timed(|| nsvm_read(&dev, &dst, &src));
                row.add(size, d);
                check_byte(&dst, r as u8 + 1);
            }
            let c1 = dev.counters().expect("counters");
            row.with("faults", (c1.faults - c0.faults) as f64)
                .with("batches", (c1.batches - c0.batches) as f64)
                .with("thp", thp)
                .emit();

            let mut row = Row::new("mirror", "test_hmm", backing, size);
            for r in 0..reps(size) {
                let src = Buf::filled(size, backing, r as u8 + 1);
                let (res, d) = timed(|| dm.read(src.addr(), dst.addr(), size));
                res.expect("HMM_DMIRROR_READ");
                row.add(size, d);
                check_byte(&dst, r as u8 + 1);
            }
            row.emit();
            memcpy_row("mirror", backing, size).emit();
        }
    }
}

/// First touch through EXEC (section 2): the GPU writes fresh CPU-populated memory,
/// every window a GPU fault. test_hmm's WRITE ioctl is its peer.
fn fill() {
    eprintln!("fill: GPU-fault-driven first touch (write)");
    let dm = Dmirror::open().expect("open /dev/hmm_dmirror0");
    for backing in BACKINGS {
        for size in sizes() {
            for window in [MB2, 64 << 10] {
                if window < MB2 && size > 64 * MB {
                    continue;
                }
                let dev = nsvm_dev(window as u64);
                let mut row = Row::new("fill", "nsvm", backing, size);
                let c0 = dev.counters().expect("counters");
                for r in 0..reps(size) {
                    let b = Buf::filled(size, backing, 0);
                    let (res, d) = timed(|| {
                        dev.exec(&mut [Cmd::fill(b.addr(), size as u64, r as u64 * 0x0101)])
                    });
                    res.expect("EXEC FILL");
                    row.add(size, d);
                }
                let c1 = dev.counters().expect("counters");
                let faults = (c1.faults - c0.faults) as f64;
                let secs = row.secs;
                row.with("window", window as f64)
                    .with("faults", faults)
                    .with("batches", (c1.batches - c0.batches) as f64)
                    .with("faults_per_s", faults / secs.max(1e-9))
                    .emit();
            }
            let data = Buf::filled(size, Backing::Small, 3);
            let mut row = Row::new("fill", "test_hmm", backing, size);
            for _ in 0..reps(size) {
                let b = Buf::filled(size, backing, 0);
                let (res, d) = timed(|| dm.write(b.addr(), data.addr(), size));
                res.expect("HMM_DMIRROR_WRITE");
                row.add(size, d);
                check_byte(&b, 3);
            }
            row.emit();
        }
    }
}

/// Migration (section 3) to device memory and back, after one warm-up round trip
/// (as hmm-tests' benchmark_thp_migration does).
fn migrate() {
    eprintln!("migrate: system -> device -> system");
    let dm = Dmirror::open().expect("open /dev/hmm_dmirror0");
    for backing in BACKINGS {
        for size in sizes() {
            migrate_nsvm("nsvm", backing, size);

            let b = Buf::filled(size, backing, 6);
            let check = Buf::filled(size, Backing::Small, 0);
            let mut to = Row::new("migrate-s2d", "test_hmm", backing, size);
            let mut back = Row::new("migrate-d2s", "test_hmm", backing, size);
            for r in 0..=reps(size) {
                let (m, d1) = timed(|| dm.to_device(b.addr(), check.addr(), size));
                m.expect("HMM_DMIRROR_MIGRATE_TO_DEV");
                let (n, d2) = timed(|| dm.to_system(b.addr(), size));
                n.expect("HMM_DMIRROR_MIGRATE_TO_SYS");
                if r > 0 {
                    to.add(size, d1);
                    back.add(size, d2);
                }
            }
            check_byte(&b, 6);
            to.emit();
            back.emit();
            drop(b);
            memcpy_row("migrate-s2d", backing, size).emit();
        }
    }
}

/// Section 3 for nsvm alone, as "nsvm-1ch": the guest runs it after
/// reloading nsvm with `copy_channels=1`, so the report shows what the
/// copy engine's second channel brings.
fn migrate_1ch() {
    eprintln!("migrate-1ch: nsvm with one copy channel");
    for backing in BACKINGS {
        for size in sizes() {
            migrate_nsvm("nsvm-1ch", backing, size);
        }
    }
}

/// nsvm's half of section 3, its rows named `imp`.
fn migrate_nsvm(imp: &'static str, backing: Backing, size: usize) {
    let dev = nsvm_dev(0);
    let pages = (size / PAGE) as u64;
    let b = Buf::filled(size, backing, 5);
    let thp = buf::thp_fraction();
    let mut to = Row::new("migrate-s2d", imp, backing, size);
    let mut back = Row::new("migrate-d2s", imp, backing, size);
    let mut short = 0;
    for r in 0..=reps(size) {
        let (m, d1) = timed(|| dev.migrate(b.addr(), size as u64, Mem::Device));
        let m = m.expect("MIGRATE to device");
        let (n, d2) = timed(|| dev.migrate(b.addr(), size as u64, Mem::System));
        let n = n.expect("MIGRATE to system");
        if r > 0 {
            to.add(size, d1);
            back.add(size, d2);
            short += (pages - m.migrated) + (pages - n.migrated);
        }
    }
    check_byte(&b, 5);
    to.with("thp", thp).with("not_moved", short as f64).emit();
    back.with("thp", thp).emit();
}

/// Invalidation (section 4): munmap and mprotect of a mirrored range, against the
/// same calls on memory nobody mirrors; per page.
fn invalidate() {
    eprintln!("invalidate: munmap / mprotect of a mirrored range");
    let dev = nsvm_dev(0);
    let dm = Dmirror::open().expect("open /dev/hmm_dmirror0");
    for backing in BACKINGS {
        for size in sizes() {
            let dst = Buf::filled(size, Backing::Small, 0);
            let pages = (size / PAGE) as f64;
            for imp in ["none", "nsvm", "test_hmm"] {
                let mirror = |b: &Buf| match imp {
                    "nsvm" => nsvm_read(&dev, &dst, b),
                    "test_hmm" => {
                        dm.read(b.addr(), dst.addr(), size)
                            .expect("HMM_DMIRROR_READ");
                    }
                    _ => {}
                };
                let mut unmap = Row::new("munmap", imp, backing, size);
                let mut protect = Row::new("mprotect", imp, backing, size);
                for _ in 0..reps(size) {
                    let b = Buf::filled(size, backing, 1);
                    mirror(&b);
                    let secs = b.unmap_timed();
                    unmap.add(size, Duration::from_secs_f64(secs));
                    let b = Buf::filled(size, backing, 1);
                    mirror(&b);
                    // SAFETY: Our mapping.
                    let (_, d) =
                        timed(|| unsafe { libc::mprotect(b.ptr().cast(), size, libc::PROT_READ) });
                    protect.add(size, d);
                }
                let n = pages * reps(size) as f64;
                let (us, ps) = (unmap.secs, protect.secs);
                unmap.with("ns_per_page", us * 1e9 / n).emit();
                protect.with("ns_per_page", ps * 1e9 / n).emit();
            }
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Latency (section 5) of one GPU fault: an EXEC writing 8 bytes in a 2 MiB window
/// the GPU has not mapped yet (test_hmm: a one-page READ).
fn latency() {
    eprintln!("latency: one GPU fault per call");
    let n = 512;
    let dev = nsvm_dev(0);
    let dm = Dmirror::open().expect("open /dev/hmm_dmirror0");
    let dst = Buf::filled(PAGE, Backing::Small, 0);
    let queue = dev.queue_create(0).expect("QUEUE_CREATE");
    // A 64 KiB fault window: how much of the service is the 2 MiB window's.
    let dev64 = nsvm_dev(64 << 10);
    let queue64 = dev64.queue_create(0).expect("QUEUE_CREATE");
    let fence = Buf::filled(PAGE, Backing::Small, 0);
    for imp in [
        "nsvm",
        "nsvm-async",
        "nsvm-async-64k",
        "test_hmm",
        "nsvm-async+hog",
        "test_hmm+hog",
    ] {
        for backing in BACKINGS {
            // A CPU hog beside the run: a process that spins, so that one
            // of the guest's two CPUs is busy and the round trip cannot
            // count on an idle one. Forked before the buffer is: memory of
            // the parent's at the fork is copy-on-write for it, and a write
            // to such a page (the FILL) would break COW first.
            let hog = imp.ends_with("+hog").then(cpu_hog);
            let before = handler_stats();
            let b = Buf::new(n * MB2, backing);
            for i in 0..n {
                // SAFETY: Inside the buffer: one CPU touch per window.
                unsafe { *b.ptr().add(i * MB2) = 1 };
            }
            let (d, q) = match imp {
                "nsvm-async-64k" => (&dev64, queue64),
                _ => (&dev, queue),
            };
            let mut us = Vec::with_capacity(n);
            // The GPU side of each round trip: raise to resume.
            let mut gpu = Vec::with_capacity(n);
            for i in 0..n {
                let a = b.addr() + (i * MB2) as u64;
                let stats = imp.starts_with("nsvm").then(handler_stats);
                let (res, took) = timed(|| match imp {
                    "nsvm" => dev
                        .exec(&mut [Cmd::fill(a, 8, i as u64)])
                        .map_err(|e| e.to_string()),
                    // The round trip through the device fault handler:
                    // SUBMIT, the fault raised, served, replayed, the
                    // access done, the fence written, WAIT back.
                    "nsvm-async" | "nsvm-async-64k" | "nsvm-async+hog" => {
                        let v = fence_value(fence.addr()) + 1;
                        d.submit(q, &[Cmd::fill(a, 8, i as u64)], Some((fence.addr(), v)))
                            .and_then(|_| d.wait_fence(fence.addr(), v, q, -1))
                            .map_err(|e| e.to_string())
                    }
                    _ => dm
                        .read(a, dst.addr(), PAGE)
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                });
                res.expect("fault");
                us.push(took.as_secs_f64() * 1e6);
                if let Some(before) = stats {
                    let d = handler_stats().since(&before);
                    gpu.push((d.wake_ns + d.serve_ns + d.resume_ns) as f64 / 1e3);
                }
            }
            if let Some(pid) = hog {
                // SAFETY: Our child.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, std::ptr::null_mut(), 0);
                }
            }
            us.sort_by(f64::total_cmp);
            let mean = us.iter().sum::<f64>() / n as f64;
            let mut row = Row::new("fault-latency", imp, backing, PAGE);
            row.add(n * PAGE, Duration::from_secs_f64(mean * n as f64 / 1e6));
            let mut row = row
                .with("calls", n as f64)
                .with("p50_us", percentile(&us, 0.5))
                .with("p99_us", percentile(&us, 0.99))
                .with("mean_us", mean);
            if imp.starts_with("nsvm") {
                gpu.sort_by(f64::total_cmp);
                // Where the time goes, per handler pass and per resumed job.
                let d = handler_stats().since(&before);
                let per = |ns: u64, n: u64| ns as f64 / n.max(1) as f64 / 1e3;
                row = row
                    .with("gpu_p50_us", percentile(&gpu, 0.5))
                    .with("gpu_p99_us", percentile(&gpu, 0.99))
                    .with("passes", d.passes as f64)
                    .with("wake_us", per(d.wake_ns, d.passes))
                    .with("serve_us", per(d.serve_ns, d.passes))
                    .with("resume_us", per(d.resume_ns, d.resumes));
            }
            row.emit();
            eprintln!(
                "PROF {imp} {backing:?} {}",
                std::fs::read_to_string("/sys/kernel/debug/nsvm/nsvm.0/faults")
                    .unwrap_or_default()
                    .replace('\n', " | ")
            );
        }
    }
    // The floor: what two hand-overs cost in this guest, quiet and beside
    // a hog.
    for imp in ["pipe", "pipe+hog"] {
        let hog = imp.ends_with("+hog").then(cpu_hog);
        let us = pingpong(n);
        if let Some(pid) = hog {
            // SAFETY: Our child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
        Row::new("handover", imp, Backing::Small, 1)
            .with("calls", n as f64)
            .with("p50_us", percentile(&us, 0.5))
            .with("p99_us", percentile(&us, 0.99))
            .emit();
    }
}

/// The floor of a round trip through another context: a byte sent
/// through a pipe to a child and back: two hand-overs (the GPU fault's
/// round trip has two: to the handler and back to the channel; SUBMIT and
/// WAIT add two more). Round trips in microseconds, sorted.
fn pingpong(n: usize) -> Vec<f64> {
    let mut ab = [0i32; 2];
    let mut ba = [0i32; 2];
    // SAFETY: Arrays of two fds, as pipe() wants.
    unsafe {
        assert_eq!(libc::pipe(ab.as_mut_ptr()), 0);
        assert_eq!(libc::pipe(ba.as_mut_ptr()), 0);
    }
    let mut byte = [0u8; 1];
    // SAFETY: The child only echoes bytes on its pipes until killed.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: Our pipes and our one-byte buffer.
        unsafe {
            while libc::read(ab[0], byte.as_mut_ptr().cast(), 1) == 1 {
                libc::write(ba[1], byte.as_ptr().cast(), 1);
            }
            libc::_exit(0);
        }
    }
    let mut us: Vec<f64> = (0..n)
        .map(|_| {
            // SAFETY: Our pipes and our one-byte buffer.
            let (_, d) = timed(|| unsafe {
                libc::write(ab[1], byte.as_ptr().cast(), 1);
                libc::read(ba[0], byte.as_mut_ptr().cast(), 1)
            });
            d.as_secs_f64() * 1e6
        })
        .collect();
    // SAFETY: Our pipes and our child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
        for fd in ab.iter().chain(ba.iter()) {
            libc::close(*fd);
        }
    }
    us.sort_by(f64::total_cmp);
    us
}

/// The fence's value (the GPU writes it).
fn fence_value(addr: u64) -> u64 {
    // SAFETY: The fence buffer's first word, aligned and mapped.
    unsafe { std::ptr::read_volatile(addr as *const u64) }
}

/// Forks a process that spins until killed; its pid.
fn cpu_hog() -> i32 {
    // SAFETY: The child only spins.
    match unsafe { libc::fork() } {
        0 => loop {
            std::hint::spin_loop();
        },
        pid => pid,
    }
}

/// The device fault handler's counters (debugfs `nsvm.0/faults`).
#[derive(Default)]
struct HandlerStats {
    passes: u64,
    wake_ns: u64,
    serve_ns: u64,
    resumes: u64,
    resume_ns: u64,
}

impl HandlerStats {
    fn since(&self, before: &Self) -> Self {
        Self {
            passes: self.passes - before.passes,
            wake_ns: self.wake_ns - before.wake_ns,
            serve_ns: self.serve_ns - before.serve_ns,
            resumes: self.resumes - before.resumes,
            resume_ns: self.resume_ns - before.resume_ns,
        }
    }
}

fn handler_stats() -> HandlerStats {
    let text = std::fs::read_to_string("/sys/kernel/debug/nsvm/nsvm.0/faults").unwrap_or_default();
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(": ")?.parse().ok())
            .unwrap_or(0)
    };
    HandlerStats {
        passes: get("passes"),
        wake_ns: get("wake_ns"),
        serve_ns: get("serve_ns"),
        resumes: get("resumes"),
        resume_ns: get("resume_ns"),
    }
}

/// Small jobs per second (an 8-byte FILL of mapped memory and a fence)
/// through 1, 2 and 4 queues, against the same work as synchronous EXECs.
fn submit() {
    eprintln!("submit: small jobs through 1, 2 and 4 queues");
    let jobs = 2048;
    let dev = nsvm_dev(0);
    let buf = Buf::filled(MB2, Backing::Small, 0);
    let fences = Buf::filled(PAGE, Backing::Small, 0);
    // Map it for the GPU first: the rows measure submission, not faults.
    dev.exec(&mut [Cmd::fill(buf.addr(), MB2 as u64, 1)])
        .expect("EXEC");
    let (_, d) = timed(|| {
        for i in 0..jobs {
            let a = buf.addr() + (i % 256 * PAGE) as u64;
            dev.exec(&mut [Cmd::fill(a, 8, i as u64)]).expect("EXEC");
        }
    });
    let mut row = Row::new("submit", "nsvm-exec", Backing::Small, 8);
    row.add(jobs * 8, d);
    row.with("jobs_s", jobs as f64 / d.as_secs_f64()).emit();
    for nq in [1usize, 2, 4] {
        let queues: Vec<u32> = (0..nq)
            .map(|_| dev.queue_create(0).expect("QUEUE_CREATE"))
            .collect();
        let (_, d) = timed(|| {
            for i in 0..jobs {
                let q = i % nq;
                let a = buf.addr() + (i % 256 * PAGE) as u64;
                let f = fences.addr() + (q * 8) as u64;
                dev.submit(
                    queues[q],
                    &[Cmd::fill(a, 8, i as u64)],
                    Some((f, i as u64 + 1)),
                )
                .expect("SUBMIT");
            }
            for (q, &id) in queues.iter().enumerate() {
                let last = (jobs - 1 - (jobs - 1 - q) % nq) as u64 + 1;
                dev.wait_fence(fences.addr() + (q * 8) as u64, last, id, -1)
                    .expect("WAIT");
            }
        });
        let mut row = Row::new("submit", "nsvm-async", Backing::Small, 8);
        row.threads = nq;
        row.add(jobs * 8, d);
        row.with("jobs_s", jobs as f64 / d.as_secs_f64()).emit();
        for q in queues {
            dev.queue_destroy(q).expect("QUEUE_DESTROY");
        }
    }
}

/// First-touch fault throughput with 1, 2 and 4 processes faulting at once,
/// each its own file and fresh memory, one job each: the handler batches
/// across them.
fn first_touch() {
    eprintln!("first-touch: 1, 2 and 4 processes faulting at once");
    let size = (64 * MB).min(env_usize("NSVM_BENCH_MAX_MB", 1024) * MB);
    for procs in [1usize, 2, 4] {
        let mut pipes = Vec::new();
        let start = Instant::now();
        let mut pids = Vec::new();
        for _ in 0..procs {
            let mut fds = [0i32; 2];
            // SAFETY: A pipe per child for its result.
            assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
            // SAFETY: The child only runs the job and exits.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                let dev = nsvm_dev(0);
                let q = dev.queue_create(0).expect("QUEUE_CREATE");
                let buf = Buf::new(size, Backing::Small);
                let fence = Buf::filled(PAGE, Backing::Small, 0);
                dev.submit(
                    q,
                    &[Cmd::fill(buf.addr(), size as u64, 3)],
                    Some((fence.addr(), 1)),
                )
                .expect("SUBMIT");
                dev.wait_fence(fence.addr(), 1, q, -1).expect("WAIT");
                // SAFETY: Ends the child.
                unsafe {
                    libc::write(fds[1], b"k".as_ptr().cast(), 1);
                    libc::_exit(0);
                }
            }
            pids.push(pid);
            pipes.push(fds);
        }
        let mut ok = true;
        for (pid, fds) in pids.iter().zip(&pipes) {
            let mut b = [0u8; 1];
            // SAFETY: Our pipe and our child.
            unsafe {
                libc::close(fds[1]);
                ok &= libc::read(fds[0], b.as_mut_ptr().cast(), 1) == 1;
                libc::close(fds[0]);
                libc::waitpid(*pid, std::ptr::null_mut(), 0);
            }
        }
        let d = start.elapsed();
        assert!(ok, "a first-touch child failed");
        let pages = procs * size / PAGE;
        let mut row = Row::new("first-touch", "nsvm-async", Backing::Small, size);
        row.threads = procs;
        row.add(procs * size, d);
        row.with("faults_s", pages as f64 / d.as_secs_f64()).emit();
    }
}

/// Mirroring with 1..N threads, each its own buffers, one nsvm file (one
/// mirror) and one test_hmm file shared by all.
fn threads() {
    eprintln!("threads: mirroring from 1..N threads");
    let max = env_usize("NSVM_BENCH_THREADS", 4);
    let size = (64 * MB).min(env_usize("NSVM_BENCH_MAX_MB", 1024) * MB);
    let dev = Arc::new(nsvm_dev(0));
    let dm = Arc::new(Dmirror::open().expect("open /dev/hmm_dmirror0"));
    for backing in BACKINGS {
        let mut t = 1;
        while t <= max {
            for imp in ["nsvm", "test_hmm"] {
                let bufs: Vec<(Buf, Buf)> = (0..t)
                    .map(|_| {
                        (
                            Buf::filled(size, backing, 7),
                            Buf::filled(size, Backing::Small, 0),
                        )
                    })
                    .collect();
                let start = Instant::now();
                std::thread::scope(|s| {
                    for (src, dst) in &bufs {
                        let (dev, dm) = (&dev, &dm);
                        s.spawn(move || match imp {
                            "nsvm" => nsvm_read(dev, dst, src),
                            _ => {
                                dm.read(src.addr(), dst.addr(), size)
                                    .expect("HMM_DMIRROR_READ");
                            }
                        });
                    }
                });
                let d = start.elapsed();
                let mut row = Row::new("mirror-threads", imp, backing, size);
                row.threads = t;
                row.add(size * t, d);
                row.emit();
            }
            t *= 2;
        }
    }
}

fn main() {
    let all = [
        "mirror",
        "fill",
        "migrate",
        "invalidate",
        "latency",
        "threads",
        "submit",
        "first-touch",
    ];
    let want = std::env::var("NSVM_BENCH").unwrap_or_default();
    let want: Vec<&str> = if want.is_empty() {
        all.to_vec()
    } else {
        want.split(',').collect()
    };
    let thp =
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    println!(
        "NSVM-BENCH-META {{\"cpus\":{},\"sizes\":{:?},\"thp_enabled\":\"{}\"}}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        sizes(),
        thp.trim()
    );
    let t = Instant::now();
    for name in want {
        let f: fn() = match name {
            "mirror" => mirror,
            "fill" => fill,
            "migrate" => migrate,
            "migrate-1ch" => migrate_1ch,
            "invalidate" => invalidate,
            "latency" => latency,
            "threads" => threads,
            "submit" => submit,
            "first-touch" => first_touch,
            other => {
                eprintln!("nsvm-bench: unknown section {other}");
                std::process::exit(2);
            }
        };
        f();
    }
    eprintln!("nsvm-bench: done in {:.1} s", t.elapsed().as_secs_f64());
}
