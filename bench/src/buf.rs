// SPDX-License-Identifier: MIT

//! Benchmark buffers: anonymous memory, 2 MiB aligned, backed by 4 KiB
//! pages or by transparent huge pages.

use std::ptr;

/// 2 MiB.
pub const MB2: usize = 2 << 20;

/// How a buffer is backed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backing {
    /// 4 KiB pages (`MADV_NOHUGEPAGE`).
    Small,
    /// Transparent huge pages (`MADV_HUGEPAGE`).
    Huge,
}

impl Backing {
    /// The name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Self::Small => "4k",
            Self::Huge => "thp",
        }
    }
}

/// A private anonymous mapping of `len` bytes at a 2 MiB boundary.
pub struct Buf {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: A `Buf` owns its mapping; moving it to another thread is fine.
unsafe impl Send for Buf {}
// SAFETY: `&Buf` only hands out the address; threads touch disjoint buffers.
unsafe impl Sync for Buf {}

impl Buf {
    /// A mapping of `len` bytes, not populated.
    pub fn new(len: usize, backing: Backing) -> Self {
        let map_len = len + MB2;
        // SAFETY: A fresh anonymous mapping, trimmed to the aligned part.
        unsafe {
            let p = libc::mmap(
                ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert!(p != libc::MAP_FAILED, "mmap of {len} bytes failed");
            let start = p as usize;
            let aligned = (start + MB2 - 1) & !(MB2 - 1);
            if aligned > start {
                libc::munmap(p, aligned - start);
            }
            let tail = start + map_len - (aligned + len);
            if tail > 0 {
                libc::munmap((aligned + len) as *mut _, tail);
            }
            let advice = match backing {
                Backing::Small => libc::MADV_NOHUGEPAGE,
                Backing::Huge => libc::MADV_HUGEPAGE,
            };
            libc::madvise(aligned as *mut _, len, advice);
            Self {
                ptr: aligned as *mut u8,
                len,
            }
        }
    }

    /// A mapping of `len` bytes, populated by the CPU with `byte`.
    pub fn filled(len: usize, backing: Backing, byte: u8) -> Self {
        let b = Self::new(len, backing);
        // SAFETY: Inside the mapping.
        unsafe { ptr::write_bytes(b.ptr, byte, len) };
        b
    }

    /// The start address.
    pub fn addr(&self) -> u64 {
        self.ptr as u64
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The start pointer.
    pub fn ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Unmaps the buffer, returning the seconds munmap took.
    pub fn unmap_timed(self) -> f64 {
        let t = std::time::Instant::now();
        // SAFETY: Our mapping; `self` is forgotten below.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
        let s = t.elapsed().as_secs_f64();
        std::mem::forget(self);
        s
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        // SAFETY: Our mapping.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// The fraction of anonymous memory in this process mapped by THPs.
pub fn thp_fraction() -> f64 {
    let text = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
    let kb = |key: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let anon = kb("Anonymous:");
    if anon == 0.0 {
        0.0
    } else {
        kb("AnonHugePages:") / anon
    }
}
