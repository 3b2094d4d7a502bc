// SPDX-License-Identifier: MIT

//! A small compute job through shared virtual memory: `y = a * x + y` on
//! arrays from plain `malloc` (a `Vec`), run by the GPU straight on the
//! process's pointers, checked on the CPU; then again with both arrays
//! moved to device memory. Prints what each pass cost.
//!
//! With uapi 0.5 the work is many jobs over several exec queues: SUBMIT
//! returns at once, the CPU works meanwhile (it computes the expected
//! result from its own copy of the inputs), and the demo then waits on
//! each queue's user fence. Older drivers get EXECs.
//!
//! ```text
//! nsvm-demo [--device N] [--mib M]
//! ```
//!
//! `--mib` is the size of each array (default 32). Counters come from the
//! file's SNAPSHOT counters, migrations from MIGRATE and from the device's
//! debugfs file when debugfs is mounted.

use std::{
    io::Write,
    sync::atomic::AtomicU64,
    time::{
        Duration,
        Instant, //
    },
};

use nsvm_uapi::{sys, Cmd, CmdList, Device, Mem};

/// Bytes of each array one command covers: the progress line moves on
/// after each EXEC of [`PER_EXEC`] commands.
const CHUNK: usize = 1 << 20;
/// Commands per EXEC.
const PER_EXEC: usize = 4;
/// A progress line appears once a pass has run this long.
const QUIET: Duration = Duration::from_millis(500);
/// Elements of the CPU's own work between two looks at the fences.
const CPU_SLICE: usize = 1 << 14;
/// Exec queues the jobs are spread over.
const QUEUES: usize = 4;
/// Bytes of each array one job covers.
const PER_JOB: usize = 2 << 20;

fn main() {
    if let Err(e) = run() {
        eprintln!("nsvm-demo: {e}");
        std::process::exit(1);
    }
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn run() -> Res<()> {
    let (index, mib) = args()?;
    let dev = Device::open_render(index)?;
    let v = dev.version()?;
    let (major, minor) = dev.uapi_version()?;
    println!(
        "device   {} ({} {}.{}.{}, uapi {major}.{minor}), {} MiB of device memory",
        dev.path().display(),
        v.name,
        v.number.0,
        v.number.1,
        v.number.2,
        dev.get_param(sys::DRM_NSVM_PARAM_VRAM_SIZE)? >> 20
    );
    if (major, minor) < (0, 4) {
        return Err("the driver predates AXPY32 (uapi 0.4)".into());
    }
    dev.svm_init(0)?;
    let queues = if (major, minor) >= (0, 5) {
        (0..QUEUES)
            .map(|_| dev.queue_create(0))
            .collect::<Result<Vec<_>, _>>()?
    } else {
        Vec::new()
    };

    let n = mib * (1 << 20) / 4;
    // Plain heap memory: the GPU sees it at the same addresses as the CPU.
    let x: Vec<u32> = (0..n as u32)
        .map(|i| i.wrapping_mul(2_654_435_761))
        .collect();
    let mut y: Vec<u32> = (0..n as u32).map(|i| i ^ 0x5a5a_5a5a).collect();
    let y0 = y.clone();
    println!(
        "arrays   x at {:p}, y at {:p}: {n} u32 each ({mib} MiB), from malloc",
        x.as_ptr(),
        y.as_ptr()
    );
    println!("job      y = a * x + y on the GPU, checked on the CPU");
    println!();

    let a1 = 3;
    let p1 = pass(&dev, &queues, "1 system", a1, &x, &y0, &mut y)?;
    check(&x, &y0, &y, &[a1])?;

    let before = vram_stats(index);
    let mut to_device = 0;
    for buf in [bytes(&x), bytes(&y)] {
        let (start, len) = pages(buf);
        let moved = dev.migrate(start, len, Mem::Device)?;
        to_device += moved.migrated;
    }
    let a2 = 7;
    let y1 = y.clone();
    let p2 = pass(&dev, &queues, "2 device", a2, &x, &y1, &mut y)?;
    // The CPU's check faults the pages back to system memory.
    check(&x, &y0, &y, &[a1, a2])?;
    let after = vram_stats(index);

    println!();
    println!(
        "{:<10} {:>9} {:>10} {:>8} {:>8} {:>13} {:>13}",
        "pass", "time", "GiB/s", "faults", "batches", "invalidations", "pages mapped"
    );
    for p in [&p1, &p2] {
        println!(
            "{:<10} {:>7.1}ms {:>10.3} {:>8} {:>8} {:>13} {:>13}",
            p.name,
            p.time.as_secs_f64() * 1e3,
            // x read, y read and written.
            3.0 * (mib as f64 / 1024.0) / p.time.as_secs_f64(),
            p.delta.faults,
            p.delta.batches,
            p.delta.invalidations,
            p.delta.pages_mapped
        );
    }
    println!();
    for p in [&p1, &p2] {
        match &p.jobs {
            Some(j) => println!(
                "{:<10} {} jobs over {} queues; meanwhile the CPU checked {} elements \
                 ({:.1} ms), then waited {:.1} ms on the fences",
                p.name,
                j.jobs,
                queues.len(),
                j.overlapped,
                j.cpu.as_secs_f64() * 1e3,
                j.waited.as_secs_f64() * 1e3
            ),
            None => println!("{:<10} synchronous EXECs (uapi before 0.5)", p.name),
        }
    }
    println!();
    println!("migrated {to_device} pages to device memory before pass 2 (MIGRATE)");
    match (before, after) {
        (Some(b), Some(a)) => println!(
            "         {} pages back to system memory on CPU faults while checking",
            a.cpu_fault_pages - b.cpu_fault_pages
        ),
        _ => println!("         (mount debugfs to see the pages that came back)"),
    }
    println!("result   OK: {n} elements checked after each pass");
    Ok(())
}

/// `--device N` and `--mib M`.
fn args() -> Res<(u32, usize)> {
    let (mut index, mut mib) = (0, 32);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--device" => index = val()?.parse()?,
            "--mib" => mib = val()?.parse()?,
            _ => return Err(format!("usage: nsvm-demo [--device N] [--mib M] (not {a})").into()),
        }
    }
    if mib == 0 || mib > 1024 {
        return Err("--mib: 1 to 1024".into());
    }
    Ok((index, mib))
}

/// What one pass cost.
struct Pass {
    name: &'static str,
    time: Duration,
    delta: sys::drm_nsvm_counters,
    jobs: Option<Jobs>,
}

/// The asynchronous side of a pass.
struct Jobs {
    jobs: usize,
    /// CPU work done while the GPU ran, and its elements.
    cpu: Duration,
    overlapped: usize,
    /// Time spent in WAIT afterwards.
    waited: Duration,
}

/// Runs `y = a * x + y` over the arrays (`y` was `y_in`): as jobs over
/// `queues` if there are any, else as EXECs of [`CHUNK`] bytes per command.
fn pass(
    dev: &Device,
    queues: &[u32],
    name: &'static str,
    a: u32,
    x: &[u32],
    y_in: &[u32],
    y: &mut [u32],
) -> Res<Pass> {
    let len = std::mem::size_of_val(x);
    let (xp, yp) = (x.as_ptr() as u64, y.as_mut_ptr() as u64);
    // The CPU's copies of the inputs, made before the clock starts.
    let (xc, yc) = if queues.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        (x.to_vec(), y_in.to_vec())
    };
    let c0 = dev.counters()?;
    let t0 = Instant::now();
    let mut done = 0;
    let mut jobs = None;
    let mut gpu_time = None;
    if !queues.is_empty() {
        // One fence per queue; job i goes to queue i % QUEUES and writes
        // its number there.
        let fences: Vec<AtomicU64> = queues.iter().map(|_| AtomicU64::new(0)).collect();
        let mut last = vec![0u64; queues.len()];
        let mut n = 0;
        while done < len {
            let q = n % queues.len();
            let mut cmds = Vec::new();
            let end = (done + PER_JOB).min(len);
            while done < end {
                let c = CHUNK.min(end - done);
                cmds.push(Cmd::axpy32(yp + done as u64, a, xp + done as u64, c as u64));
                done += c;
            }
            n += 1;
            let f = fences[q].as_ptr() as u64;
            dev.submit(queues[q], &cmds, Some((f, n as u64)))?;
            last[q] = n as u64;
        }
        // The CPU's own work meanwhile, on memory the GPU does not use:
        // the expected result, from the copies of the inputs, a slice at
        // a time, looking at the fences between slices (WAIT with timeout
        // 0); once none is left to do it sleeps in WAIT.
        let mut want = vec![0u32; xc.len()];
        let (mut at, mut cpu, mut waited) = (0, Duration::ZERO, Duration::ZERO);
        let mut pending: Vec<usize> = (0..queues.len()).filter(|&q| last[q] > 0).collect();
        let mut failed = None;
        while !pending.is_empty() {
            // Still pending: ETIME; any other error is the queue's.
            pending.retain(|&q| {
                match dev.wait_fence(fences[q].as_ptr() as u64, last[q], queues[q], 0) {
                    Ok(()) => false,
                    Err(e) if e.errno == libc::ETIME => true,
                    Err(e) => {
                        failed.get_or_insert(e);
                        false
                    }
                }
            });
            if let Some(e) = failed {
                return Err(format!("a queue failed: {e}").into());
            }
            if pending.is_empty() {
                break;
            }
            if at < want.len() {
                let c = Instant::now();
                let end = (at + CPU_SLICE).min(want.len());
                expect(a, &xc[at..end], &yc[at..end], &mut want[at..end]);
                at = end;
                cpu += c.elapsed();
            } else {
                let w = Instant::now();
                let q = pending[0];
                dev.wait_fence(fences[q].as_ptr() as u64, last[q], queues[q], -1)?;
                waited += w.elapsed();
            }
        }
        gpu_time = Some(t0.elapsed());
        let overlapped = at;
        expect(a, &xc[at..], &yc[at..], &mut want[at..]);
        if want.as_slice() != &*y {
            return Err("the jobs' result differs from the CPU's".into());
        }
        jobs = Some(Jobs {
            jobs: n,
            cpu,
            overlapped,
            waited,
        });
    }
    while done < len {
        let mut list = CmdList::new();
        for _ in 0..PER_EXEC {
            if done == len {
                break;
            }
            let n = CHUNK.min(len - done);
            list.push(Cmd::axpy32(yp + done as u64, a, xp + done as u64, n as u64));
            done += n;
        }
        list.submit(dev)?;
        if t0.elapsed() > QUIET {
            print!("\rpass {name}: {:>5} / {} MiB", done >> 20, len >> 20);
            std::io::stdout().flush()?;
        }
    }
    let time = gpu_time.unwrap_or_else(|| t0.elapsed());
    if time > QUIET {
        println!();
    }
    let c1 = dev.counters()?;
    let delta = sys::drm_nsvm_counters {
        faults: c1.faults - c0.faults,
        batches: c1.batches - c0.batches,
        retries: c1.retries - c0.retries,
        invalidations: c1.invalidations - c0.invalidations,
        pages_mapped: c1.pages_mapped - c0.pages_mapped,
        pages_unmapped: c1.pages_unmapped - c0.pages_unmapped,
    };
    Ok(Pass {
        name,
        time,
        delta,
        jobs,
    })
}

/// `want = y + a * x`, element by element.
fn expect(a: u32, x: &[u32], y: &[u32], want: &mut [u32]) {
    for ((w, x), y) in want.iter_mut().zip(x).zip(y) {
        *w = y.wrapping_add(a.wrapping_mul(*x));
    }
}

/// Checks `y == y0 + (sum of as) * x` element by element.
fn check(x: &[u32], y0: &[u32], y: &[u32], as_: &[u32]) -> Res<()> {
    let a = as_.iter().fold(0u32, |s, a| s.wrapping_add(*a));
    for i in 0..x.len() {
        let want = y0[i].wrapping_add(a.wrapping_mul(x[i]));
        if y[i] != want {
            return Err(format!("y[{i}] = {:#x}, want {want:#x}", y[i]).into());
        }
    }
    Ok(())
}

/// The bytes of `v`.
fn bytes(v: &[u32]) -> &[u8] {
    // SAFETY: Any u32 is 4 initialised bytes.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast(), std::mem::size_of_val(v)) }
}

/// The whole pages that hold `buf`: malloc's blocks are not page aligned,
/// MIGRATE's ranges are. The pages at the edges are the process's too.
fn pages(buf: &[u8]) -> (u64, u64) {
    let page = 4096u64;
    let start = buf.as_ptr() as u64 & !(page - 1);
    let end = (buf.as_ptr() as u64 + buf.len() as u64).next_multiple_of(page);
    (start, end - start)
}

/// The counters of the device's debugfs `vram` file this demo shows.
struct VramStats {
    cpu_fault_pages: u64,
}

/// Reads `<debugfs>/nsvm/nsvm.<index>/vram`; `None` without debugfs.
fn vram_stats(index: u32) -> Option<VramStats> {
    let text = std::fs::read_to_string(format!("/sys/kernel/debug/nsvm/nsvm.{index}/vram")).ok()?;
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(": ")?.trim().parse().ok())
    };
    Some(VramStats {
        cpu_fault_pages: get("cpu_fault_pages")?,
    })
}
