// SPDX-License-Identifier: MIT

//! nsvm_migrate: device memory. MIGRATE to and from device memory, CPU
//! faults that bring pages back (a THP whole), eviction when device memory
//! is full, SET_ATTR policies on GPU faults, GPU atomics with exclusive
//! access, and what cannot migrate (MAP_SHARED, file pages, holes,
//! PROT_NONE, another device's pages). Every check compares data.

use std::{io::Write, os::fd::AsRawFd, ptr};

use nsvm_igt_tests::{check, check_eq, igt_main, skip, svm::*, Outcome, TestResult};
use nsvm_uapi::{self as nsvm, sys, Attr, Cmd, Device, Mem, Moved};

fn migrate(dev: &Device, m: &Map, off: usize, len: usize, to: Mem) -> Result<Moved, Outcome> {
    Ok(dev.migrate(m.addr() + off as u64, len as u64, to)?)
}

const DEVICE: u32 = sys::DRM_NSVM_PTE_DEVICE;

// ---- MIGRATE ----

/// Pages move to device memory and back with their data; the GPU reads
/// them from device memory, the CPU faults them back.
fn basic() -> TestResult {
    let dev = bound(0)?;
    let n = 20;
    let mut m = Map::new(n * PAGE, RW);
    cpu_fill(&mut m, 1);
    let moved = migrate(&dev, &m, 0, n * PAGE, Mem::Device)?;
    check_eq!(
        moved,
        Moved {
            migrated: n as u64,
            failed: 0
        }
    );
    check_eq!(count(&cpu_states(&dev, m.addr(), n)?, DEVICE), n);
    // The GPU maps device memory.
    check!(gpu_read(&dev, m.addr(), n * PAGE)? == pattern(1, n * PAGE));
    let s = states(&dev, m.addr(), n)?;
    check_eq!(count(&s, DEVICE), n);
    // Already there: nothing selected.
    check_eq!(
        migrate(&dev, &m, 0, n * PAGE, Mem::Device)?,
        Moved::default()
    );
    // The CPU faults them back.
    check!(m.bytes() == pattern(1, n * PAGE).as_slice());
    check_eq!(count(&cpu_states(&dev, m.addr(), n)?, DEVICE), 0);
    Ok(())
}

/// GPU writes to device memory reach the CPU through migrate_to_ram.
fn gpu_write_cpu_read() -> TestResult {
    let dev = bound(0)?;
    let mut m = Map::new(8 * PAGE, RW);
    cpu_fill(&mut m, 2);
    migrate(&dev, &m, 0, m.len, Mem::Device)?;
    exec(
        &dev,
        &mut [Cmd::fill(
            m.addr() + 100,
            3 * PAGE as u64,
            0x1122334455667788,
        )],
    )?;
    let mut want = pattern(2, m.len);
    for (i, b) in want[100..100 + 3 * PAGE].iter_mut().enumerate() {
        *b = 0x1122334455667788u64.to_le_bytes()[i % 8];
    }
    check!(m.bytes() == want.as_slice());
    Ok(())
}

/// MIGRATE to system memory brings everything back.
fn migrate_back() -> TestResult {
    let dev = bound(0)?;
    let n = 16;
    let mut m = Map::new(n * PAGE, RW);
    cpu_fill(&mut m, 3);
    migrate(&dev, &m, 0, n * PAGE, Mem::Device)?;
    check_eq!(
        migrate(&dev, &m, 0, n * PAGE, Mem::System)?,
        Moved {
            migrated: n as u64,
            failed: 0
        }
    );
    check_eq!(count(&cpu_states(&dev, m.addr(), n)?, DEVICE), 0);
    check!(m.bytes() == pattern(3, n * PAGE).as_slice());
    Ok(())
}

/// Migrate, let the CPU fault half back, migrate the mix again: only the
/// system half moves.
fn partial_cpu_fault_mix() -> TestResult {
    let dev = bound(0)?;
    let n = 16;
    let mut m = Map::new(n * PAGE, RW);
    cpu_fill(&mut m, 4);
    migrate(&dev, &m, 0, n * PAGE, Mem::Device)?;
    for i in (0..n).step_by(2) {
        // SAFETY: Inside our mapping.
        check_eq!(
            unsafe { ptr::read_volatile(m.ptr.add(i * PAGE)) },
            pattern(4, n * PAGE)[i * PAGE]
        );
    }
    check_eq!(count(&cpu_states(&dev, m.addr(), n)?, DEVICE), n / 2);
    check_eq!(
        migrate(&dev, &m, 0, n * PAGE, Mem::Device)?.migrated,
        (n / 2) as u64
    );
    check_eq!(count(&cpu_states(&dev, m.addr(), n)?, DEVICE), n);
    check!(gpu_read(&dev, m.addr(), n * PAGE)? == pattern(4, n * PAGE));
    check!(m.bytes() == pattern(4, n * PAGE).as_slice());
    Ok(())
}

/// Many round trips keep the data.
fn round_trips() -> TestResult {
    let dev = bound(0)?;
    let n = 8;
    let mut m = Map::new(n * PAGE, RW);
    for round in 0..20u64 {
        cpu_fill(&mut m, 100 + round);
        check_eq!(
            migrate(&dev, &m, 0, n * PAGE, Mem::Device)?.migrated,
            n as u64
        );
        if round % 2 == 0 {
            check_eq!(
                migrate(&dev, &m, 0, n * PAGE, Mem::System)?.migrated,
                n as u64
            );
        }
        check!(m.bytes() == pattern(100 + round, n * PAGE).as_slice());
    }
    Ok(())
}

// ---- THP ----

/// A THP moves as one 2 MiB device folio, and a CPU access brings all of
/// it back at once.
fn thp_whole() -> TestResult {
    let dev = bound(0)?;
    let mut m = aligned(MB2);
    madvise(&m, libc::MADV_HUGEPAGE);
    cpu_fill(&mut m, 5);
    let n = MB2 / PAGE;
    if count(&cpu_states(&dev, m.addr(), n)?, sys::DRM_NSVM_PTE_HUGE) != n {
        skip!("no THP for the range");
    }
    check_eq!(migrate(&dev, &m, 0, MB2, Mem::Device)?.migrated, n as u64);
    let s = cpu_states(&dev, m.addr(), n)?;
    check_eq!(count(&s, DEVICE), n);
    check_eq!(count(&s, sys::DRM_NSVM_PTE_HUGE), n);
    // One byte from the CPU: the whole folio comes back.
    // SAFETY: Inside our mapping.
    check_eq!(
        unsafe { ptr::read_volatile(m.ptr.add(12345)) },
        pattern(5, MB2)[12345]
    );
    check_eq!(count(&cpu_states(&dev, m.addr(), n)?, DEVICE), 0);
    check!(m.bytes() == pattern(5, MB2).as_slice());
    Ok(())
}

/// An untouched 2 MiB range migrates (as zeroes); a zero-page range too.
fn thp_empty_and_zero() -> TestResult {
    let dev = bound(0)?;
    let n = MB2 / PAGE;
    let m = aligned(MB2);
    madvise(&m, libc::MADV_HUGEPAGE);
    check_eq!(migrate(&dev, &m, 0, MB2, Mem::Device)?.migrated, n as u64);
    check!(gpu_read(&dev, m.addr(), MB2)?.iter().all(|b| *b == 0));
    check!(m.bytes().iter().all(|b| *b == 0));
    // Read (zero page) first.
    let z = aligned(MB2);
    madvise(&z, libc::MADV_NOHUGEPAGE);
    check!(z.bytes().iter().all(|b| *b == 0));
    let moved = migrate(&dev, &z, 0, MB2, Mem::Device)?;
    check_eq!(moved.migrated + moved.failed, n as u64);
    check!(z.bytes().iter().all(|b| *b == 0));
    Ok(())
}

/// MADV_FREE'd THP, then partial munmap and mremap of migrated ranges.
fn thp_free_munmap_mremap() -> TestResult {
    let dev = bound(0)?;
    let n = MB2 / PAGE;
    let mut m = aligned(MB2);
    madvise(&m, libc::MADV_HUGEPAGE);
    cpu_fill(&mut m, 6);
    madvise(&m, libc::MADV_FREE);
    let moved = migrate(&dev, &m, 0, MB2, Mem::Device)?;
    check_eq!(moved.failed, 0);
    // Freed pages read as zeroes or as the old data, page by page.
    let back = m.bytes().to_vec();
    let old = pattern(6, MB2);
    for i in 0..n {
        let page = &back[i * PAGE..(i + 1) * PAGE];
        check!(page.iter().all(|b| *b == 0) || page == &old[i * PAGE..(i + 1) * PAGE]);
    }

    let mut m = aligned(MB2);
    cpu_fill(&mut m, 7);
    migrate(&dev, &m, 0, MB2, Mem::Device)?;
    // Unmap the first half: the second half stays intact and usable.
    // SAFETY: Part of our own mapping.
    check_eq!(unsafe { libc::munmap(m.ptr.cast(), MB2 / 2) }, 0);
    let half = Map {
        ptr: m.ptr.wrapping_add(MB2 / 2),
        len: MB2 / 2,
    };
    std::mem::forget(m);
    check!(gpu_read(&dev, half.addr(), MB2 / 2)? == pattern(7, MB2)[MB2 / 2..]);
    check!(half.bytes() == &pattern(7, MB2)[MB2 / 2..]);

    // mremap a migrated range: the data moves with it.
    let mut r = Map::new(16 * PAGE, RW);
    cpu_fill(&mut r, 8);
    migrate(&dev, &r, 0, r.len, Mem::Device)?;
    // SAFETY: Moves our own mapping.
    let p = unsafe { libc::mremap(r.ptr.cast(), r.len, 32 * PAGE, libc::MREMAP_MAYMOVE) };
    check!(p != libc::MAP_FAILED);
    r.ptr = p.cast();
    r.len = 32 * PAGE;
    check!(gpu_read(&dev, r.addr(), 16 * PAGE)? == pattern(8, 16 * PAGE));
    check!(&r.bytes()[..16 * PAGE] == pattern(8, 16 * PAGE).as_slice());
    Ok(())
}

/// Writes `value` to fault-injection knob `knob`.
fn knob(knob: &str, value: &str) -> Result<(), Outcome> {
    std::fs::write(knob, value).map_err(|e| Outcome::Fail(format!("{knob}: {e}")))
}

/// A 2 MiB device folio whose way back finds no 2 MiB of system memory
/// (fail_page_alloc injects failures of order >= 9 for this task) is split:
/// the faulting page comes back alone, the others stay in device memory as
/// single pages and follow one by one, all with their data.
fn thp_alloc_failure() -> TestResult {
    let dir = "/sys/kernel/debug/fail_page_alloc";
    if !std::path::Path::new(dir).exists() {
        skip!("no {dir}");
    }
    let dev = bound(0)?;
    let n = MB2 / PAGE;
    let mut m = aligned(MB2);
    madvise(&m, libc::MADV_HUGEPAGE);
    cpu_fill(&mut m, 50);
    if count(&cpu_states(&dev, m.addr(), n)?, sys::DRM_NSVM_PTE_HUGE) != n {
        skip!("no THP for the range");
    }
    check_eq!(migrate(&dev, &m, 0, MB2, Mem::Device)?.migrated, n as u64);
    for (k, v) in [
        ("ignore-gfp-highmem", "N"),
        ("ignore-gfp-wait", "N"),
        ("min-order", "9"),
        ("verbose", "0"),
        ("task-filter", "Y"),
        ("interval", "1"),
        ("times", "-1"),
        ("probability", "100"),
    ] {
        knob(&format!("{dir}/{k}"), v)?;
    }
    knob("/proc/self/make-it-fail", "1")?;
    // SAFETY: Inside our mapping.
    let first = unsafe { ptr::read_volatile(m.ptr.add(PAGE + 7)) };
    knob("/proc/self/make-it-fail", "0")?;
    knob(&format!("{dir}/probability"), "0")?;
    check_eq!(first, pattern(50, MB2)[PAGE + 7]);
    let s = cpu_states(&dev, m.addr(), n)?;
    check_eq!(s[1] & DEVICE as u8, 0);
    check_eq!(count(&s, sys::DRM_NSVM_PTE_HUGE), 0);
    check!(m.bytes() == pattern(50, MB2).as_slice());
    check_eq!(count(&cpu_states(&dev, m.addr(), n)?, DEVICE), 0);
    Ok(())
}

// ---- what cannot migrate ----

/// MAP_SHARED memory stays in system memory: counted as failed, intact.
fn shared_refused() -> TestResult {
    let dev = bound(0)?;
    let n = 8;
    let mut m = Map::with_flags(n * PAGE, RW, libc::MAP_SHARED | libc::MAP_ANONYMOUS);
    cpu_fill(&mut m, 9);
    check_eq!(
        migrate(&dev, &m, 0, n * PAGE, Mem::Device)?,
        Moved {
            migrated: 0,
            failed: n as u64
        }
    );
    check_eq!(count(&cpu_states(&dev, m.addr(), n)?, DEVICE), 0);
    check!(gpu_read(&dev, m.addr(), n * PAGE)? == pattern(9, n * PAGE));
    check!(m.bytes() == pattern(9, n * PAGE).as_slice());
    Ok(())
}

/// A page with a reference of someone else's (vmsplice()d into a pipe,
/// which holds it until read) is busy: it stays in system memory, intact,
/// and is in neither count (`migrate_vma_setup()` reports it as never
/// collected); it moves once the pipe let go.
fn referenced_busy() -> TestResult {
    let dev = bound(0)?;
    let n = 8;
    let mut m = Map::with_flags(n * PAGE, RW, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS);
    madvise(&m, libc::MADV_NOHUGEPAGE);
    cpu_fill(&mut m, 13);
    let mut fds = [0; 2];
    // SAFETY: `fds` is room for two descriptors.
    check_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let iov = libc::iovec {
        iov_base: (m.addr() + 3 * PAGE as u64) as *mut _,
        iov_len: PAGE,
    };
    // SAFETY: `iov` names a page of `m`, which outlives the pipe's hold.
    let spliced = unsafe { libc::vmsplice(fds[1], &iov, 1, 0) };
    check_eq!(spliced, PAGE as isize);
    let moved = migrate(&dev, &m, 0, n * PAGE, Mem::Device)?;
    check_eq!(
        moved,
        Moved {
            migrated: n as u64 - 1,
            failed: 0
        }
    );
    let states = cpu_states(&dev, m.addr(), n)?;
    check!(
        u32::from(states[3]) & DEVICE == 0,
        "page 3 moved: {states:?}"
    );
    check!(gpu_read(&dev, m.addr(), n * PAGE)? == pattern(13, n * PAGE));
    let mut buf = vec![0u8; PAGE];
    // SAFETY: `buf` is a page.
    let got = unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), PAGE) };
    check_eq!(got, PAGE as isize);
    check!(buf == pattern(13, n * PAGE)[3 * PAGE..4 * PAGE]);
    for fd in fds {
        // SAFETY: Ours.
        unsafe { libc::close(fd) };
    }
    check_eq!(
        migrate(&dev, &m, 3 * PAGE, PAGE, Mem::Device)?,
        Moved {
            migrated: 1,
            failed: 0
        }
    );
    check!(m.bytes() == pattern(13, n * PAGE).as_slice());
    Ok(())
}

/// A private file mapping: file pages stay, COWed (written) pages move.
fn private_file() -> TestResult {
    let dev = bound(0)?;
    let n = 8;
    let data = pattern(10, n * PAGE);
    let mut f = temp_file("/tmp/nsvm-migrate-file")?;
    f.write_all(&data)?;
    // SAFETY: A private mapping of our file.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            n * PAGE,
            RW,
            libc::MAP_PRIVATE,
            f.as_raw_fd(),
            0,
        )
    };
    check!(p != libc::MAP_FAILED);
    let mut m = Map {
        ptr: p.cast(),
        len: n * PAGE,
    };
    check!(m.bytes() == data.as_slice());
    // Write the first half: anonymous COW copies.
    for i in 0..n / 2 {
        m.bytes_mut()[i * PAGE] ^= 0xff;
    }
    let moved = migrate(&dev, &m, 0, n * PAGE, Mem::Device)?;
    check_eq!(
        moved,
        Moved {
            migrated: (n / 2) as u64,
            failed: (n / 2) as u64
        }
    );
    let mut want = data.clone();
    for i in 0..n / 2 {
        want[i * PAGE] ^= 0xff;
    }
    check!(gpu_read(&dev, m.addr(), n * PAGE)? == want);
    check!(m.bytes() == want.as_slice());
    let _ = std::fs::remove_file("/tmp/nsvm-migrate-file");
    Ok(())
}

/// A range of PROT_NONE, a hole, zero pages, read-only and normal pages:
/// no error, each page ends whole where it may.
fn mixed_range() -> TestResult {
    let dev = bound(0)?;
    let n = 10;
    let mut m = Map::new(n * PAGE, RW);
    cpu_fill(&mut m, 11);
    let want = pattern(11, n * PAGE);
    // Pages 0-1 PROT_NONE, 2-3 a hole, 4-5 zero page, 6-7 read-only.
    // SAFETY: Parts of our own mapping.
    unsafe {
        check_eq!(libc::mprotect(m.ptr.cast(), 2 * PAGE, libc::PROT_NONE), 0);
        check_eq!(libc::munmap(m.ptr.add(2 * PAGE).cast(), 2 * PAGE), 0);
        check_eq!(
            libc::madvise(m.ptr.add(4 * PAGE).cast(), 2 * PAGE, libc::MADV_DONTNEED),
            0
        );
        check_eq!(ptr::read_volatile(m.ptr.add(4 * PAGE)), 0);
        check_eq!(
            libc::mprotect(m.ptr.add(6 * PAGE).cast(), 2 * PAGE, libc::PROT_READ),
            0
        );
    }
    let moved = migrate(&dev, &m, 0, n * PAGE, Mem::Device)?;
    check_eq!(moved.failed, 0);
    // Read-only, zero and normal pages: 6 at most.
    check!(moved.migrated <= 6 && moved.migrated >= 4);
    let s = cpu_states(&dev, m.addr(), n)?;
    check_eq!(s[0] & DEVICE as u8, 0);
    check_eq!(s[2], 0);
    check_eq!(s[8] & DEVICE as u8, DEVICE as u8);
    // SAFETY: Readable parts of our mapping.
    let tail = unsafe { std::slice::from_raw_parts(m.ptr.add(4 * PAGE), 6 * PAGE) };
    check!(tail[..2 * PAGE].iter().all(|b| *b == 0));
    check!(tail[2 * PAGE..] == want[6 * PAGE..]);
    // The GPU reads the read-only pages, and cannot write them.
    check!(gpu_read(&dev, m.addr() + 6 * PAGE as u64, 4 * PAGE)? == want[6 * PAGE..]);
    check!(dev
        .exec(&mut [Cmd::fill(m.addr() + 6 * PAGE as u64, 8, 1)])
        .is_err());
    Ok(())
}

/// A page in device 1's memory is not taken by device 0's MIGRATE, and
/// device 0's GPU reads it correctly (it comes back to system memory).
fn other_device() -> TestResult {
    let dev0 = bound(0)?;
    let dev1 = bound(1)?;
    let n = 4;
    let mut m = Map::new(n * PAGE, RW);
    cpu_fill(&mut m, 12);
    check_eq!(
        migrate(&dev1, &m, 0, n * PAGE, Mem::Device)?.migrated,
        n as u64
    );
    check_eq!(migrate(&dev0, &m, 0, n * PAGE, Mem::Device)?.migrated, 0);
    check_eq!(count(&cpu_states(&dev1, m.addr(), n)?, DEVICE), n);
    check!(gpu_read(&dev0, m.addr(), n * PAGE)? == pattern(12, n * PAGE));
    check_eq!(count(&cpu_states(&dev1, m.addr(), n)?, DEVICE), 0);
    check!(m.bytes() == pattern(12, n * PAGE).as_slice());
    Ok(())
}

/// Device pages after fork: both see the data, each writes its own copy.
fn fork_cow() -> TestResult {
    let dev = bound(0)?;
    let n = 4;
    let mut m = Map::new(n * PAGE, RW);
    cpu_fill(&mut m, 13);
    migrate(&dev, &m, 0, n * PAGE, Mem::Device)?;
    let ptr = m.ptr as usize;
    let st = in_child(|| {
        // SAFETY: The child's copy of the mapping.
        let b = unsafe { std::slice::from_raw_parts_mut(ptr as *mut u8, n * PAGE) };
        if b != pattern(13, n * PAGE).as_slice() {
            return 1;
        }
        b.fill(0xaa);
        0
    });
    check_eq!(st, 0);
    check!(gpu_read(&dev, m.addr(), n * PAGE)? == pattern(13, n * PAGE));
    check!(m.bytes() == pattern(13, n * PAGE).as_slice());
    Ok(())
}

/// `struct gup_test` of the kernel's `mm/gup_test.h`.
#[repr(C)]
#[derive(Default)]
struct GupTest {
    get_delta_usec: u64,
    put_delta_usec: u64,
    addr: u64,
    size: u64,
    nr_pages_per_call: u32,
    gup_flags: u32,
    test_flags: u32,
    which_pages: [u32; 8],
}

/// `PIN_LONGTERM_BENCHMARK`: `_IOWR('g', 3, struct gup_test)`.
const PIN_LONGTERM_BENCHMARK: u64 = nsvm::ioc(3, b'g' as u32, 3, size_of::<GupTest>());

/// A long-term GUP pin of pages in device memory brings them back to
/// system memory first (device-private pages cannot be pinned), data
/// intact.
fn gup_longterm() -> TestResult {
    let gup = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/sys/kernel/debug/gup_test")
    {
        Ok(f) => f,
        Err(_) => skip!("no /sys/kernel/debug/gup_test"),
    };
    let dev = bound(0)?;
    let n = 8;
    let mut m = Map::new(n * PAGE, RW);
    cpu_fill(&mut m, 51);
    check_eq!(
        migrate(&dev, &m, 0, n * PAGE, Mem::Device)?.migrated,
        n as u64
    );
    let mut arg = GupTest {
        addr: m.addr(),
        size: (n * PAGE) as u64,
        nr_pages_per_call: n as u32,
        gup_flags: 1, // FOLL_WRITE
        ..Default::default()
    };
    // SAFETY: `arg` is a valid `struct gup_test` for the call.
    let r = unsafe { libc::ioctl(gup.as_raw_fd(), PIN_LONGTERM_BENCHMARK as _, &raw mut arg) };
    check_eq!(r, 0);
    check_eq!(count(&cpu_states(&dev, m.addr(), n)?, DEVICE), 0);
    check!(m.bytes() == pattern(51, n * PAGE).as_slice());
    Ok(())
}

// ---- eviction and lifetime ----

/// Device memory of device 0, if small enough for a quick `what`.
fn quick_vram(dev: &Device, what: &str) -> Result<usize, Outcome> {
    let vram = dev.get_param(sys::DRM_NSVM_PARAM_VRAM_SIZE)? as usize;
    if vram == 0 || vram > 64 << 20 {
        skip!("device memory {vram} too large for a quick {what}");
    }
    Ok(vram)
}

/// A 2 MiB THP filled with the pattern of `seed`; skips without THPs.
fn thp_map(dev: &Device, seed: u64) -> Result<Map, Outcome> {
    let mut m = aligned(MB2);
    madvise(&m, libc::MADV_HUGEPAGE);
    cpu_fill(&mut m, seed);
    if count(
        &cpu_states(dev, m.addr(), MB2 / PAGE)?,
        sys::DRM_NSVM_PTE_HUGE,
    ) != MB2 / PAGE
    {
        skip!("no THP for the range");
    }
    Ok(m)
}

/// A working set 4x device memory: every chunk still has its data, after
/// evictions.
fn evict_4x() -> TestResult {
    let dev = bound(0)?;
    let vram = quick_vram(&dev, "4x run")?;
    let before = vram_stat(0, "evictions")?;
    let parts: Vec<Map> = (0..4)
        .map(|i| {
            let mut m = Map::new(vram, RW);
            cpu_fill(&mut m, 20 + i);
            m
        })
        .collect();
    for m in &parts {
        let moved = migrate(&dev, m, 0, vram, Mem::Device)?;
        check_eq!(moved.failed, 0);
    }
    check!(vram_stat(0, "evictions")? > before);
    for (i, m) in parts.iter().enumerate() {
        check!(gpu_read(&dev, m.addr(), vram)? == pattern(20 + i as u64, vram));
        check!(m.bytes() == pattern(20 + i as u64, vram).as_slice());
    }
    Ok(())
}

/// With device memory full of a range, migrating that range again selects
/// nothing and evicts nothing.
fn resident_no_evict() -> TestResult {
    let dev = bound(0)?;
    let vram = quick_vram(&dev, "run")?;
    let mut m = aligned(vram);
    cpu_fill(&mut m, 60);
    check_eq!(migrate(&dev, &m, 0, vram, Mem::Device)?.failed, 0);
    let before = vram_stat(0, "evictions")?;
    check_eq!(migrate(&dev, &m, 0, vram, Mem::Device)?, Moved::default());
    check_eq!(vram_stat(0, "evictions")?, before);
    check!(m.bytes() == pattern(60, vram).as_slice());
    Ok(())
}

/// Fragmentation: how much device memory a mix of THPs and 4 KiB pages
/// uses before the first eviction. Device memory is filled with THPs (a
/// quarter) and 2 MiB ranges of 4 KiB pages, then every other small page
/// is freed: 4 KiB holes, none of 2 MiB. More 2 MiB ranges of small pages
/// then fill the holes before anything is evicted; a THP still needs a
/// free 2 MiB block, so it evicts at once. The figures are printed; every
/// range keeps its data.
fn fragmentation_mixed() -> TestResult {
    let dev = bound(0)?;
    let vram = quick_vram(&dev, "run")?;
    let chunks = vram / MB2;
    let thps = chunks / 4;
    // 2 MiB of 4 KiB pages filled with the pattern of `seed`.
    let small = |seed| {
        let mut m = aligned(MB2);
        madvise(&m, libc::MADV_NOHUGEPAGE);
        cpu_fill(&mut m, seed);
        (m, seed)
    };
    // Fill device memory: THPs, then small pages.
    let mut held = Vec::new();
    for i in 0..thps {
        let seed = 880 + i as u64;
        held.push((thp_map(&dev, seed)?, seed, false));
    }
    for i in thps..chunks {
        let (m, seed) = small(900 + i as u64);
        held.push((m, seed, true));
    }
    let evictions = vram_stat(0, "evictions")?;
    for (m, _, _) in &held {
        check_eq!(
            migrate(&dev, m, 0, MB2, Mem::Device)?.migrated,
            (MB2 / PAGE) as u64
        );
    }
    check_eq!(vram_stat(0, "evictions")?, evictions, "filling evicted");
    // Free every other small page: half of the small ranges' memory, in
    // 4 KiB holes.
    for (m, _, small) in &held {
        if !*small {
            continue;
        }
        for i in (0..MB2 / PAGE).step_by(2) {
            // SAFETY: A page of our mapping.
            check_eq!(
                unsafe { libc::madvise(m.ptr.add(i * PAGE).cast(), PAGE, libc::MADV_DONTNEED) },
                0
            );
        }
    }
    let used = vram_stat(0, "pages_used")? as usize * PAGE;
    let free = vram - used;
    // Small ranges until the first eviction.
    let mut fitted = 0;
    let mut more = Vec::new();
    loop {
        let (m, seed) = small(940 + more.len() as u64);
        check_eq!(
            migrate(&dev, &m, 0, MB2, Mem::Device)?.migrated,
            (MB2 / PAGE) as u64
        );
        more.push((m, seed));
        if vram_stat(0, "evictions")? != evictions {
            break;
        }
        fitted += MB2;
        if more.len() > 2 * chunks {
            return Err(Outcome::Fail("no eviction with device memory full".into()));
        }
    }
    let usable = used + fitted;
    println!(
        "{} MiB device memory: {} MiB used after the frees ({} MiB free in 4 KiB holes); \
         {} MiB of small pages fitted before the first eviction: {}% usable",
        vram >> 20,
        used >> 20,
        free >> 20,
        fitted >> 20,
        usable * 100 / vram
    );
    // A THP now: no free 2 MiB block is left, and it moves whole.
    let before = vram_stat(0, "evictions")?;
    let tseed = 899;
    let t = thp_map(&dev, tseed)?;
    check_eq!(
        migrate(&dev, &t, 0, MB2, Mem::Device)?.migrated,
        (MB2 / PAGE) as u64
    );
    println!(
        "a THP then evicted {} chunk(s)",
        vram_stat(0, "evictions")? - before
    );
    check!(
        fitted + MB2 >= free,
        "only {} of {} MiB of 4 KiB holes used before an eviction",
        fitted >> 20,
        free >> 20
    );
    // Everything kept its data, wherever it is now.
    for (m, seed, small) in &held {
        let want = pattern(*seed, MB2);
        for i in 0..MB2 / PAGE {
            let page = &m.bytes()[i * PAGE..(i + 1) * PAGE];
            let freed = *small && i % 2 == 0;
            check!(
                if freed {
                    page.iter().all(|&b| b == 0)
                } else {
                    page == &want[i * PAGE..(i + 1) * PAGE]
                },
                "page {i} of a range"
            );
        }
    }
    for (m, seed) in more.iter().chain([(t, tseed)].iter()) {
        check!(m.bytes() == pattern(*seed, MB2).as_slice());
    }
    Ok(())
}

/// Device memory that held THPs is reused for single pages, which are
/// then the least recently used: an eviction moves them back. Freed from a
/// 2 MiB folio, a chunk's first page still says it heads one until it is
/// handed out again; an eviction that walked the chunk from there skipped
/// the single pages behind it, which then stayed in device memory for
/// good (and device removal waited for them forever).
fn evict_after_thp_reuse() -> TestResult {
    let dev = bound(0)?;
    let vram = quick_vram(&dev, "run")?;
    // Every chunk once a 2 MiB folio, then free.
    let all: Vec<Map> = (0..vram / MB2)
        .map(|i| thp_map(&dev, 700 + i as u64))
        .collect::<Result<_, _>>()?;
    for m in &all {
        check_eq!(
            migrate(&dev, m, 0, MB2, Mem::Device)?.migrated,
            (MB2 / PAGE) as u64
        );
    }
    for m in &all {
        check_eq!(
            migrate(&dev, m, 0, MB2, Mem::System)?.migrated,
            (MB2 / PAGE) as u64
        );
    }
    drop(all);
    check_eq!(vram_used_settled(0)?, 0);
    let n = 64;
    let mut small = Map::new(n * PAGE, RW);
    cpu_fill(&mut small, 750);
    check_eq!(
        migrate(&dev, &small, 0, n * PAGE, Mem::Device)?.migrated,
        n as u64
    );
    // Fill device memory with THPs: the last needs an eviction, and the
    // single pages are the least recently used.
    let evictions = vram_stat(0, "evictions")?;
    let full: Vec<Map> = (0..vram / MB2)
        .map(|i| thp_map(&dev, 760 + i as u64))
        .collect::<Result<_, _>>()?;
    for m in &full {
        migrate(&dev, m, 0, MB2, Mem::Device)?;
    }
    check!(vram_stat(0, "evictions")? > evictions, "nothing evicted");
    check_eq!(
        count(&cpu_states(&dev, small.addr(), n)?, DEVICE),
        0,
        "single pages left in device memory"
    );
    check!(small.bytes() == pattern(750, n * PAGE).as_slice());
    for (i, m) in full.iter().enumerate() {
        check!(m.bytes() == pattern(760 + i as u64, MB2).as_slice());
    }
    Ok(())
}

/// A process that exits with pages in device memory frees them.
fn exit_frees() -> TestResult {
    let before = vram_stat(0, "pages_used")?;
    let st = in_child(|| {
        let Ok(dev) = Device::open_render(0) else {
            return 1;
        };
        if dev.svm_init(0).is_err() {
            return 2;
        }
        let mut m = Map::new(64 * PAGE, RW);
        cpu_fill(&mut m, 30);
        match dev.migrate(m.addr(), m.len as u64, Mem::Device) {
            Ok(moved) if moved.migrated == 64 => {}
            _ => return 3,
        }
        std::mem::forget(m);
        0
    });
    check_eq!(st, 0);
    check_eq!(vram_stat(0, "pages_used")?, before);
    Ok(())
}

/// Module unload with pages in device memory: the data comes back to
/// system memory first. Only with NSVM_UNLOAD=1 (it reloads the module
/// with the parameters in NSVM_INSMOD_ARGS).
fn unload_keeps_data() -> TestResult {
    if std::env::var("NSVM_UNLOAD").as_deref() != Ok("1") {
        skip!("set NSVM_UNLOAD=1 to unload and reload nsvm");
    }
    let n = 64;
    let mut m = Map::new(n * PAGE, RW);
    cpu_fill(&mut m, 31);
    {
        let dev = bound(0)?;
        check_eq!(
            migrate(&dev, &m, 0, n * PAGE, Mem::Device)?.migrated,
            n as u64
        );
    }
    // The module's parameters are not in sysfs: the guest passes them.
    let params = std::env::var("NSVM_INSMOD_ARGS").unwrap_or_default();
    let rm = std::process::Command::new("rmmod").arg("nsvm").status()?;
    check!(rm.success());
    let ok = m.bytes() == pattern(31, n * PAGE).as_slice();
    let ins = insmod(&params, "")?;
    check!(ins.success());
    check!(ok);
    Ok(())
}

/// Unload/reload cycles: with a file open (and device pages of it) rmmod
/// fails cleanly and nothing changes; once it is closed, rmmod and insmod
/// work, and the data is intact each time. Out-of-range parameters are
/// refused, and the second round runs a one-channel copy engine. Only with
/// NSVM_UNLOAD=1.
fn unload_reload_loop() -> TestResult {
    if std::env::var("NSVM_UNLOAD").as_deref() != Ok("1") {
        skip!("set NSVM_UNLOAD=1 to unload and reload nsvm");
    }
    let params = std::env::var("NSVM_INSMOD_ARGS").unwrap_or_default();
    let n = 16;
    let mut m = Map::new(n * PAGE, RW);
    for round in 0..3u64 {
        cpu_fill(&mut m, 70 + round);
        let dev = bound(0)?;
        check_eq!(
            migrate(&dev, &m, 0, n * PAGE, Mem::Device)?.migrated,
            n as u64
        );
        let busy = std::process::Command::new("rmmod").arg("nsvm").status()?;
        check!(!busy.success(), "rmmod succeeded with a file open");
        check!(gpu_read(&dev, m.addr(), n * PAGE)? == pattern(70 + round, n * PAGE));
        drop(dev);
        check!(std::process::Command::new("rmmod")
            .arg("nsvm")
            .status()?
            .success());
        check!(m.bytes() == pattern(70 + round, n * PAGE).as_slice());
        if round == 0 {
            for bad in [
                "num_devices=0",
                "vram_mb=3",
                "copy_channels=0",
                "copy_channels=9",
            ] {
                let ins = insmod(&params, bad)?;
                check!(!ins.success(), "insmod accepted {bad}");
            }
        }
        let channels = if round == 1 { "copy_channels=1" } else { "" };
        check!(insmod(&params, channels)?.success());
    }
    Ok(())
}

/// `insmod nsvm.ko` with `params`, and `extra` in place of any of them
/// with the same name (a parameter given twice is refused with EEXIST).
fn insmod(params: &str, extra: &str) -> std::io::Result<std::process::ExitStatus> {
    let name = |p: &str| p.split('=').next().unwrap_or_default().to_string();
    let replaced: Vec<String> = extra.split_whitespace().map(name).collect();
    std::process::Command::new("insmod")
        .arg("/lib/modules/nsvm.ko")
        .args(
            params
                .split_whitespace()
                .filter(|p| !replaced.contains(&name(p))),
        )
        .args(extra.split_whitespace())
        .status()
}

// ---- SET_ATTR policies and atomics ----

fn attr(preferred: u32, migrate_on_fault: bool, atomic: u32) -> Attr {
    Attr {
        preferred,
        migrate_on_fault,
        atomic,
    }
}

/// Preferred DEVICE with migrate-on-fault: GPU faults migrate first.
fn fault_to_device() -> TestResult {
    let dev = bound(0)?;
    let n = 16;
    let mut m = Map::new(n * PAGE, RW);
    cpu_fill(&mut m, 40);
    dev.set_attr(
        m.addr(),
        m.len as u64,
        attr(sys::DRM_NSVM_LOCATION_DEVICE, true, 0),
    )?;
    check!(gpu_read(&dev, m.addr(), n * PAGE)? == pattern(40, n * PAGE));
    check_eq!(count(&cpu_states(&dev, m.addr(), n)?, DEVICE), n);
    check_eq!(count(&states(&dev, m.addr(), n)?, DEVICE), n);
    check!(m.bytes() == pattern(40, n * PAGE).as_slice());
    Ok(())
}

/// A fault serves only pages of its own policy: in one 2 MiB fault window,
/// a range with migrate-on-fault to the device and a default one beside
/// it. A GPU write to the default range first must not map the other
/// range's pages from system memory (its own faults would then never come,
/// nor migrate it), and the other range's faults must not migrate the
/// default one.
fn policy_window_boundary() -> TestResult {
    let dev = bound(0)?;
    let n = 16;
    let mut m = aligned(MB2);
    cpu_fill(&mut m, 42);
    let (plain, moving) = (m.addr(), m.addr() + (n * PAGE) as u64);
    dev.set_attr(
        moving,
        (n * PAGE) as u64,
        attr(sys::DRM_NSVM_LOCATION_DEVICE, true, 0),
    )?;
    exec(&dev, &mut [Cmd::fill(plain, (n * PAGE) as u64, 7)])?;
    check_eq!(count(&states(&dev, moving, n)?, sys::DRM_NSVM_PTE_VALID), 0);
    check!(gpu_read(&dev, moving, n * PAGE)? == pattern(42, 2 * n * PAGE)[n * PAGE..]);
    check_eq!(count(&cpu_states(&dev, moving, n)?, DEVICE), n);
    check_eq!(count(&cpu_states(&dev, plain, n)?, DEVICE), 0);
    check!(m.bytes()[..n * PAGE]
        .chunks(8)
        .all(|w| w == 7u64.to_le_bytes()));
    check!(m.bytes()[n * PAGE..2 * n * PAGE] == pattern(42, 2 * n * PAGE)[n * PAGE..]);
    Ok(())
}

/// Preferred SYSTEM with migrate-on-fault: GPU faults bring device pages
/// back first.
fn fault_to_system() -> TestResult {
    let dev = bound(0)?;
    let n = 8;
    let mut m = Map::new(n * PAGE, RW);
    cpu_fill(&mut m, 41);
    migrate(&dev, &m, 0, m.len, Mem::Device)?;
    dev.set_attr(
        m.addr(),
        m.len as u64,
        attr(sys::DRM_NSVM_LOCATION_SYSTEM, true, 0),
    )?;
    check!(gpu_read(&dev, m.addr(), n * PAGE)? == pattern(41, n * PAGE));
    check_eq!(count(&cpu_states(&dev, m.addr(), n)?, DEVICE), 0);
    Ok(())
}

/// GPU atomics take exclusive access to anonymous memory; the CPU's next
/// access ends it (the GPU entry goes) and sees the result.
fn atomic_exclusive() -> TestResult {
    let dev = bound(0)?;
    let mut m = Map::new(PAGE, RW);
    m.bytes_mut()[..8].copy_from_slice(&40u64.to_le_bytes());
    let mut cmd = [Cmd::add64(m.addr(), 2)];
    exec(&dev, &mut cmd)?;
    check_eq!(cmd[0].value, 40);
    let s = states(&dev, m.addr(), 1)?;
    check!(u32::from(s[0]) & sys::DRM_NSVM_PTE_ATOMIC != 0);
    // SAFETY: Our mapping.
    check_eq!(unsafe { ptr::read_volatile(m.ptr.cast::<u64>()) }, 42);
    check_eq!(states(&dev, m.addr(), 1)?[0], 0);
    // Interleaved CPU and GPU increments all count.
    for _ in 0..10 {
        exec(&dev, &mut [Cmd::add64(m.addr(), 1)])?;
        // SAFETY: Our mapping.
        unsafe {
            ptr::write_volatile(
                m.ptr.cast::<u64>(),
                ptr::read_volatile(m.ptr.cast::<u64>()) + 1,
            )
        };
    }
    // SAFETY: Our mapping.
    check_eq!(unsafe { ptr::read_volatile(m.ptr.cast::<u64>()) }, 62);
    Ok(())
}

/// Exclusive atomics on MAP_SHARED memory are refused (EFAULT); with the
/// SYSTEM atomic policy they run in place; with DEVICE the page migrates.
fn atomic_policies() -> TestResult {
    let dev = bound(0)?;
    let m = Map::with_flags(PAGE, RW, libc::MAP_SHARED | libc::MAP_ANONYMOUS);
    let e = dev.exec(&mut [Cmd::add32(m.addr(), 1)]);
    check!(matches!(e, Err(ref e) if e.error.errno == libc::EFAULT && e.fault_addr == m.addr()));
    dev.set_attr(
        m.addr(),
        PAGE as u64,
        attr(0, false, sys::DRM_NSVM_ATOMIC_SYSTEM),
    )?;
    exec(&dev, &mut [Cmd::add32(m.addr(), 5)])?;
    // SAFETY: Our mapping.
    check_eq!(unsafe { ptr::read_volatile(m.ptr.cast::<u32>()) }, 5);

    let a = Map::new(PAGE, RW);
    dev.set_attr(
        a.addr(),
        PAGE as u64,
        attr(0, false, sys::DRM_NSVM_ATOMIC_DEVICE),
    )?;
    exec(&dev, &mut [Cmd::add32(a.addr(), 7)])?;
    check_eq!(count(&cpu_states(&dev, a.addr(), 1)?, DEVICE), 1);
    // SAFETY: Our mapping.
    check_eq!(unsafe { ptr::read_volatile(a.ptr.cast::<u32>()) }, 7);
    Ok(())
}

/// Exclusive access, then mprotect and fork: the GPU entry goes, the
/// parent keeps the value, the child sees it.
fn atomic_mprotect_fork() -> TestResult {
    let dev = bound(0)?;
    let m = Map::new(PAGE, RW);
    exec(&dev, &mut [Cmd::add64(m.addr(), 9)])?;
    m.protect(libc::PROT_READ);
    check_eq!(states(&dev, m.addr(), 1)?[0], 0);
    // SAFETY: Our mapping.
    check_eq!(unsafe { ptr::read_volatile(m.ptr.cast::<u64>()) }, 9);
    m.protect(RW);
    exec(&dev, &mut [Cmd::add64(m.addr(), 1)])?;
    let p = m.ptr as usize;
    // SAFETY: The child's copy of the mapping.
    let st = in_child(|| i32::from(unsafe { ptr::read_volatile(p as *const u64) } != 10));
    check_eq!(st, 0);
    // SAFETY: Our mapping.
    check_eq!(unsafe { ptr::read_volatile(m.ptr.cast::<u64>()) }, 10);
    Ok(())
}

/// A page just back from the GPU's exclusive access migrates like its
/// neighbours, also while the device's fault handler is busy with another
/// process's faults. Taking the access touches the page on the handler's
/// CPU, which leaves a reference to it in that CPU's LRU cache (PG_lru
/// still set); before the kernel's migrate_device_unmap() drained LRU
/// caches on unexpected references as well, MIGRATE skipped the page as
/// pinned in a few of 200 rounds, and went on skipping it for as long as
/// the cache kept it: 50 to 250 ms (kernel patch 0004). MIGRATE is best
/// effort, and a page busy elsewhere for a moment may miss one: a short
/// round is retried 3 times, 1 ms apart, before it counts.
fn migrate_after_atomic_beside_faults() -> TestResult {
    const ROUNDS: usize = 200;
    let (pid, ready_ok) = fork_ready(|wfd| {
        let Ok(dev) = bound(0) else { return 1 };
        let big = aligned(8 * MB2);
        ready(wfd);
        loop {
            madvise(&big, libc::MADV_DONTNEED);
            let _ = dev.exec(&mut [Cmd::fill(big.addr(), big.len as u64, 7)]);
        }
    })?;
    let res = (|| {
        check!(ready_ok, "the faulting child did not start");
        let dev = bound(0)?;
        let mut short = Vec::new();
        let mut retried = 0;
        for round in 0..ROUNDS {
            let mut m = aligned_to(16 * PAGE, 16 * PAGE);
            madvise(&m, libc::MADV_NOHUGEPAGE);
            cpu_fill(&mut m, round as u64);
            exec(&dev, &mut [Cmd::add64(m.addr() + 15 * PAGE as u64, 1)])?;
            // SAFETY: Our mapping; the read ends the exclusive access.
            let _ = unsafe { ptr::read_volatile(m.ptr.add(15 * PAGE).cast::<u64>()) };
            let mut moved = migrate(&dev, &m, 0, m.len, Mem::Device)?.migrated;
            if moved == 16 {
                continue;
            }
            retried += 1;
            for _ in 0..3 {
                std::thread::sleep(std::time::Duration::from_millis(1));
                moved += migrate(&dev, &m, 0, m.len, Mem::Device)?.migrated;
                if moved == 16 {
                    break;
                }
            }
            if moved != 16 {
                short.push((round, moved));
            }
        }
        println!(
            "{retried} of {ROUNDS} rounds retried, {} still short after 3 retries",
            short.len()
        );
        check!(short.is_empty(), "(round, pages moved): {short:?}");
        Ok(())
    })();
    // SAFETY: Our child, which loops until killed.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, ptr::null_mut(), 0);
    }
    res
}

// ---- bad input ----

fn bad_args() -> TestResult {
    let dev = open(0)?;
    let m = Map::new(4 * PAGE, RW);
    check_eq!(
        dev.migrate(m.addr(), PAGE as u64, Mem::Device).err(),
        Some(errno(libc::ENOENT))
    );
    dev.svm_init(0)?;
    let einval = Some(errno(libc::EINVAL));
    let arg = |f: &dyn Fn(&mut sys::drm_nsvm_migrate)| {
        let mut a = sys::drm_nsvm_migrate {
            size: nsvm::size_of_u32::<sys::drm_nsvm_migrate>(),
            start: m.addr(),
            length: PAGE as u64,
            target: sys::DRM_NSVM_MEM_DEVICE,
            ..Default::default()
        };
        f(&mut a);
        dev.migrate_raw(&mut a).err()
    };
    check_eq!(arg(&|_| {}), None);
    check_eq!(arg(&|a| a.start += 1), einval);
    check_eq!(arg(&|a| a.length = 0), einval);
    check_eq!(arg(&|a| a.length = 100), einval);
    check_eq!(arg(&|a| a.target = 7), einval);
    check_eq!(arg(&|a| a.flags = 1), einval);
    check_eq!(arg(&|a| a.pad = 1), einval);
    check_eq!(arg(&|a| a.size -= 8), einval);
    check_eq!(arg(&|a| a.start = !4095), einval);
    check_eq!(
        arg(&|a| a.length = sys::DRM_NSVM_MIGRATE_MAX_LEN + 4096),
        einval
    );
    // Holes are not errors: nothing is there. Kernel addresses lie past
    // the user address limit: EINVAL (nsvm_robust covers the edges).
    check_eq!(
        dev.migrate(0xffff_8000_0000_0000, 1 << 20, Mem::Device),
        Err(errno(libc::EINVAL))
    );
    check_eq!(dev.migrate(4096, 1 << 20, Mem::Device)?, Moved::default());

    let sattr = |f: &dyn Fn(&mut sys::drm_nsvm_set_attr)| {
        let mut a = sys::drm_nsvm_set_attr {
            size: nsvm::size_of_u32::<sys::drm_nsvm_set_attr>(),
            start: m.addr(),
            length: PAGE as u64,
            ..Default::default()
        };
        f(&mut a);
        dev.set_attr_raw(&mut a).err()
    };
    check_eq!(sattr(&|_| {}), None);
    check_eq!(sattr(&|a| a.preferred = 3), einval);
    check_eq!(sattr(&|a| a.atomic = 3), einval);
    check_eq!(sattr(&|a| a.migrate_on_fault = 2), einval);
    check_eq!(sattr(&|a| a.length = 0), einval);
    check_eq!(sattr(&|a| a.start = 1), einval);
    check_eq!(sattr(&|a| a.pad = 1), einval);
    // Too many ranges: ENOSPC, and the earlier ones stay.
    let max = sys::DRM_NSVM_ATTR_MAX_RANGES as u64;
    for i in 0..max {
        dev.set_attr(i * 2 * PAGE as u64, PAGE as u64, attr(2, true, 0))?;
    }
    check_eq!(
        dev.set_attr(max * 2 * PAGE as u64, PAGE as u64, attr(2, true, 0))
            .err(),
        Some(errno(libc::ENOSPC))
    );
    let mut flags = sys::drm_nsvm_snapshot {
        size: nsvm::size_of_u32::<sys::drm_nsvm_snapshot>(),
        flags: 2,
        ..Default::default()
    };
    // SAFETY: A valid argument.
    let r = unsafe {
        nsvm::raw_ioctl(
            dev.file(),
            nsvm::DRM_IOCTL_NSVM_SNAPSHOT,
            (&raw mut flags).cast(),
        )
    };
    check_eq!(r.err(), einval);
    Ok(())
}

// ---- tracepoints ----

/// `<tracefs>`: mounted on its own, or under debugfs.
fn tracefs() -> Option<&'static str> {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .into_iter()
        .find(|d| std::path::Path::new(&format!("{d}/events/nsvm")).exists())
}

fn trace_write(dir: &str, file: &str, what: &str) -> Result<(), Outcome> {
    std::fs::write(format!("{dir}/{file}"), what)
        .map_err(|e| Outcome::Fail(format!("{dir}/{file}: {e}")))
}

/// Every nsvm event fires for what it names: a GPU fault and its batch, a
/// MIGRATE, a CPU fault on device memory, an munmap, an eviction.
fn tracepoints() -> TestResult {
    let Some(dir) = tracefs() else {
        skip!("no <tracefs>/events/nsvm");
    };
    let dev = bound(0)?;
    let vram = dev.get_param(sys::DRM_NSVM_PARAM_VRAM_SIZE)? as usize;
    if vram == 0 || vram > 64 << 20 {
        skip!("device memory {vram} too large to fill quickly");
    }
    trace_write(dir, "tracing_on", "0")?;
    trace_write(dir, "trace", "")?;
    trace_write(dir, "events/nsvm/enable", "1")?;
    trace_write(dir, "tracing_on", "1")?;
    let run = || -> TestResult {
        let a = Map::new(4 * PAGE, RW);
        exec(&dev, &mut [Cmd::fill(a.addr(), 4 * PAGE as u64, 1)])?;
        let mut m = Map::new(vram + MB2, RW);
        cpu_fill(&mut m, 3);
        // More than fits: the last steps evict the first.
        migrate(&dev, &m, 0, vram + MB2, Mem::Device)?;
        // The CPU faults back what is still in device memory.
        check!(m.bytes() == pattern(3, vram + MB2).as_slice());
        drop(a);
        Ok(())
    };
    let result = run();
    trace_write(dir, "tracing_on", "0")?;
    trace_write(dir, "events/nsvm/enable", "0")?;
    result?;
    let text = std::fs::read_to_string(format!("{dir}/trace"))
        .map_err(|e| Outcome::Fail(format!("{dir}/trace: {e}")))?;
    for want in [
        "nsvm_gpu_fault: client=",
        "nsvm_fault_batch: client=",
        "to=device cause=request",
        "to=system cause=cpu-fault migrated=",
        "nsvm_invalidate: client=",
        "nsvm_evict: dev=0 chunk=",
    ] {
        let Some(line) = text.lines().find(|l| l.contains(want)) else {
            return Err(Outcome::Fail(format!("no {want:?} in the trace:\n{text}")));
        };
        println!("{}", line.trim());
    }
    trace_write(dir, "trace", "")?;
    Ok(())
}

igt_main! {
    "basic" => basic,
    "tracepoints" => tracepoints,
    "gpu-write-cpu-read" => gpu_write_cpu_read,
    "migrate-back" => migrate_back,
    "partial-cpu-fault-mix" => partial_cpu_fault_mix,
    "round-trips" => round_trips,
    "thp-whole" => thp_whole,
    "thp-empty-and-zero" => thp_empty_and_zero,
    "thp-free-munmap-mremap" => thp_free_munmap_mremap,
    "thp-alloc-failure" => thp_alloc_failure,
    "shared-refused" => shared_refused,
    "referenced-busy" => referenced_busy,
    "private-file" => private_file,
    "mixed-range" => mixed_range,
    "other-device" => other_device,
    "fork-cow" => fork_cow,
    "gup-longterm" => gup_longterm,
    "evict-4x" => evict_4x,
    "resident-no-evict" => resident_no_evict,
    "fragmentation-mixed" => fragmentation_mixed,
    "evict-after-thp-reuse" => evict_after_thp_reuse,
    "exit-frees" => exit_frees,
    "fault-to-device" => fault_to_device,
    "fault-to-system" => fault_to_system,
    "policy-window-boundary" => policy_window_boundary,
    "atomic-exclusive" => atomic_exclusive,
    "atomic-policies" => atomic_policies,
    "atomic-mprotect-fork" => atomic_mprotect_fork,
    "migrate-after-atomic-beside-faults" => migrate_after_atomic_beside_faults,
    "bad-args" => bad_args,
    "unload-keeps-data" => unload_keeps_data,
    "unload-reload-loop" => unload_reload_loop,
}
