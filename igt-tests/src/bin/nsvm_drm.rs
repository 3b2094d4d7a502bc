// SPDX-License-Identifier: MIT

//! nsvm_drm: nsvm as the DRM ecosystem sees it. DRM fdinfo
//! (Documentation/gpu/drm-usage-stats.rst): the common keys, the engine
//! time and the memory of each file, checked against what the test did.

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

igt_main! {
    "fdinfo-keys" => fdinfo_keys,
    "fdinfo-memory" => fdinfo_memory,
    "fdinfo-engine" => fdinfo_engine,
}
