// SPDX-License-Identifier: GPL-2.0

//! Device memory: the device-private pages of one GPU, their allocator,
//! migration to and from them, and eviction.
//!
//! The memory is split in 2 MiB chunks. A migration step (at most 2 MiB)
//! that selected pages reserves one chunk and takes from it either the
//! whole chunk as one 2 MiB device folio (a THP moves whole) or single
//! pages. A chunk's pages return one by one, or all at once, when the core
//! frees them ([`PagemapOps::free`]); a chunk is reusable whole once all
//! its pages are back.
//!
//! When no chunk has room, the step drops what it collected, the least
//! recently used chunk is evicted ([`Vram::reserve`]), and the step runs
//! again: never with its own pages locked. Eviction moves the chunk's
//! pages back to system memory with `migrate_device_range()`, wherever
//! they are mapped, without knowing the processes. The same runs for every
//! chunk when the device goes away ([`Drop`]), so device removal never
//! loses data; `memunmap_pages()` then waits for the last page.
//!
//! # Lock order
//!
//! 1. [`Vram::evict_lock`] (`"Vram::evict"`): one eviction at a time. Taken
//!    without `mmap_lock` and without any page locked by the caller.
//! 2. page locks, `mmap_lock` of the processes, `Mirror::vm` (through the
//!    invalidations an eviction raises).
//! 3. [`VramMem::alloc`] (`"Vram::alloc"`): the allocator, an irq-safe
//!    spinlock and a leaf; [`PagemapOps::free`] takes it from any context
//!    (the last `folio_put()` of a device page may run anywhere).

use core::{
    fmt,
    ptr::NonNull, //
};

use kernel::{
    bindings,
    mm::MmWithUser,
    new_mutex, new_spinlock_irq,
    prelude::*,
    sync::{
        atomic::{
            Atomic,
            Relaxed, //
        },
        Arc, Mutex, SpinLockIrq,
    },
};

use crate::{
    gpu::{
        memory::SoftMemory,
        CopyOp,
        DeviceMemory,
        MemPage,
        MAX_CHUNKS,
        PAGE_SIZE_2M,
        PAGE_SIZE_4K, //
    },
    mm::{
        migrate::{
            Collected,
            Direction,
            Migrate,
            MmapRead,
            MAX_PAGES, //
        },
        pagemap::{
            DeviceFault,
            NewDevicePage,
            Owner,
            Pagemap,
            PagemapOps,
            PagemapRef, //
        },
    },
    trace::{
        self,
        Cause, //
    },
};

/// Pages per chunk.
pub(crate) const CHUNK_PAGES: usize = PAGE_SIZE_2M / PAGE_SIZE_4K;
/// Order of a whole-chunk folio.
const CHUNK_ORDER: u32 = 9;
/// Eviction attempts before a reservation gives up.
const EVICT_TRIES: usize = 8;
/// Eviction passes over all chunks when the device goes away.
const TEARDOWN_PASSES: usize = 1000;

/// The allocation state of one chunk.
#[derive(Clone, Copy, Default)]
struct Chunk {
    /// One bit per page in use.
    bits: [u64; CHUNK_PAGES / 64],
    /// Pages in use.
    used: usize,
    /// Reserved by a migration step or being evicted: not handed out.
    busy: bool,
    /// Last use, for LRU eviction.
    stamp: u64,
}

impl Chunk {
    fn set(&mut self, first: usize, n: usize, on: bool) {
        for i in first..first + n {
            let (w, b) = (i / 64, 1u64 << (i % 64));
            if (self.bits[w] & b != 0) != on {
                self.bits[w] ^= b;
                if on {
                    self.used += 1;
                } else {
                    self.used -= 1;
                }
            }
        }
    }

    fn first_free(&self) -> Option<usize> {
        self.bits
            .iter()
            .enumerate()
            .find(|(_, w)| **w != u64::MAX)
            .map(|(i, w)| i * 64 + (!*w).trailing_zeros() as usize)
    }
}

/// The allocator.
struct Chunks {
    chunks: KVec<Chunk>,
    /// LRU clock.
    clock: u64,
}

impl Chunks {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }
}

/// Device-wide memory counters (`<debugfs>/nsvm/nsvm.<i>/vram`).
pub(crate) struct VramStats {
    /// Pages migrated to device memory.
    pub(crate) to_device: Atomic<u64>,
    /// Pages migrated back by CPU faults.
    pub(crate) cpu_faults: Atomic<u64>,
    /// Pages migrated back on request.
    pub(crate) to_system: Atomic<u64>,
    /// Chunks evicted.
    pub(crate) evictions: Atomic<u64>,
    /// Pages evicted.
    pub(crate) evicted: Atomic<u64>,
}

/// The pages' manager: what the pagemap's callbacks reach.
#[pin_data]
pub(crate) struct VramMem {
    /// See the lock order.
    #[pin]
    alloc: SpinLockIrq<Chunks>,
    /// The memory and its copy engine.
    mem: SoftMemory,
    /// The device's index.
    dev: u32,
    stats: VramStats,
}

impl VramMem {
    /// Copies the selected device pages of `m` to fresh system pages and
    /// migrates them; returns how many pages moved. With `split`, a 2 MiB
    /// folio for which no 2 MiB of system memory is free moves as 512
    /// pages (not for device-range migrations, which cannot split).
    fn to_system(&self, pm: PagemapRef<'_>, m: &mut Collected<'_>, split: bool) -> Result<usize> {
        let mut ops = KVec::with_capacity(m.len(), GFP_KERNEL)?;
        let mut i = 0;
        while i < m.len() {
            let s = m.src(i);
            let n = 1usize << s.order;
            let src = match s.page.and_then(|_| pm.index(s.pfn)) {
                Some(index) if s.migrate => index,
                _ => {
                    i += n;
                    continue;
                }
            };
            if let Some(dst) = m.alloc_dst(i, s.order, s.write) {
                for j in 0..n {
                    ops.push(
                        copy_op(Some(MemPage::Vram(src + j)), page_add(dst, j)),
                        GFP_KERNEL,
                    )?;
                }
            } else if s.order > 0 && split {
                for j in 0..n {
                    let dst = m.alloc_dst(i + j, 0, s.write).ok_or(ENOMEM)?;
                    ops.push(copy_op(Some(MemPage::Vram(src + j)), dst), GFP_KERNEL)?;
                }
            } else if s.order == 0 {
                return Err(ENOMEM);
            }
            i += n;
        }
        // SAFETY: The destinations are fresh pages the migration holds
        // locked, the sources device pages it holds locked, in populated
        // chunks (they were handed out).
        unsafe { self.mem.copy(&ops)? };
        m.migrate_pages();
        Ok(flagged(m))
    }

    /// Marks chunk `index / CHUNK_PAGES` used now.
    fn touch(&self, index: usize) {
        let mut a = self.alloc.lock();
        let stamp = a.tick();
        if let Some(c) = a.chunks.get_mut(index / CHUNK_PAGES) {
            c.stamp = stamp;
        }
    }
}

impl PagemapOps for VramMem {
    fn free(&self, index: usize, order: u32) {
        let mut a = self.alloc.lock();
        if let Some(c) = a.chunks.get_mut(index / CHUNK_PAGES) {
            c.set(index % CHUNK_PAGES, 1 << order, false);
        }
    }

    fn migrate_to_ram(&self, fault: &DeviceFault<'_>) -> Result {
        let mut mig = Migrate::new()?;
        let mut m = mig.setup_fault(fault)?;
        let n = self.to_system(fault.pagemap(), &mut m, true)?;
        add(&self.stats.cpu_faults, n);
        // The folio that came back: a page, or 2 MiB around the address.
        let size = (n.max(1) * PAGE_SIZE_4K).next_power_of_two();
        let start = fault.address() & !(size - 1);
        trace::migrate(
            self.dev,
            (start, start + size),
            false,
            Cause::CpuFault,
            n as u64,
            0,
        );
        Ok(())
    }
}

/// A [`CopyOp`] from `src` to system page `dst`.
fn copy_op(src: Option<MemPage>, dst: NonNull<bindings::page>) -> CopyOp {
    CopyOp {
        src,
        dst: MemPage::System(dst),
    }
}

/// Page `j` of the folio whose head is `head`.
fn page_add(head: NonNull<bindings::page>, j: usize) -> NonNull<bindings::page> {
    // The struct pages of a folio are contiguous (SPARSEMEM_VMEMMAP).
    head.map_addr(|a| a.saturating_add(j * size_of::<bindings::page>()))
}

/// Pages of `m` whose entry has the migrate flag: selected before
/// `migrate_pages()`, migrated after.
fn flagged(m: &Collected<'_>) -> usize {
    let mut n = 0;
    let mut i = 0;
    while i < m.len() {
        let s = m.src(i);
        if s.migrate {
            n += 1 << s.order;
        }
        i += 1 << s.order;
    }
    n
}

fn add(c: &Atomic<u64>, n: usize) {
    c.fetch_add(n as u64, Relaxed);
}

/// What a migration did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Moved {
    /// Pages moved.
    pub(crate) migrated: u64,
    /// Pages selected that did not move (not anonymous, busy, pinned, no
    /// free memory).
    pub(crate) failed: u64,
}

/// The device memory of one GPU.
#[pin_data(PinnedDrop)]
pub(crate) struct Vram {
    /// The device pages; dropped (waiting for the last one) after
    /// [`PinnedDrop`] evicted everything.
    pagemap: Pagemap<VramMem>,
    /// See the lock order.
    #[pin]
    evict_lock: Mutex<()>,
    size: usize,
}

impl Vram {
    /// Memory of device `dev` (its index, for tracepoints) of `size`
    /// bytes (a multiple of 2 MiB), copied with `channels` copy channels
    /// (`1..=gpu::copy::MAX_CHANNELS`).
    pub(crate) fn new(dev: u32, size: usize, channels: u32) -> Result<Arc<Self>> {
        let nchunks = size / PAGE_SIZE_2M;
        if nchunks == 0 || nchunks > MAX_CHUNKS || size % PAGE_SIZE_2M != 0 {
            return Err(EINVAL);
        }
        let mut chunks = KVec::with_capacity(nchunks, GFP_KERNEL)?;
        for _ in 0..nchunks {
            chunks.push(Chunk::default(), GFP_KERNEL)?;
        }
        let mem = Arc::pin_init(
            try_pin_init!(VramMem {
                alloc <- new_spinlock_irq!(Chunks { chunks, clock: 0 }, "Vram::alloc"),
                mem: SoftMemory::new(nchunks, channels)?,
                dev,
                stats: VramStats {
                    to_device: Atomic::new(0),
                    cpu_faults: Atomic::new(0),
                    to_system: Atomic::new(0),
                    evictions: Atomic::new(0),
                    evicted: Atomic::new(0),
                },
            }),
            GFP_KERNEL,
        )?;
        let pagemap = Pagemap::new(size, mem)?;
        Arc::pin_init(
            try_pin_init!(Self {
                pagemap,
                evict_lock <- new_mutex!((), "Vram::evict"),
                size,
            }),
            GFP_KERNEL,
        )
    }

    fn mem(&self) -> &VramMem {
        self.pagemap.data()
    }

    /// Size in bytes.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// The owner of the device pages.
    pub(crate) fn owner(&self) -> Owner {
        self.pagemap.get().owner()
    }

    /// The index of the page at `pfn` if it is one of this device's pages.
    pub(crate) fn index(&self, pfn: usize) -> Option<usize> {
        self.pagemap.get().index(pfn)
    }

    /// The memory, for the GPU's accesses.
    pub(crate) fn memory(&self) -> &SoftMemory {
        &self.mem().mem
    }

    /// Records a GPU use of device page `index`, for LRU eviction.
    pub(crate) fn touch(&self, index: usize) {
        self.mem().touch(index);
    }

    /// Reserves a chunk for a migration step of `npages` pages: a free
    /// chunk for a whole 2 MiB step, else one with room for `npages`,
    /// evicting the least recently used chunk when none has. `ENOSPC` when
    /// nothing can be evicted; a chunk with less room is returned as a
    /// last resort. Call with no page locked and without `mmap_lock`.
    fn reserve(&self, npages: usize) -> Result<Reserved<'_>> {
        for _ in 0..EVICT_TRIES {
            if let Some(chunk) = self.pick(npages, false) {
                return self.reserved(chunk);
            }
            if !self.evict_one()? {
                break;
            }
        }
        match self.pick(1, true) {
            Some(chunk) => self.reserved(chunk),
            None => Err(ENOSPC),
        }
    }

    /// Marks a chunk with room for `npages` busy: the fullest one that
    /// fits (any with room, with `any`), a free one for 2 MiB.
    fn pick(&self, npages: usize, any: bool) -> Option<usize> {
        let mut a = self.mem().alloc.lock();
        let room = |c: &Chunk| !c.busy && CHUNK_PAGES - c.used >= npages;
        let best = if npages >= CHUNK_PAGES && !any {
            a.chunks.iter().position(&room)
        } else {
            a.chunks
                .iter()
                .enumerate()
                .filter(|(_, c)| room(c) && (any || c.used > 0))
                .max_by_key(|(_, c)| c.used)
                .map(|(i, _)| i)
                .or_else(|| a.chunks.iter().position(room))
        }?;
        let stamp = a.tick();
        let c = &mut a.chunks[best];
        c.busy = true;
        c.stamp = stamp;
        Some(best)
    }

    fn reserved(&self, chunk: usize) -> Result<Reserved<'_>> {
        let res = Reserved { vram: self, chunk };
        self.memory().populate(chunk)?;
        Ok(res)
    }

    /// Evicts the least recently used chunk that has pages in use; `false`
    /// if there is none.
    fn evict_one(&self) -> Result<bool> {
        let _guard = self.evict_lock.lock();
        let victim = {
            let mut a = self.mem().alloc.lock();
            let victim = a
                .chunks
                .iter()
                .enumerate()
                .filter(|(_, c)| !c.busy && c.used > 0)
                .min_by_key(|(_, c)| c.stamp)
                .map(|(i, _)| i);
            if let Some(v) = victim {
                a.chunks[v].busy = true;
            }
            victim
        };
        let Some(chunk) = victim else {
            return Ok(false);
        };
        let res = self.evict(chunk);
        trace::evict(self.mem().dev, chunk, &res);
        self.mem().alloc.lock().chunks[chunk].busy = false;
        res.map(|n| {
            add(&self.mem().stats.evictions, 1);
            add(&self.mem().stats.evicted, n);
            true
        })
    }

    /// Migrates the pages of `chunk` back to system memory; returns how
    /// many moved.
    fn evict(&self, chunk: usize) -> Result<usize> {
        let mut mig = Migrate::new()?;
        let mut m = mig.setup_device(self.pagemap.get(), chunk * CHUNK_PAGES, CHUNK_PAGES)?;
        self.mem().to_system(self.pagemap.get(), &mut m, false)
    }

    /// Migrates `[start, end)` of `mm` (page aligned) to this device
    /// (`dir` = [`Direction::ToDevice`]) or back to system memory. Holes and
    /// VMAs that cannot migrate are skipped; pages already where they
    /// should be are not counted. `EINTR` if a signal is pending (what
    /// moved stays moved); `EINVAL` for an unaligned or reversed range.
    pub(crate) fn migrate(
        &self,
        mm: &MmWithUser,
        start: usize,
        end: usize,
        dir: Direction,
    ) -> Result<Moved> {
        if start % PAGE_SIZE_4K != 0 || end % PAGE_SIZE_4K != 0 || start > end {
            return Err(EINVAL);
        }
        let mut mig = Migrate::new()?;
        let mut moved = Moved::default();
        let mut addr = start;
        // The chunk for the step, once one was needed; and whether making
        // room failed (the step then counts its pages as failed).
        let mut res: Option<Reserved<'_>> = None;
        let mut starved = false;
        while addr < end {
            if kernel::current!().signal_pending() {
                return Err(EINTR);
            }
            // The rest of `addr`'s 2 MiB block: `end` (aligned) bounds it
            // where the block's end would not fit.
            let block_end = (addr & !(PAGE_SIZE_2M - 1)).saturating_add(PAGE_SIZE_2M);
            let step = (block_end.min(end) - addr) / PAGE_SIZE_4K;
            let (next, evict) = {
                let lock = MmapRead::lock(mm)?;
                let (next, collected) = mig.setup(&lock, addr, end, self.owner(), dir)?;
                let mut evict = false;
                if let Some(mut m) = collected {
                    let selected = flagged(&m);
                    let n = match dir {
                        Direction::ToSystem => {
                            self.mem().to_system(self.pagemap.get(), &mut m, true)?
                        }
                        Direction::ToDevice if selected == 0 || starved => 0,
                        Direction::ToDevice => {
                            // A chunk with room, without evicting: evicting
                            // under the collected pages' locks and mmap_lock
                            // is avoided (see the lock order).
                            if res.is_none() {
                                res = self
                                    .pick(step, false)
                                    .map(|c| self.reserved(c))
                                    .transpose()?;
                            }
                            match res.as_mut() {
                                Some(r) => self.to_device(r, &mut m)?,
                                None => {
                                    evict = true;
                                    0
                                }
                            }
                        }
                    };
                    if !evict {
                        moved.migrated += n as u64;
                        moved.failed += (selected - n) as u64;
                    }
                    // Dropping `m` finalizes: what did not move is restored.
                }
                (next, evict)
            };
            if evict {
                // Make room with no lock held, then redo the step.
                match self.reserve(step) {
                    Ok(r) => res = Some(r),
                    Err(e) if e == ENOSPC => starved = true,
                    Err(e) => return Err(e),
                }
                continue;
            }
            res = None;
            starved = false;
            // OVERFLOW: `addr < end`, both page aligned.
            addr = next.max(addr + PAGE_SIZE_4K);
        }
        let c = match dir {
            Direction::ToDevice => &self.mem().stats.to_device,
            Direction::ToSystem => &self.mem().stats.to_system,
        };
        add(c, moved.migrated as usize);
        trace::migrate(
            self.mem().dev,
            (start, end),
            dir == Direction::ToDevice,
            Cause::Request,
            moved.migrated,
            moved.failed,
        );
        Ok(moved)
    }

    /// Gives the selected system pages of `m` device pages from `res`,
    /// copies them over and migrates; returns how many pages moved.
    fn to_device(&self, res: &mut Reserved<'_>, m: &mut Collected<'_>) -> Result<usize> {
        let mut ops = KVec::with_capacity(m.len(), GFP_KERNEL)?;
        let src_page =
            |p: Option<NonNull<bindings::page>>, j| p.map(|p| MemPage::System(page_add(p, j)));
        let mut i = 0;
        while i < m.len() {
            let s = m.src(i);
            let n = 1usize << s.order;
            let whole = if s.migrate && n > 1 {
                res.take(n)
            } else {
                None
            };
            if s.migrate {
                if let Some((index, page)) = whole {
                    m.set_dst(i, page, s.write);
                    for j in 0..n {
                        ops.push(vram_op(src_page(s.page, j), index + j), GFP_KERNEL)?;
                    }
                } else {
                    // One page per entry; for a folio, the core splits it.
                    for j in 0..n {
                        let Some((index, page)) = res.take(1) else {
                            break;
                        };
                        m.set_dst(i + j, page, s.write);
                        ops.push(vram_op(src_page(s.page, j), index), GFP_KERNEL)?;
                    }
                }
            }
            i += n;
        }
        // SAFETY: The sources are pages the migration holds locked (or
        // none: zeroes), the destinations device pages it holds, in the
        // populated reserved chunk.
        unsafe { self.memory().copy(&ops)? };
        m.migrate_pages();
        Ok(flagged(m))
    }
}

/// A [`CopyOp`] from `src` to device page `index`.
fn vram_op(src: Option<MemPage>, index: usize) -> CopyOp {
    CopyOp {
        src,
        dst: MemPage::Vram(index),
    }
}

impl Vram {
    /// Moves every device page back to system memory, with its data: the
    /// device's removal, and its teardown. A page can be busy for a moment
    /// (a fault or a migration holds its lock): retried for
    /// [`TEARDOWN_PASSES`] passes, after which the log says how many pages
    /// are still in device memory. Nothing must migrate to the device
    /// meanwhile.
    pub(crate) fn evacuate(&self) {
        for _ in 0..TEARDOWN_PASSES {
            let used: KVec<usize> = {
                let a = self.mem().alloc.lock();
                let mut v = KVec::new();
                for (i, c) in a.chunks.iter().enumerate() {
                    if c.used > 0 && v.push(i, GFP_ATOMIC).is_err() {
                        break;
                    }
                }
                v
            };
            if used.is_empty() {
                return;
            }
            for chunk in used {
                let _ = self.evict(chunk);
            }
            kernel::time::delay::fsleep(kernel::time::Delta::from_micros(1000));
        }
        // Something keeps device pages (a pin, a page held in a migration
        // that does not end): memunmap_pages() now waits for it, and the
        // log says why the removal hangs.
        let pages: usize = self.mem().alloc.lock().chunks.iter().map(|c| c.used).sum();
        pr_warn!(
            "nsvm.{}: {pages} device pages still in use after {TEARDOWN_PASSES} eviction passes\n",
            self.mem().dev
        );
    }
}

#[pinned_drop]
impl PinnedDrop for Vram {
    fn drop(self: Pin<&mut Self>) {
        // Everything goes back to system memory before the pagemap waits
        // for its last page (memunmap_pages(): what `evacuate()` could not
        // move, it waits for).
        self.evacuate();
    }
}

/// A chunk reserved for one migration step.
struct Reserved<'a> {
    vram: &'a Vram,
    chunk: usize,
}

impl Reserved<'_> {
    /// Takes `n` (1 or [`CHUNK_PAGES`]) free pages of the chunk as one
    /// device folio: its index and the page.
    fn take(&mut self, n: usize) -> Option<(usize, NewDevicePage)> {
        let first = {
            let mut a = self.vram.mem().alloc.lock();
            let c = &mut a.chunks[self.chunk];
            let first = match n {
                1 => c.first_free()?,
                CHUNK_PAGES if c.used == 0 => 0,
                _ => return None,
            };
            c.set(first, n, true);
            first
        };
        let index = self.chunk * CHUNK_PAGES + first;
        let order = if n > 1 { CHUNK_ORDER } else { 0 };
        // SAFETY: The pages were free (their bits clear) and are now ours;
        // `index` is aligned to `n` and in the pagemap.
        let page = unsafe { self.vram.pagemap.get().page_init(index, order) };
        Some((index, page))
    }
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        self.vram.mem().alloc.lock().chunks[self.chunk].busy = false;
    }
}

impl fmt::Debug for Vram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (used, busy, total) = {
            let a = self.mem().alloc.lock();
            (
                a.chunks.iter().map(|c| c.used).sum::<usize>(),
                a.chunks.iter().filter(|c| c.busy).count(),
                a.chunks.len(),
            )
        };
        let s = &self.mem().stats;
        writeln!(f, "size: {}", self.size)?;
        writeln!(f, "chunks: {total}")?;
        writeln!(f, "busy_chunks: {busy}")?;
        writeln!(f, "pages_used: {used}")?;
        writeln!(f, "migrated_to_device: {}", s.to_device.load(Relaxed))?;
        writeln!(f, "migrated_to_system: {}", s.to_system.load(Relaxed))?;
        writeln!(f, "cpu_fault_pages: {}", s.cpu_faults.load(Relaxed))?;
        writeln!(f, "evictions: {}", s.evictions.load(Relaxed))?;
        write!(f, "evicted_pages: {}", s.evicted.load(Relaxed))
    }
}

// A migration step is one chunk.
const _: () = assert!(MAX_PAGES == CHUNK_PAGES);

#[kunit_tests(nsvm_vram)]
mod tests {
    use super::*;

    #[test]
    fn chunk_bits() -> Result {
        let mut c = Chunk::default();
        assert_eq!(c.first_free(), Some(0));
        c.set(0, CHUNK_PAGES, true);
        assert_eq!(c.used, CHUNK_PAGES);
        assert_eq!(c.first_free(), None);
        // A split 2 MiB folio comes back page by page.
        c.set(70, 1, false);
        assert_eq!(c.first_free(), Some(70));
        c.set(70, 1, false);
        assert_eq!(c.used, CHUNK_PAGES - 1);
        c.set(0, CHUNK_PAGES, false);
        assert_eq!(c.used, 0);
        c.set(511, 1, true);
        assert_eq!(c.first_free(), Some(0));
        assert_eq!(c.used, 1);
        Ok(())
    }

    #[test]
    fn sizes() {
        assert_eq!(Vram::new(0, 0, 1).err(), Some(EINVAL));
        assert_eq!(
            Vram::new(0, PAGE_SIZE_2M + PAGE_SIZE_4K, 1).err(),
            Some(EINVAL)
        );
        assert_eq!(
            Vram::new(0, (MAX_CHUNKS + 1) * PAGE_SIZE_2M, 1).err(),
            Some(EINVAL)
        );
    }
}
