// SPDX-License-Identifier: GPL-2.0

//! `<debugfs>/nsvm/nsvm.<index>/client-<id>-pt`: the GPU page table of a
//! mirror, over a range chosen by writing to the file.
//!
//! ```text
//! # echo 0x7f1442a00000 0x400000 > client-0-pt
//! # cat client-0-pt
//! range 0x7f1442a00000-0x7f1442e00000 (1024 pages)
//! 0x7f1442a00000-0x7f1442c00000   512 rwhad vram 0-511
//! 0x7f1442c00000-0x7f1442c01000     1 r---- system
//! mapped 513 of 1024 pages
//! ```
//!
//! One line per run of entries with the same flags (`r` valid, `w`
//! writable, `h` part of a 2 MiB mapping, `a` atomics allowed, `d` device
//! memory) and, for device memory, consecutive pages; unmapped pages are
//! left out. The range is at most [`MAX_RANGE`] and the dump at most
//! [`MAX_RUNS`] lines. Reading takes the VM lock per page, as a GPU access
//! would; it never allocates under it.

use core::{
    cmp::Ordering,
    fmt, //
};

use kernel::{
    debugfs::Reader,
    new_mutex,
    prelude::*,
    sync::{
        Arc,
        Mutex, //
    },
    uaccess::UserSliceReader,
};

use crate::{
    gpu::{
        GpuVm,
        Pte,
        PteAddr,
        PAGE_SIZE_4K, //
    },
    svm::MirrorVm,
};

/// Largest range one dump covers.
pub(crate) const MAX_RANGE: usize = 1 << 30;
/// Most lines one dump prints.
const MAX_RUNS: usize = 4096;

/// The page-table dump file's data: the mirror and the chosen range.
#[pin_data]
pub(crate) struct PtDump<V: GpuVm> {
    vm: Arc<MirrorVm<V>>,
    /// `(start, end)`, page aligned; empty until a range is written. A leaf
    /// lock: not held while the VM lock is taken.
    #[pin]
    range: Mutex<(usize, usize)>,
}

impl<V: GpuVm> PtDump<V> {
    pub(crate) fn new(vm: Arc<MirrorVm<V>>) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            vm,
            range <- new_mutex!((0, 0), "PtDump::range"),
        })
    }
}

/// A run of entries being printed.
struct Run {
    start: usize,
    pages: usize,
    flags: [u8; 5],
    /// Device page index of the first page, for device memory.
    vram: Option<usize>,
}

fn flags(p: &Pte) -> [u8; 5] {
    let vram = matches!(p.addr, PteAddr::Vram(_));
    let bit = |on: bool, c: u8| if on { c } else { b'-' };
    [
        b'r',
        bit(p.writable, b'w'),
        bit(p.huge, b'h'),
        bit(p.atomic, b'a'),
        bit(vram, b'd'),
    ]
}

impl Run {
    /// A run of the one entry `p` at `va`.
    fn new(va: usize, p: &Pte) -> Self {
        Self {
            start: va,
            pages: 1,
            flags: flags(p),
            vram: match p.addr {
                PteAddr::Vram(i) => Some(i),
                PteAddr::System(_) => None,
            },
        }
    }

    /// Whether `p` at `va` continues this run.
    fn continues(&self, va: usize, p: &Pte) -> bool {
        let next = self.start + self.pages * PAGE_SIZE_4K;
        let same_page = match (self.vram, p.addr) {
            (Some(first), PteAddr::Vram(i)) => i == first + self.pages,
            (None, PteAddr::System(_)) => true,
            _ => false,
        };
        va == next && flags(p) == self.flags && same_page
    }

    fn print(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let flags = core::str::from_utf8(&self.flags).map_err(|_| fmt::Error)?;
        write!(
            f,
            "{:#x}-{:#x} {:>5} {flags} ",
            self.start,
            self.start + self.pages * PAGE_SIZE_4K,
            self.pages
        )?;
        match self.vram {
            Some(i) => writeln!(f, "vram {}-{}", i, i + self.pages - 1),
            None => writeln!(f, "system"),
        }
    }
}

impl<V: GpuVm> fmt::Debug for PtDump<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (start, end) = *self.range.lock();
        if start == end {
            return write!(
                f,
                "write \"START LENGTH\" (bytes, 0x for hex) to choose a range"
            );
        }
        let total = (end - start) / PAGE_SIZE_4K;
        writeln!(f, "range {start:#x}-{end:#x} ({total} pages)")?;
        // Prints up to MAX_RUNS runs, then says once that there are more;
        // the count of mapped pages covers the whole range either way.
        let mut runs = 0;
        let mut emit = |f: &mut fmt::Formatter<'_>, r: Run| {
            runs += 1;
            match runs.cmp(&(MAX_RUNS + 1)) {
                Ordering::Less => r.print(f),
                Ordering::Equal => writeln!(f, "... (more than {MAX_RUNS} runs)"),
                Ordering::Greater => Ok(()),
            }
        };
        let (mut run, mut mapped): (Option<Run>, usize) = (None, 0);
        for va in (start..end).step_by(PAGE_SIZE_4K) {
            let Some(p) = self.vm.vm.lock().lookup(va) else {
                if let Some(r) = run.take() {
                    emit(f, r)?;
                }
                continue;
            };
            mapped += 1;
            match run.as_mut() {
                Some(r) if r.continues(va, &p) => r.pages += 1,
                _ => {
                    if let Some(r) = run.replace(Run::new(va, &p)) {
                        emit(f, r)?;
                    }
                }
            }
        }
        if let Some(r) = run {
            emit(f, r)?;
        }
        // The debugfs `Writer` of a `Debug` type ends the text with a
        // newline.
        write!(f, "mapped {mapped} of {total} pages")
    }
}

/// A number in decimal or, with `0x`, hexadecimal.
fn parse(s: &str) -> Result<usize> {
    let r = match s.strip_prefix("0x") {
        Some(hex) => usize::from_str_radix(hex, 16),
        None => s.parse(),
    };
    r.map_err(|_| EINVAL)
}

impl<V: GpuVm> Reader for PtDump<V> {
    /// "START LENGTH": the range to dump, widened to whole pages; `EINVAL`
    /// for anything else, a length of 0 or over [`MAX_RANGE`], or a range
    /// that wraps.
    fn read_from_slice(&self, reader: &mut UserSliceReader) -> Result {
        let mut buf = [0u8; 64];
        let n = reader.len();
        if n > buf.len() {
            return Err(EINVAL);
        }
        reader.read_slice(&mut buf[..n])?;
        let s = core::str::from_utf8(&buf[..n]).map_err(|_| EINVAL)?;
        let mut words = s.split_whitespace();
        let (Some(start), Some(len), None) = (words.next(), words.next(), words.next()) else {
            return Err(EINVAL);
        };
        let (start, len) = (parse(start)?, parse(len)?);
        if len == 0 || len > MAX_RANGE {
            return Err(EINVAL);
        }
        let end = start.checked_add(len).ok_or(EINVAL)?;
        let end = end.checked_next_multiple_of(PAGE_SIZE_4K).ok_or(EINVAL)?;
        *self.range.lock() = (start & !(PAGE_SIZE_4K - 1), end);
        Ok(())
    }
}
