// SPDX-License-Identifier: MIT

//! nsvm_drm: nsvm as the DRM ecosystem sees it. DRM fdinfo
//! (Documentation/gpu/drm-usage-stats.rst): the common keys, the engine
//! time and the memory of each file, checked against what the test did;
//! the primary node's policy for unauthenticated clients; unbinding the
//! device from its driver while files use it, and binding it again.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use nsvm_igt_tests::{check, check_eq, igt_main, svm::*, Outcome, TestResult};
use nsvm_uapi::{Cmd, Device, Mem};

/// The file's fdinfo keys.
fn keys(dev: &Device) -> Result<HashMap<String, String>, Outcome> {
    Ok(dev.fdinfo()?.into_iter().collect())
}

/// What a FILL of `value` leaves in `len` bytes.
fn filled(value: u64, len: usize) -> Vec<u8> {
    value.to_le_bytes().repeat(len / 8)
}

/// The value of a `<n> <unit>` key, in `unit`.
fn amount(dev: &Device, key: &str, unit: &str) -> Result<u64, Outcome> {
    let k = keys(dev)?;
    let Some(v) = k.get(key) else {
        check!(false, "no {key} in {k:?}");
        unreachable!()
    };
    let Some(n) = v.strip_suffix(unit).and_then(|n| n.trim().parse().ok()) else {
        check!(false, "{key}: {v:?} is not <n> {unit}");
        unreachable!()
    };
    Ok(n)
}

/// The common keys, and every nsvm key with zeros on a file that has done
/// nothing: the driver, a client id of its own per file (a dup is the same
/// file), the engine and both memory regions.
fn fdinfo_keys() -> TestResult {
    let a = open(0)?;
    let b = open(0)?;
    let (ka, kb) = (keys(&a)?, keys(&b)?);
    check_eq!(ka.get("drm-driver").map(String::as_str), Some("nsvm"));
    let id = |k: &HashMap<String, String>| k.get("drm-client-id").cloned();
    check!(id(&ka).is_some(), "no drm-client-id: {ka:?}");
    check!(
        id(&ka) != id(&kb),
        "two files share client id {:?}",
        id(&ka)
    );
    let dup = Device::from_fd(a.file().try_clone()?.into())?;
    check_eq!(id(&keys(&dup)?), id(&ka));
    for key in [
        "drm-engine-compute",
        "drm-total-system",
        "drm-resident-system",
        "drm-total-vram",
        "drm-resident-vram",
    ] {
        let v = ka.get(key).map(String::as_str);
        check!(
            v == Some("0 ns") || v == Some("0 KiB"),
            "{key}: {v:?} before any work"
        );
    }
    Ok(())
}

/// The memory keys count what the file's GPU page table maps: 1 MiB the
/// GPU wrote, then half of it moved to device memory and read there, then
/// nothing once the CPU unmapped it. Another file's stay at zero.
fn fdinfo_memory() -> TestResult {
    let dev = bound(0)?;
    let other = bound(0)?;
    let m = aligned(MB2);
    madvise(&m, libc::MADV_NOHUGEPAGE);
    let half = (MB2 / 4) as u64;
    exec(&dev, &mut [Cmd::fill(m.addr(), 2 * half, 7)])?;
    check_eq!(amount(&dev, "drm-resident-system", "KiB")?, 1024);
    check_eq!(amount(&dev, "drm-total-system", "KiB")?, 1024);
    check_eq!(amount(&dev, "drm-resident-vram", "KiB")?, 0);
    let moved = dev.migrate(m.addr(), half, Mem::Device)?;
    check_eq!(moved.migrated, half / PAGE as u64);
    let read = gpu_read(&dev, m.addr(), half as usize)?;
    check!(
        read == filled(7, half as usize),
        "device memory does not hold the fill"
    );
    check_eq!(amount(&dev, "drm-resident-vram", "KiB")?, 512);
    check_eq!(amount(&dev, "drm-total-vram", "KiB")?, 512);
    check_eq!(amount(&dev, "drm-resident-system", "KiB")?, 512);
    check_eq!(amount(&other, "drm-resident-system", "KiB")?, 0);
    check_eq!(amount(&other, "drm-resident-vram", "KiB")?, 0);
    drop(m);
    check_eq!(amount(&dev, "drm-resident-system", "KiB")?, 0);
    check_eq!(amount(&dev, "drm-resident-vram", "KiB")?, 0);
    Ok(())
}

/// The engine time is the file's jobs' time: a job that waits 200 ms on a
/// semaphore counts at least that, and no more than the wall time it
/// took; a file that ran nothing stays at zero.
fn fdinfo_engine() -> TestResult {
    let dev = bound(0)?;
    let other = bound(0)?;
    let mut sem = aligned_to(PAGE, PAGE);
    sem.bytes_mut().fill(0);
    let fence = aligned_to(PAGE, PAGE);
    let q = dev.queue_create(0)?;
    let t0 = Instant::now();
    dev.submit(q, &[Cmd::sem_wait(sem.addr(), 1)], Some((fence.addr(), 1)))?;
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: The semaphore's first word, aligned and mapped.
    unsafe { std::ptr::write_volatile(sem.addr() as *mut u64, 1) };
    dev.wait_fence(fence.addr(), 1, q, -1)?;
    let wall = t0.elapsed().as_nanos() as u64;
    let ns = amount(&dev, "drm-engine-compute", "ns")?;
    println!("engine {ns} ns over {wall} ns of wall time");
    check!(ns >= 200_000_000, "engine time {ns} ns, under 200 ms");
    check!(ns <= wall, "engine time {ns} ns, over the wall time {wall}");
    // EXEC's jobs count too.
    exec(&dev, &mut [Cmd::fill(sem.addr(), 8, 0)])?;
    check!(amount(&dev, "drm-engine-compute", "ns")? > ns);
    check_eq!(amount(&other, "drm-engine-compute", "ns")?, 0);
    Ok(())
}

/// `struct drm_client` of `DRM_IOCTL_GET_CLIENT` (include/uapi/drm/drm.h).
#[repr(C)]
#[derive(Default)]
struct DrmClient {
    idx: i32,
    auth: i32,
    pid: libc::c_ulong,
    uid: libc::c_ulong,
    magic: libc::c_ulong,
    iocs: libc::c_ulong,
}

/// Whether `dev`'s file is authenticated (`DRM_IOCTL_GET_CLIENT` of the
/// caller's own file, index 0).
fn authenticated(dev: &Device) -> Result<bool, Outcome> {
    let mut c = DrmClient::default();
    // DRM_IOWR('d', 0x05, struct drm_client)
    let cmd = (3u64 << 30) | ((size_of::<DrmClient>() as u64) << 16) | (0x64 << 8) | 0x05;
    // SAFETY: GET_CLIENT takes a struct drm_client, which `c` is.
    unsafe { nsvm_uapi::raw_ioctl(dev.file(), cmd, (&raw mut c).cast())? };
    Ok(c.auth != 0)
}

/// Drops CAP_SYS_ADMIN from the caller's effective and permitted sets:
/// DRM authenticates every file its holder opens.
fn drop_sys_admin() -> std::io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    const CAP_SYS_ADMIN: u32 = 21;
    let mut h = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut d = [Data::default(); 2];
    // SAFETY: capget() and capset() take a header and two data structs.
    unsafe {
        if libc::syscall(libc::SYS_capget, &raw mut h, d.as_mut_ptr()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        d[0].effective &= !(1 << CAP_SYS_ADMIN);
        d[0].permitted &= !(1 << CAP_SYS_ADMIN);
        if libc::syscall(libc::SYS_capset, &raw mut h, d.as_ptr()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The primary node's policy: every nsvm ioctl is render-allowed and none
/// is DRM_AUTH (Documentation/nsvm/uapi.rst), so an unauthenticated client
/// of the card node may do what any client of the render node may, and no
/// more: it binds, runs work and migrates. The client is a child without
/// CAP_SYS_ADMIN (whose files DRM would authenticate) that is not the
/// node's first opener (which becomes master).
fn primary_node_unauthenticated() -> TestResult {
    let Some(card) = nsvm_uapi::nodes("card")?.into_iter().next() else {
        nsvm_igt_tests::skip!("no nsvm card node");
    };
    let _first = Device::open(&card)?;
    let code = in_child(|| {
        let run = || -> TestResult {
            drop_sys_admin()?;
            let dev = Device::open(&card)?;
            check!(!authenticated(&dev)?, "the client is authenticated");
            dev.svm_init(0)?;
            let m = aligned(MB2);
            exec(&dev, &mut [Cmd::fill(m.addr(), MB2 as u64, 3)])?;
            let moved = dev.migrate(m.addr(), MB2 as u64, Mem::Device)?;
            check_eq!(moved.migrated, (MB2 / PAGE) as u64);
            check_eq!(gpu_read(&dev, m.addr(), 8)?, filled(3, 8));
            let q = dev.queue_create(0)?;
            let fence = aligned_to(PAGE, PAGE);
            dev.submit(q, &[Cmd::fill(m.addr(), 8, 4)], Some((fence.addr(), 1)))?;
            dev.wait_fence(fence.addr(), 1, q, -1)?;
            Ok(())
        };
        match run() {
            Ok(()) => 0,
            Err(e) => {
                println!("{e:?}");
                1
            }
        }
    });
    check_eq!(code, 0, "the unauthenticated client");
    Ok(())
}

/// IGT's gputop (from igt-gpu-tools, Debian's, in the guest as
/// `/bin/gputop`) lists this process as an nsvm client while its job runs,
/// with the engine busy and the memory it maps.
fn gputop() -> TestResult {
    if !std::path::Path::new("/bin/gputop").exists() {
        nsvm_igt_tests::skip!("no gputop");
    }
    let dev = bound(0)?;
    let m = aligned(MB2);
    exec(&dev, &mut [Cmd::fill(m.addr(), MB2 as u64, 1)])?;
    let mut sem = aligned_to(PAGE, PAGE);
    sem.bytes_mut().fill(0);
    let fence = aligned_to(PAGE, PAGE);
    let q = dev.queue_create(0)?;
    dev.submit(q, &[Cmd::sem_wait(sem.addr(), 1)], Some((fence.addr(), 1)))?;
    let out = std::process::Command::new("/bin/gputop")
        .args(["-n", "3", "-d", "0.5"])
        .output()?;
    // SAFETY: The semaphore's first word, aligned and mapped.
    unsafe { std::ptr::write_volatile(sem.addr() as *mut u64, 1) };
    dev.wait_fence(fence.addr(), 1, q, -1)?;
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    let pid = std::process::id().to_string();
    check!(out.status.success(), "gputop: {}", out.status);
    check!(text.contains("nsvm"), "gputop shows no nsvm client");
    check!(text.contains(&pid), "gputop does not show pid {pid}");
    // The job ran through gputop's samples: after the first (which has
    // nothing to compare with) the engine shows busy.
    let busiest = text
        .lines()
        .filter(|l| l.trim_start().starts_with(&pid))
        .filter_map(|l| {
            let cell = l.split('|').nth(1)?.split_whitespace().next()?;
            cell.strip_suffix('%')?.parse::<f64>().ok()
        })
        .fold(0.0, f64::max);
    // One job on an engine of `drm-engine-capacity-compute` channels (one
    // per CPU, two in the guest): half of it.
    check!(busiest >= 25.0, "the engine shows at most {busiest}% busy");
    Ok(())
}

/// The device the unplug subtests take away: the second one, so that the
/// others keep theirs.
const UNPLUGGED: u32 = 1;

/// Writes the platform device `nsvm.<index>` to the nsvm driver's `bind`
/// or `unbind` file, as IGT's core_hotunplug and a PCI remove do for
/// theirs; how long it took.
fn driver_file(what: &str, index: u32) -> Result<Duration, Outcome> {
    let path = format!("/sys/bus/platform/drivers/nsvm/{what}");
    let t = Instant::now();
    if let Err(e) = std::fs::write(&path, format!("nsvm.{index}")) {
        check!(false, "{what} nsvm.{index}: {e}");
    }
    Ok(t.elapsed())
}

/// Unbinding a busy device: a file bound to its mirror, 2 MiB of the
/// process in device memory, a job running (a semaphore wait that nothing
/// releases) and a wait on its fence in another thread. The unbind returns
/// at once; the wait and every ioctl after it fail with ENODEV; the pages
/// are back in system memory with their data; the file closes. Binding
/// the device again brings it back, and it works.
fn unbind_busy() -> TestResult {
    let dev = bound(UNPLUGGED)?;
    let mut m = aligned(MB2);
    cpu_fill(&mut m, 5);
    check_eq!(
        dev.migrate(m.addr(), MB2 as u64, Mem::Device)?.migrated,
        (MB2 / PAGE) as u64
    );
    check_eq!(vram_stat(UNPLUGGED, "pages_used")?, (MB2 / PAGE) as u64);
    check_eq!(swapped(m.addr(), MB2 / PAGE)?, MB2 / PAGE);
    let mut sem = aligned_to(PAGE, PAGE);
    sem.bytes_mut().fill(0);
    let fence = aligned_to(PAGE, PAGE);
    let q = dev.queue_create(0)?;
    dev.submit(q, &[Cmd::sem_wait(sem.addr(), 1)], Some((fence.addr(), 1)))?;
    let dup = Device::from_fd(dev.file().try_clone()?.into())?;
    let f = fence.addr();
    let waiter = std::thread::spawn(move || dup.wait_fence(f, 1, q, -1));
    std::thread::sleep(Duration::from_millis(200));

    let took = driver_file("unbind", UNPLUGGED)?;
    println!("unbind took {took:?}");
    check!(took < Duration::from_secs(2), "unbind took {took:?}");
    check_eq!(waiter.join().ok(), Some(Err(errno(libc::ENODEV))));
    check_eq!(
        dev.get_param(nsvm_uapi::sys::DRM_NSVM_PARAM_UAPI_VERSION),
        Err(errno(libc::ENODEV))
    );
    check_eq!(
        dev.exec(&mut [Cmd::fill(m.addr(), 8, 0)])
            .map_err(|e| e.error),
        Err(errno(libc::ENODEV))
    );
    check_eq!(
        dev.migrate(m.addr(), MB2 as u64, Mem::Device),
        Err(errno(libc::ENODEV))
    );
    // Back in system memory before the CPU touched it, with the data (the
    // device's debugfs directory went with it).
    check_eq!(swapped(m.addr(), MB2 / PAGE)?, 0);
    check!(m.bytes() == pattern(5, MB2), "the data did not come back");
    drop(dev);

    driver_file("bind", UNPLUGGED)?;
    let dev = bound(UNPLUGGED)?;
    exec(&dev, &mut [Cmd::fill(m.addr(), MB2 as u64, 9)])?;
    check_eq!(
        dev.migrate(m.addr(), MB2 as u64, Mem::Device)?.migrated,
        (MB2 / PAGE) as u64
    );
    check_eq!(gpu_read(&dev, m.addr(), 8)?, filled(9, 8));
    Ok(())
}

/// Unbinding a device under load: threads of one file loop on EXECs that
/// fault, migrations to and from device memory, and queued jobs with
/// WAITs on their fences, while the device is unbound. Every loop ends with
/// ENODEV within a second, the unbind returns within two, no page is
/// left in device memory, and the device bound again works.
fn unbind_under_load() -> TestResult {
    use std::sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    };
    let dev = bound(UNPLUGGED)?;
    // Lives until the threads are joined; they get its address.
    let m = aligned(4 * MB2);
    let base = m.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for kind in 0..3 {
        let d = Device::from_fd(dev.file().try_clone()?.into())?;
        let stop = stop.clone();
        threads.push(std::thread::spawn(
            move || -> Result<u64, nsvm_uapi::Error> {
                let (a, len) = (base + (kind as u64) * MB2 as u64, MB2 as u64);
                let fence = aligned_to(PAGE, PAGE);
                let q = if kind == 2 { d.queue_create(0)? } else { 0 };
                let mut passes = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    passes += 1;
                    match kind {
                        0 => {
                            // Unmapped again each pass: every EXEC faults.
                            // SAFETY: Our own mapping's pages.
                            unsafe {
                                libc::madvise(a as *mut _, len as usize, libc::MADV_DONTNEED)
                            };
                            d.exec(&mut [Cmd::fill(a, len, passes)])
                                .map_err(|e| e.error)?;
                        }
                        1 => {
                            d.migrate(a, len, Mem::Device)?;
                            d.migrate(a, len, Mem::System)?;
                        }
                        _ => {
                            d.submit(
                                q,
                                &[Cmd::fill(a, len, passes)],
                                Some((fence.addr(), passes)),
                            )?;
                            d.wait_fence(fence.addr(), passes, q, -1)?;
                        }
                    }
                }
                Ok(passes)
            },
        ));
    }
    std::thread::sleep(Duration::from_millis(300));
    let took = driver_file("unbind", UNPLUGGED)?;
    let ended = Instant::now();
    // A loop that does not end fails the subtest, not the run.
    while !threads.iter().all(|t| t.is_finished()) && ended.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let loops = ended.elapsed();
    stop.store(true, Ordering::Relaxed);
    for (kind, t) in threads.into_iter().enumerate() {
        let r = t
            .join()
            .map_err(|_| Outcome::Fail("a thread panicked".into()))?;
        println!("loop {kind}: {r:?}");
        check_eq!(r.err(), Some(errno(libc::ENODEV)), "loop {kind}");
    }
    println!("unbind took {took:?}, the loops ended {loops:?} after");
    check!(took < Duration::from_secs(2), "unbind took {took:?}");
    check!(loops < Duration::from_secs(1), "the loops took {loops:?}");
    // No page is left in the device's memory, and the CPU reads it all.
    check_eq!(swapped(m.addr(), 4 * MB2 / PAGE)?, 0);
    let sum: u64 = m.bytes().iter().map(|&b| u64::from(b)).sum();
    println!("checksum {sum}");
    drop(dev);
    driver_file("bind", UNPLUGGED)?;
    let dev = bound(UNPLUGGED)?;
    exec(&dev, &mut [Cmd::fill(m.addr(), 4 * MB2 as u64, 5)])?;
    check_eq!(gpu_read(&dev, m.addr() + 3 * MB2 as u64, 8)?, filled(5, 8));
    Ok(())
}

/// Unbinding and binding an idle device, with a file left open across
/// the rebind (closed late, as core_hotunplug's "lateclose" subtests do):
/// the old file gets ENODEV, the new device works beside it, and the old
/// file closes afterwards.
fn rebind_late_close() -> TestResult {
    for _ in 0..3 {
        let old = bound(UNPLUGGED)?;
        driver_file("unbind", UNPLUGGED)?;
        check_eq!(
            old.get_param(nsvm_uapi::sys::DRM_NSVM_PARAM_UAPI_VERSION),
            Err(errno(libc::ENODEV))
        );
        driver_file("bind", UNPLUGGED)?;
        // The new binding has its own debugfs directory, holding none of
        // the old one's files, although a file of the old one is open.
        check_eq!(debugfs_entries(UNPLUGGED)?, ["faults", "vram"]);
        check_eq!(vram_stat(UNPLUGGED, "pages_used")?, 0);
        let new = bound(UNPLUGGED)?;
        check_eq!(
            debugfs_entries(UNPLUGGED)?,
            ["client-0", "client-0-pt", "faults", "vram"]
        );
        let m = aligned(MB2);
        exec(&new, &mut [Cmd::fill(m.addr(), MB2 as u64, 1)])?;
        check_eq!(old.svm_init(0), Err(errno(libc::ENODEV)));
        drop(old);
        check_eq!(gpu_read(&new, m.addr(), 8)?, filled(1, 8));
    }
    Ok(())
}

/// The names in `<debugfs>/nsvm/nsvm.<index>`, sorted.
fn debugfs_entries(index: u32) -> Result<Vec<String>, Outcome> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/sys/kernel/debug/nsvm/nsvm.{index}"))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    names.sort();
    Ok(names)
}

igt_main! {
    "fdinfo-keys" => fdinfo_keys,
    "fdinfo-memory" => fdinfo_memory,
    "fdinfo-engine" => fdinfo_engine,
    "primary-node-unauthenticated" => primary_node_unauthenticated,
    "gputop" => gputop,
    "unbind-busy" => unbind_busy,
    "unbind-under-load" => unbind_under_load,
    "rebind-late-close" => rebind_late_close,
}
