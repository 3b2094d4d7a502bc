// SPDX-License-Identifier: GPL-2.0

//! Device memory: the device-private pages of one GPU, their allocator,
//! migration to and from them, and eviction.
//!
//! The pages come from the kernel's GPU buddy allocator
//! ([`kernel::gpu::buddy`]): a 2 MiB block for a THP, which moves whole,
//! and a 4 KiB block for every other page. The buddy splits blocks for
//! small pages from the partly used 2 MiB ranges first and merges freed
//! buddies again, so small pages do not take the 2 MiB blocks THPs need.
//!
//! The memory is also split in 2 MiB chunks, the units the rest of the
//! device knows: the backing of the soft device ([`DeviceMemory::populate`]),
//! LRU eviction and the tracepoints. A chunk counts its pages in use and
//! when the GPU last used one.
//!
//! The core frees device pages from any context ([`PagemapOps::free`]),
//! where the buddy, which sleeps, cannot be reached: the free is recorded
//! in the chunk and queued, and the queue is returned to the buddy the next
//! time the allocator runs ([`VramMem::reclaim`]), in process context.
//!
//! When the buddy has no room for a migration step, the step drops what it
//! collected, the least recently used chunk is evicted
//! ([`Vram::evict_one`]), and the step runs again: never with its own pages
//! locked. After [`EVICT_TRIES`] evictions the step takes what the buddy
//! still has (a THP then moves as single pages) and leaves the rest.
//! Eviction moves the chunk's pages back to system memory with
//! `migrate_device_range()`, wherever they are mapped, without knowing the
//! processes. The same runs for every chunk when the device goes away
//! ([`Drop`]), so device removal never loses data; `memunmap_pages()` then
//! waits for the last page.
//!
//! # Lock order
//!
//! 1. [`Vram::evict_lock`] (`"Vram::evict"`): one eviction at a time. Taken
//!    without `mmap_lock` and without any page locked by the caller.
//! 2. page locks, `mmap_lock` of the processes, `Mirror::vm` (through the
//!    invalidations an eviction raises).
//! 3. [`VramMem::blocks`] (`"Vram::blocks"`): the blocks handed out, and
//!    below it the buddy allocator's own mutex.
//! 4. [`VramMem::alloc`] (`"Vram::alloc"`): the chunks and the queue of
//!    freed blocks, an irq-safe spinlock and a leaf; [`PagemapOps::free`]
//!    takes it from any context (the last `folio_put()` of a device page
//!    may run anywhere).

use core::{
    fmt,
    pin::Pin,
    ptr::NonNull, //
};

use kernel::{
    bindings,
    gpu::buddy::{
        AllocatedBlocks,
        GpuBuddy,
        GpuBuddyAllocFlags,
        GpuBuddyAllocMode,
        GpuBuddyParams, //
    },
    mm::MmWithUser,
    new_mutex, new_spinlock_irq,
    prelude::*,
    ptr::Alignment,
    sizes::{
        SZ_2M,
        SZ_4K, //
    },
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
/// Evictions for one migration step before it takes what there is.
const EVICT_TRIES: usize = 8;
/// Eviction passes over all chunks when the device goes away.
const TEARDOWN_PASSES: usize = 1000;
/// Freed blocks returned to the buddy per hold of [`VramMem::alloc`].
const RECLAIM_BATCH: usize = 64;

/// The state of one chunk.
#[derive(Clone, Copy, Default)]
struct Chunk {
    /// Pages handed out and not yet freed.
    used: usize,
    /// The chunk is one 2 MiB block: it goes back to the buddy whole, when
    /// its last page is freed (a split folio frees page by page).
    whole: bool,
    /// Last use, for LRU eviction.
    stamp: u64,
}

/// The chunks and the freed blocks not yet back in the buddy.
///
/// # Invariants
///
/// `pending` has room for every page (a page is queued at most once, until
/// [`VramMem::reclaim`] takes it), so a free never allocates.
struct Chunks {
    chunks: KVec<Chunk>,
    /// First page indices of freed blocks, for [`VramMem::reclaim`].
    pending: KVVec<u32>,
    /// LRU clock.
    clock: u64,
}

impl Chunks {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Records `n` pages from `index` handed out (one block).
    fn take(&mut self, index: usize, n: usize) {
        let stamp = self.tick();
        let c = &mut self.chunks[index / CHUNK_PAGES];
        c.used += n;
        c.whole = n == CHUNK_PAGES;
        c.stamp = stamp;
    }

    /// Records `n` pages from `index` freed; queues the block they belong
    /// to when it is free as a whole.
    fn free(&mut self, index: usize, n: usize) {
        let Some(c) = self.chunks.get_mut(index / CHUNK_PAGES) else {
            return;
        };
        c.used = c.used.saturating_sub(n);
        let block = match c.whole {
            true if c.used > 0 => return,
            true => {
                c.whole = false;
                index - index % CHUNK_PAGES
            }
            false => index,
        };
        // Room for every page (type invariants); the index fits as the
        // pagemap has at most `MAX_CHUNKS * CHUNK_PAGES` pages.
        let _ = self.pending.push_within_capacity(block as u32);
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

/// The blocks handed out, by the index of their first page.
struct Blocks {
    buddy: GpuBuddy,
    by_index: KVVec<Option<Pin<KBox<AllocatedBlocks>>>>,
}

/// The pages' manager: what the pagemap's callbacks reach.
#[pin_data]
pub(crate) struct VramMem {
    /// See the lock order.
    #[pin]
    blocks: Mutex<Blocks>,
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

    /// Returns the blocks freed since the last call to the buddy.
    fn reclaim(&self, blocks: &mut Blocks) {
        loop {
            let mut batch = [0u32; RECLAIM_BATCH];
            let n = {
                let mut a = self.alloc.lock();
                let from = a.pending.len().saturating_sub(RECLAIM_BATCH);
                let n = a.pending.len() - from;
                batch[..n].copy_from_slice(&a.pending[from..]);
                a.pending.truncate(from);
                n
            };
            if n == 0 {
                return;
            }
            for &index in &batch[..n] {
                // Dropping the blocks gives them back (not under `alloc`:
                // the buddy's mutex sleeps).
                if let Some(slot) = blocks.by_index.get_mut(index as usize) {
                    *slot = None;
                }
            }
        }
    }

    /// The runs of blocks handed out in `chunk`, as (first page, pages).
    /// A snapshot: blocks may be freed or handed out meanwhile.
    fn runs(&self, chunk: usize) -> Result<KVec<(usize, usize)>> {
        let mut blocks = self.blocks.lock();
        self.reclaim(&mut blocks);
        let mut runs: KVec<(usize, usize)> = KVec::new();
        let end = (chunk + 1) * CHUNK_PAGES;
        let mut i = chunk * CHUNK_PAGES;
        while i < end {
            let Some(b) = blocks.by_index.get(i).and_then(|b| b.as_ref()) else {
                i += 1;
                continue;
            };
            let len = b
                .iter()
                .map(|b| b.size() as usize / PAGE_SIZE_4K)
                .sum::<usize>()
                .max(1);
            match runs.last_mut() {
                Some(r) if r.0 + r.1 == i => r.1 += len,
                _ => runs.push((i, len), GFP_KERNEL)?,
            }
            i += len;
        }
        Ok(runs)
    }

    /// Takes a block of `1 << order` pages (0 or [`CHUNK_ORDER`]) from the
    /// buddy and hands it out as one device folio: its index and the page.
    /// `ENOSPC` if the buddy has no such block free.
    fn take(
        &self,
        pm: PagemapRef<'_>,
        blocks: &mut Blocks,
        order: u32,
    ) -> Result<(usize, NewDevicePage)> {
        let size = match order {
            0 => SZ_4K,
            CHUNK_ORDER => SZ_2M,
            _ => return Err(EINVAL),
        };
        let allocated = alloc_block(&blocks.buddy, size)?;
        // One block: the size is the minimum block size.
        let offset = allocated.iter().next().ok_or(EINVAL)?.offset();
        let index = (offset / PAGE_SIZE_4K as u64) as usize;
        let slot = blocks.by_index.get_mut(index).ok_or(EINVAL)?;
        if slot.is_some() {
            // The buddy handed out a block it had handed out before.
            return Err(EINVAL);
        }
        self.mem.populate(index / CHUNK_PAGES)?;
        *slot = Some(allocated);
        self.alloc.lock().take(index, 1 << order);
        // SAFETY: The buddy handed the block out just now, so none of its
        // pages is in use (a freed page is only given back to the buddy by
        // `reclaim()`, after `PagemapOps::free`); `index` is aligned to the
        // block's size, and the block lies in the buddy's range, the
        // pagemap's.
        let page = unsafe { pm.page_init(index, order) };
        Ok((index, page))
    }

    /// Takes `n` single pages into `out`, in ascending index order: the
    /// buddy splits them off one free block where it can, so a run of
    /// pages is mostly a run of device pages (a GPU maps such a run with
    /// larger pages). `ENOSPC` once the buddy has no page left; the pages
    /// taken until then are in `out`.
    fn take_pages(
        &self,
        pm: PagemapRef<'_>,
        blocks: &mut Blocks,
        n: usize,
        out: &mut KVec<(usize, NewDevicePage)>,
    ) -> Result {
        let first = out.len();
        let mut res = Ok(());
        for _ in 0..n {
            match self.take(pm, blocks, 0) {
                Ok(p) => out.push(p, GFP_KERNEL)?,
                Err(e) => {
                    res = Err(e);
                    break;
                }
            }
        }
        out[first..].sort_unstable_by_key(|&(index, _)| index);
        res
    }
}

impl PagemapOps for VramMem {
    fn free(&self, index: usize, order: u32) {
        self.alloc.lock().free(index, 1 << order);
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

/// One block of `size` bytes (a power of two) from `buddy`, aligned to its
/// size; `ENOSPC` if the buddy has none free.
fn alloc_block(buddy: &GpuBuddy, size: usize) -> Result<Pin<KBox<AllocatedBlocks>>> {
    let align = Alignment::new_checked(size).ok_or(EINVAL)?;
    KBox::pin_init(
        buddy.alloc_blocks(
            GpuBuddyAllocMode::Simple,
            size as u64,
            align,
            GpuBuddyAllocFlags::default(),
        ),
        GFP_KERNEL,
    )
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
    /// Pages selected that did not move (not anonymous, no free memory).
    /// Busy pages are never selected: `migrate_vma_setup()` drops them.
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
        let npages = nchunks * CHUNK_PAGES;
        let mut chunks = KVec::with_capacity(nchunks, GFP_KERNEL)?;
        for _ in 0..nchunks {
            chunks.push(Chunk::default(), GFP_KERNEL)?;
        }
        let mut by_index = KVVec::with_capacity(npages, GFP_KERNEL)?;
        for _ in 0..npages {
            by_index.push(None, GFP_KERNEL)?;
        }
        let buddy = GpuBuddy::new(GpuBuddyParams {
            base_offset: 0,
            size: size as u64,
            chunk_size: Alignment::new::<SZ_4K>(),
        })?;
        // INVARIANT: Room for every page.
        let pending = KVVec::with_capacity(npages, GFP_KERNEL)?;
        let mem = Arc::pin_init(
            try_pin_init!(VramMem {
                blocks <- new_mutex!(Blocks { buddy, by_index }, "Vram::blocks"),
                alloc <- new_spinlock_irq!(
                    Chunks {
                        chunks,
                        pending,
                        clock: 0
                    },
                    "Vram::alloc"
                ),
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

    /// Evicts the least recently used chunk that has pages in use; `false`
    /// if there is none.
    fn evict_one(&self) -> Result<bool> {
        let _guard = self.evict_lock.lock();
        // One eviction at a time (`evict_lock`): no other picks a victim
        // meanwhile.
        let victim = self
            .mem()
            .alloc
            .lock()
            .chunks
            .iter()
            .enumerate()
            .filter(|(_, c)| c.used > 0)
            .min_by_key(|(_, c)| c.stamp)
            .map(|(i, _)| i);
        let Some(chunk) = victim else {
            return Ok(false);
        };
        let res = self.evict(chunk);
        trace::evict(self.mem().dev, chunk, &res);
        {
            // Pages it kept (a migration holds them) do not make it the
            // next victim at once.
            let mut a = self.mem().alloc.lock();
            let stamp = a.tick();
            a.chunks[chunk].stamp = stamp;
        }
        res.map(|n| {
            add(&self.mem().stats.evictions, 1);
            add(&self.mem().stats.evicted, n);
            true
        })
    }

    /// Migrates the pages of `chunk` back to system memory; returns how
    /// many moved.
    ///
    /// Only the runs of blocks handed out are walked: a free page that was
    /// the head of a 2 MiB folio still says so until it is handed out
    /// again, and `migrate_device_range()` started there would skip the
    /// 511 pages behind it, which may be in use as single pages.
    fn evict(&self, chunk: usize) -> Result<usize> {
        let runs = self.mem().runs(chunk)?;
        let mut mig = Migrate::new()?;
        let mut n = 0;
        for &(start, len) in &runs {
            let mut m = mig.setup_device(self.pagemap.get(), start, len)?;
            n += self.mem().to_system(self.pagemap.get(), &mut m, false)?;
        }
        Ok(n)
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
        // Evictions for the current step.
        let mut evicted = 0;
        while addr < end {
            if kernel::current!().signal_pending() {
                return Err(EINTR);
            }
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
                        Direction::ToDevice if selected == 0 => 0,
                        Direction::ToDevice => {
                            // Without evicting: evicting under the
                            // collected pages' locks and mmap_lock is
                            // avoided (see the lock order).
                            let last = evicted >= EVICT_TRIES;
                            match self.to_device(&mut m, last) {
                                Err(e) if e == ENOSPC && !last => {
                                    evict = true;
                                    0
                                }
                                r => r?,
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
                // Make room with no lock held, then redo the step; with
                // nothing left to evict, the step takes what there is.
                evicted = match self.evict_one()? {
                    true => evicted + 1,
                    false => EVICT_TRIES,
                };
                continue;
            }
            evicted = 0;
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

    /// Gives the selected system pages of `m` device pages, copies them
    /// over and migrates; returns how many pages moved. A THP takes a
    /// 2 MiB block, other pages 4 KiB blocks. `ENOSPC` when the buddy has
    /// not enough free, unless `last`: then what has no room stays behind
    /// (a THP without a 2 MiB block moves as single pages, which the core
    /// splits it into).
    fn to_device(&self, m: &mut Collected<'_>, last: bool) -> Result<usize> {
        let pm = self.pagemap.get();
        let mut taken = KVec::with_capacity(m.len(), GFP_KERNEL)?;
        {
            let mut blocks = self.mem().blocks.lock();
            self.mem().reclaim(&mut blocks);
            let mut i = 0;
            let mut pages = KVec::with_capacity(CHUNK_PAGES, GFP_KERNEL)?;
            while i < m.len() {
                let s = m.src(i);
                let n = 1usize << s.order;
                if !s.migrate {
                    i += n;
                    continue;
                }
                if n > 1 {
                    match self.mem().take(pm, &mut blocks, CHUNK_ORDER) {
                        Ok((index, page)) => {
                            taken.push((i, 0, n, index, page), GFP_KERNEL)?;
                            i += n;
                            continue;
                        }
                        Err(e) if e == ENOSPC && last => {}
                        Err(e) => return Err(e),
                    }
                }
                // A run of single pages: the pages of a folio without a
                // 2 MiB block, or selected entries of one page each.
                let (run, pages_of) = match n {
                    1 => {
                        let mut end = i + 1;
                        while end < m.len() && {
                            let t = m.src(end);
                            t.migrate && t.order == 0
                        } {
                            end += 1;
                        }
                        (end - i, None)
                    }
                    _ => (n, Some(i)),
                };
                let res = self.mem().take_pages(pm, &mut blocks, run, &mut pages);
                for (k, (index, page)) in pages.drain_all().enumerate() {
                    let entry = match pages_of {
                        Some(head) => (head, k),
                        None => (i + k, 0),
                    };
                    taken.push((entry.0, entry.1, 1, index, page), GFP_KERNEL)?;
                }
                match res {
                    Ok(()) => i += run,
                    Err(e) if e == ENOSPC && last => break,
                    Err(e) => return Err(e),
                }
            }
        }
        let mut ops = KVec::with_capacity(m.len(), GFP_KERNEL)?;
        // Entry `i`'s folio from its page `j`, as `n` pages: the whole
        // folio, or one page of it (the core splits a folio it migrates as
        // single pages).
        for (i, j, n, index, page) in taken {
            let s = m.src(i);
            m.set_dst(i + j, page, s.write);
            for k in 0..n {
                let src = s.page.map(|p| MemPage::System(page_add(p, j + k)));
                ops.push(vram_op(src, index + k), GFP_KERNEL)?;
            }
        }
        // SAFETY: The sources are pages the migration holds locked (or
        // none: zeroes), the destinations device pages it holds, in
        // populated chunks (`take()` populated them).
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
                self.mem().reclaim(&mut self.mem().blocks.lock());
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

impl fmt::Debug for Vram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let free = {
            let mut blocks = self.mem().blocks.lock();
            self.mem().reclaim(&mut blocks);
            blocks.buddy.avail()
        };
        let (used, whole, total) = {
            let a = self.mem().alloc.lock();
            (
                a.chunks.iter().map(|c| c.used).sum::<usize>(),
                a.chunks.iter().filter(|c| c.whole).count(),
                a.chunks.len(),
            )
        };
        let s = &self.mem().stats;
        writeln!(f, "size: {}", self.size)?;
        writeln!(f, "chunks: {total}")?;
        writeln!(f, "whole_chunks: {whole}")?;
        writeln!(f, "pages_used: {used}")?;
        writeln!(f, "buddy_free: {free}")?;
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

    fn chunks(n: usize) -> Result<Chunks> {
        let mut chunks = KVec::new();
        for _ in 0..n {
            chunks.push(Chunk::default(), GFP_KERNEL)?;
        }
        Ok(Chunks {
            chunks,
            pending: KVVec::with_capacity(n * CHUNK_PAGES, GFP_KERNEL)?,
            clock: 0,
        })
    }

    /// A 2 MiB block goes back whole once its last page is freed, also
    /// page by page after a split; 4 KiB blocks go back one by one.
    #[test]
    fn chunk_frees() -> Result {
        let mut c = chunks(2)?;
        c.take(0, CHUNK_PAGES);
        assert!(c.chunks[0].whole);
        c.free(70, 1);
        c.free(0, 1);
        assert_eq!(c.chunks[0].used, CHUNK_PAGES - 2);
        assert!(c.pending.is_empty());
        for i in (1..CHUNK_PAGES).filter(|&i| i != 70) {
            c.free(i, 1);
        }
        assert_eq!(c.chunks[0].used, 0);
        assert_eq!(&c.pending[..], &[0]);
        c.take(CHUNK_PAGES + 3, 1);
        c.take(CHUNK_PAGES + 4, 1);
        assert!(!c.chunks[1].whole);
        c.free(CHUNK_PAGES + 4, 1);
        c.free(CHUNK_PAGES + 3, 1);
        assert_eq!(
            &c.pending[..],
            &[0, CHUNK_PAGES as u32 + 4, CHUNK_PAGES as u32 + 3]
        );
        // A whole folio freed at once.
        c.take(0, CHUNK_PAGES);
        c.free(0, CHUNK_PAGES);
        assert_eq!(c.pending.len(), 4);
        Ok(())
    }

    /// The buddy keeps 2 MiB blocks for THPs: 4 KiB blocks come from one
    /// split 2 MiB block before another is split.
    #[test]
    fn buddy_clusters_small_blocks() -> Result {
        let buddy = GpuBuddy::new(GpuBuddyParams {
            base_offset: 0,
            size: 4 * SZ_2M as u64,
            chunk_size: Alignment::new::<SZ_4K>(),
        })?;
        let mut small = KVec::new();
        for _ in 0..CHUNK_PAGES {
            small.push(alloc_block(&buddy, SZ_4K)?, GFP_KERNEL)?;
        }
        let chunk_of =
            |b: &Pin<KBox<AllocatedBlocks>>| b.iter().next().map(|b| b.offset() / SZ_2M as u64);
        let first = chunk_of(&small[0]);
        assert!(small.iter().all(|b| chunk_of(b) == first));
        let mut whole = KVec::new();
        for _ in 0..3 {
            whole.push(alloc_block(&buddy, SZ_2M)?, GFP_KERNEL)?;
        }
        assert_eq!(buddy.avail(), 0);
        assert!(alloc_block(&buddy, SZ_4K).is_err());
        drop(small);
        drop(whole);
        assert_eq!(buddy.avail(), 4 * SZ_2M as u64);
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
