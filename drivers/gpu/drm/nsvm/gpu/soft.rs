// SPDX-License-Identifier: GPL-2.0

//! The software GPU: a two-level page table in kernel memory.
//!
//! Level one is an rbtree of page directories, one per 2 MiB of address
//! space; each holds either one big-page entry for the whole 2 MiB (a huge
//! CPU mapping, as a GMMU's 2 MiB PDE) or a table of 512 4 KiB entries.

use kernel::{
    prelude::*,
    rbtree::{
        RBTree,
        RBTreeNodeReservation, //
    },
};

use kernel::{
    dma_fence::DmaFence,
    sync::{
        aref::ARef,
        Arc, //
    },
    time::Delta, //
};

use super::{
    engine::{
        Channel,
        Engine,
        Job, //
    },
    fault::FaultUnit,
    Entries,
    GpuVm,
    Mapping,
    Pte,
    PteAddr,
    PAGE_SIZE_2M,
    PAGE_SIZE_4K, //
};
use crate::{
    mm::{
        notifier::CpuPage,
        PinnedWrite, //
    },
    svm::MirrorVm,
    uapi, //
};

const ENTRIES: usize = PAGE_SIZE_2M / PAGE_SIZE_4K;

/// A page-table entry as a directory stores it: 16 bytes (an
/// `Option<Pte>` takes 24), so that a directory fits a slab object, which a
/// first fault in a 2 MiB window allocates.
#[derive(Clone, Copy, Default)]
struct Slot {
    /// The system page of a present entry that maps one.
    page: Option<CpuPage>,
    /// The `Slot::*` bits, and a device page's index from
    /// [`Slot::INDEX_SHIFT`] on; 0 for an empty entry.
    meta: u64,
}

impl Slot {
    const PRESENT: u64 = 1 << 0;
    const WRITE: u64 = 1 << 1;
    const HUGE: u64 = 1 << 2;
    const ATOMIC: u64 = 1 << 3;
    const VRAM: u64 = 1 << 4;
    const INDEX_SHIFT: u32 = 8;

    fn new(pte: &Pte) -> Self {
        let flag = |set: bool, bit: u64| if set { bit } else { 0 };
        let meta = Self::PRESENT
            | flag(pte.writable, Self::WRITE)
            | flag(pte.huge, Self::HUGE)
            | flag(pte.atomic, Self::ATOMIC);
        match pte.addr {
            PteAddr::System(page) => Self {
                page: Some(page),
                meta,
            },
            // An index of device memory is far below 2^56.
            PteAddr::Vram(index) => Self {
                page: None,
                meta: meta | Self::VRAM | ((index as u64) << Self::INDEX_SHIFT),
            },
        }
    }

    fn get(&self) -> Option<Pte> {
        if !self.is_present() {
            return None;
        }
        let addr = if self.meta & Self::VRAM != 0 {
            PteAddr::Vram((self.meta >> Self::INDEX_SHIFT) as usize)
        } else {
            PteAddr::System(self.page?)
        };
        Some(Pte {
            addr,
            writable: self.meta & Self::WRITE != 0,
            huge: self.meta & Self::HUGE != 0,
            atomic: self.meta & Self::ATOMIC != 0,
        })
    }

    fn is_present(&self) -> bool {
        self.meta & Self::PRESENT != 0
    }

    fn take(&mut self) -> Option<Pte> {
        let pte = self.get();
        *self = Self::default();
        pte
    }

    /// The entry of page `n` of a big-page slot: what its 4 KiB entry is
    /// once split.
    fn nth(&self, n: usize) -> Option<Pte> {
        let mut pte = self.get()?;
        pte.addr = match pte.addr {
            PteAddr::System(page) => PteAddr::System(page.nth_in_huge(n)?),
            PteAddr::Vram(index) => PteAddr::Vram(index.checked_add(n)?),
        };
        Some(pte)
    }
}

/// One 2 MiB page directory.
///
/// # Invariants
///
/// `ptes` is empty or has `ENTRIES` slots. With `huge` present, every slot
/// of `ptes` is empty; `used` is `ENTRIES` then, else the number of present
/// slots.
struct Dir {
    /// The big-page entry, or empty.
    huge: Slot,
    /// The 4 KiB entries: allocated for the first one.
    ptes: KVec<Slot>,
    used: usize,
}

impl Dir {
    /// A directory, with a table for 4 KiB entries if `small`.
    fn new(small: bool) -> Result<Self> {
        let ptes = if small {
            KVec::from_elem(Slot::default(), ENTRIES, GFP_KERNEL)?
        } else {
            KVec::new()
        };
        // INVARIANT: Nothing is present.
        Ok(Self {
            huge: Slot::default(),
            ptes,
            used: 0,
        })
    }

    /// Writes `m` (of this directory), counting in `entries`; the number
    /// of 4 KiB pages mapped. Without a table, a 4 KiB entry is not
    /// written (the GPU faults on it again).
    fn map(&mut self, entries: &mut Entries, m: &Mapping) -> usize {
        if m.pte.huge {
            if m.va % PAGE_SIZE_2M != 0 {
                return 0;
            }
            self.clear(entries);
            *count_of(entries, &m.pte) += ENTRIES;
            // INVARIANT: `clear()` emptied the table.
            self.huge = Slot::new(&m.pte);
            self.used = ENTRIES;
            return ENTRIES;
        }
        if self.ptes.is_empty() {
            return 0;
        }
        if self.huge.is_present() {
            self.split(entries);
        }
        let slot = &mut self.ptes[pte_index(m.va)];
        match slot.get() {
            Some(old) => *count_of(entries, &old) -= 1,
            None => self.used += 1,
        }
        *count_of(entries, &m.pte) += 1;
        *slot = Slot::new(&m.pte);
        1
    }

    /// Splits the big page into the 4 KiB entries it maps, in the table
    /// (which must be there).
    fn split(&mut self, entries: &mut Entries) {
        let big = core::mem::take(&mut self.huge);
        let Some(pte) = big.get() else {
            return;
        };
        *count_of(entries, &pte) -= ENTRIES;
        self.used = 0;
        for (n, slot) in self.ptes.iter_mut().enumerate() {
            let Some(pte) = big.nth(n) else {
                continue;
            };
            let pte = Pte { huge: false, ..pte };
            *count_of(entries, &pte) += 1;
            *slot = Slot::new(&pte);
            self.used += 1;
        }
    }

    /// Drops every entry; the number of 4 KiB pages unmapped.
    fn clear(&mut self, entries: &mut Entries) -> usize {
        self.unmap(entries, 0..ENTRIES)
    }

    /// Drops the entries of `range`, or the whole big page; the number of
    /// 4 KiB pages unmapped.
    fn unmap(&mut self, entries: &mut Entries, range: core::ops::Range<usize>) -> usize {
        if let Some(old) = self.huge.take() {
            *count_of(entries, &old) -= ENTRIES;
            self.used = 0;
            return ENTRIES;
        }
        let mut dropped = 0;
        for slot in self.ptes.get_mut(range).unwrap_or(&mut []) {
            if let Some(old) = slot.take() {
                *count_of(entries, &old) -= 1;
                self.used -= 1;
                dropped += 1;
            }
        }
        dropped
    }

    /// Makes the entries of `range` read-only, or the whole big page; the
    /// number of 4 KiB pages that lost write access.
    fn protect(&mut self, range: core::ops::Range<usize>) -> usize {
        if self.huge.is_present() {
            let writable = self.huge.meta & Slot::WRITE != 0;
            self.huge.meta &= !Slot::WRITE;
            return if writable { ENTRIES } else { 0 };
        }
        let mut changed = 0;
        for slot in self.ptes.get_mut(range).unwrap_or(&mut []) {
            if slot.meta & Slot::WRITE != 0 {
                slot.meta &= !Slot::WRITE;
                changed += 1;
            }
        }
        changed
    }

    fn lookup(&self, va: usize) -> Option<Pte> {
        if self.huge.is_present() {
            return self.huge.nth(pte_index(va));
        }
        self.ptes.get(pte_index(va))?.get()
    }
}

/// A directory allocated ahead of a map call: its index, tree node and
/// contents.
struct Reserved {
    idx: usize,
    node: RBTreeNodeReservation<usize, Dir>,
    dir: Dir,
}

/// Directories allocated ahead of a map call, in address order.
pub(crate) struct Reservation {
    /// The first: a fault window of at most 2 MiB, aligned, needs only
    /// this one, and so no vector is allocated for it.
    first: Option<Reserved>,
    /// The others.
    rest: KVec<Reserved>,
}

impl Reservation {
    fn last_mut(&mut self) -> Option<&mut Reserved> {
        match self.rest.last_mut() {
            Some(r) => Some(r),
            None => self.first.as_mut(),
        }
    }

    fn push(&mut self, r: Reserved) -> Result {
        if self.first.is_none() {
            self.first = Some(r);
            return Ok(());
        }
        Ok(self.rest.push(r, GFP_KERNEL)?)
    }
}

/// A software GPU address space.
///
/// # Invariants
///
/// `entries` counts the present entries of `dirs` by what they map.
pub(crate) struct SoftVm {
    dirs: RBTree<usize, Dir>,
    entries: Entries,
}

impl SoftVm {
    pub(crate) fn new() -> Self {
        Self {
            dirs: RBTree::new(),
            entries: Entries::default(),
        }
    }
}

/// The count of `entries` that `pte` is one of.
fn count_of<'a>(entries: &'a mut Entries, pte: &Pte) -> &'a mut usize {
    match pte.addr {
        PteAddr::System(_) => &mut entries.system,
        PteAddr::Vram(_) => &mut entries.vram,
    }
}

fn dir_index(va: usize) -> usize {
    va / PAGE_SIZE_2M
}

fn pte_index(va: usize) -> usize {
    (va % PAGE_SIZE_2M) / PAGE_SIZE_4K
}

/// The entries of directory `idx` that `[start, end)` covers.
fn span(idx: usize, start: usize, end: usize) -> core::ops::Range<usize> {
    let base = idx * PAGE_SIZE_2M;
    pte_index(start.max(base))..pte_index(end.min(base + PAGE_SIZE_2M) - 1) + 1
}

impl GpuVm for SoftVm {
    type Reservation = Reservation;
    type Channel = Channel<SoftVm>;
    type Engine = Engine;
    type Faults = FaultUnit;
    const MAX_READ: usize = Job::MAX_READ;

    fn submit(
        engine: &Engine,
        chan: &Arc<Self::Channel>,
        deps: KVec<ARef<DmaFence>>,
        cmds: KVec<uapi::drm_nsvm_cmd>,
        fence: Option<(usize, u64)>,
        dst: Option<PinnedWrite>,
    ) -> Result<Arc<Job>> {
        chan.submit(engine, deps, cmds, fence, dst)
    }

    fn channel(
        engine: &Engine,
        vm: Arc<MirrorVm<Self>>,
        asid: u64,
        timeout: Delta,
    ) -> Result<Arc<Self::Channel>> {
        Channel::new(engine, vm, asid, timeout)
    }

    fn faults(engine: &Engine) -> Arc<FaultUnit> {
        engine.faults().clone()
    }

    fn reserve(maps: impl IntoIterator<Item = (usize, bool)>) -> Result<Reservation> {
        // Without the lock the tree cannot be read: reserve a directory for
        // every 2 MiB the entries are in, with a table if a 4 KiB one is;
        // map() drops what is present already.
        let mut res = Reservation {
            first: None,
            rest: KVec::new(),
        };
        for (va, huge) in maps {
            let idx = dir_index(va);
            match res.last_mut() {
                Some(r) if r.idx == idx => {
                    if !huge && r.dir.ptes.is_empty() {
                        r.dir = Dir::new(true)?;
                    }
                }
                _ => res.push(Reserved {
                    idx,
                    node: RBTreeNodeReservation::new(GFP_KERNEL)?,
                    dir: Dir::new(!huge)?,
                })?,
            }
        }
        Ok(res)
    }

    fn map(&mut self, res: Reservation, maps: &[Mapping]) -> usize {
        let reserved = Iterator::chain(res.first.into_iter(), res.rest);
        for Reserved { idx, node, dir } in reserved {
            match self.dirs.get_mut(&idx) {
                None => {
                    self.dirs.insert(node.into_node(idx, dir));
                }
                // A big page's directory gets the table its 4 KiB entries
                // need. The rest of the reserved one is freed, which does
                // not reclaim.
                Some(old) if old.ptes.is_empty() => old.ptes = dir.ptes,
                Some(_) => {}
            }
        }
        let mut mapped = 0;
        let mut rest = maps;
        // A directory at a time.
        while let Some(first) = rest.first() {
            let idx = dir_index(first.va);
            let n = rest
                .iter()
                .position(|m| dir_index(m.va) != idx)
                .unwrap_or(rest.len());
            let (run, tail) = rest.split_at(n);
            rest = tail;
            // Every directory the entries need was reserved above; one that
            // is missing would be a reservation bug, and the pages stay
            // unmapped (the GPU faults again) rather than panicking.
            let Some(dir) = self.dirs.get_mut(&idx) else {
                continue;
            };
            for m in run {
                mapped += dir.map(&mut self.entries, m);
            }
        }
        mapped
    }

    fn unmap(&mut self, start: usize, end: usize) -> usize {
        if start >= end {
            return 0;
        }
        // Walk the directories that exist: an invalidation may span the
        // whole address space (exit_mmap() sends 0..ULONG_MAX).
        let last = dir_index(end - 1);
        let mut dropped = 0;
        let mut cursor = self.dirs.cursor_lower_bound_mut(&dir_index(start));
        while let Some(mut c) = cursor {
            let (&idx, dir) = c.current_mut();
            if idx > last {
                break;
            }
            dropped += dir.unmap(&mut self.entries, span(idx, start, end));
            cursor = if dir.used == 0 {
                // Freeing under the SVM lock is fine: kfree does not reclaim.
                c.remove_current().0
            } else {
                c.move_next()
            };
        }
        dropped
    }

    fn protect(&mut self, start: usize, end: usize) -> usize {
        if start >= end {
            return 0;
        }
        let last = dir_index(end - 1);
        let mut changed = 0;
        let mut cursor = self.dirs.cursor_lower_bound_mut(&dir_index(start));
        while let Some(mut c) = cursor {
            let (&idx, dir) = c.current_mut();
            if idx > last {
                break;
            }
            changed += dir.protect(span(idx, start, end));
            cursor = c.move_next();
        }
        changed
    }

    fn flush_tlb(&mut self, _start: usize, _end: usize) {
        // The software GPU has no TLB: every access walks the page table.
    }

    fn lookup(&self, va: usize) -> Option<Pte> {
        self.dirs.get(&dir_index(va))?.lookup(va)
    }

    fn entries(&self) -> Entries {
        self.entries
    }
}

#[kunit_tests(nsvm_soft_vm)]
mod tests {
    use super::*;
    use crate::{
        gpu::PteAddr,
        mm::notifier::CpuPage, //
    };

    const BASE: usize = 0x7f00_0000_0000;

    fn pte(page: usize, writable: bool, huge: bool) -> Pte {
        Pte {
            addr: PteAddr::System(CpuPage::fake(page)),
            writable,
            huge,
            atomic: false,
        }
    }

    /// `n` 4 KiB entries from `start`, of fake pages 1 on.
    fn ptes(start: usize, n: usize, writable: bool) -> Result<KVec<Mapping>> {
        let mut v = KVec::with_capacity(n, GFP_KERNEL)?;
        for i in 0..n {
            v.push(
                Mapping {
                    va: start + i * PAGE_SIZE_4K,
                    pte: pte(i + 1, writable, false),
                },
                GFP_KERNEL,
            )?;
        }
        Ok(v)
    }

    /// A big page at `va`, of fake pages `page` on.
    fn big(va: usize, page: usize, writable: bool) -> Mapping {
        Mapping {
            va,
            pte: pte(page, writable, true),
        }
    }

    /// A slot gives back the entry it was made from, for every kind of
    /// entry; an empty one none, and a taken one is empty.
    #[test]
    fn slot_round_trip() {
        assert!(Slot::default().get().is_none());
        for bits in 0..16u32 {
            for addr in [
                PteAddr::System(CpuPage::fake(7)),
                PteAddr::Vram(0),
                PteAddr::Vram((1 << 40) + 3),
            ] {
                let pte = Pte {
                    addr,
                    writable: bits & 1 != 0,
                    huge: bits & 2 != 0,
                    atomic: bits & 4 != 0,
                };
                let mut slot = Slot::new(&pte);
                assert_eq!(slot.get(), Some(pte));
                assert_eq!(slot.take(), Some(pte));
                assert!(slot.get().is_none());
            }
        }
    }

    fn map(vm: &mut SoftVm, maps: &[Mapping]) -> Result<usize> {
        let res = SoftVm::reserve(maps.iter().map(|m| (m.va, m.pte.huge)))?;
        Ok(vm.map(res, maps))
    }

    #[test]
    fn map_lookup_unmap() -> Result {
        let mut vm = SoftVm::new();
        // Four pages straddling a directory boundary.
        let start = BASE + PAGE_SIZE_2M - 2 * PAGE_SIZE_4K;
        assert_eq!(map(&mut vm, &ptes(start, 4, true)?)?, 4);
        assert_eq!(
            vm.lookup(start + PAGE_SIZE_4K).map(|p| p.addr),
            Some(PteAddr::System(CpuPage::fake(2)))
        );
        assert!(vm.lookup(start - PAGE_SIZE_4K).is_none());
        assert_eq!(vm.unmap(start + PAGE_SIZE_4K, start + 3 * PAGE_SIZE_4K), 2);
        assert!(vm.lookup(start + PAGE_SIZE_4K).is_none());
        assert!(vm.lookup(start).is_some());
        assert!(vm.lookup(start + 3 * PAGE_SIZE_4K).is_some());
        Ok(())
    }

    /// One reservation covers directories one after another: the first,
    /// which it holds inline, and the others; a 4 KiB entry after a big
    /// page of its directory gets the table it needs.
    #[test]
    fn reservation_of_several_directories() -> Result {
        let mut vm = SoftVm::new();
        let second = BASE + PAGE_SIZE_2M;
        let third = BASE + 2 * PAGE_SIZE_2M;
        let small = |va, page| Mapping {
            va,
            pte: pte(page, true, false),
        };
        let maps = [
            small(second - PAGE_SIZE_4K, 1),
            big(second, 2, true),
            small(third, 3),
            small(third + PAGE_SIZE_4K, 4),
        ];
        assert_eq!(map(&mut vm, &maps)?, 1 + ENTRIES + 2);
        for m in [maps[0], maps[2], maps[3]] {
            assert_eq!(vm.lookup(m.va), Some(m.pte));
        }
        assert_eq!(vm.lookup(second), Some(pte(2, true, true)));
        assert_eq!(vm.dirs.iter().count(), 3);
        // The big page's directory, and one whose big page a 4 KiB entry
        // splits in the same call.
        let split = [
            big(third + PAGE_SIZE_2M, 10, true),
            small(third + PAGE_SIZE_2M, 5),
        ];
        assert_eq!(map(&mut vm, &split)?, ENTRIES + 1);
        assert_eq!(vm.lookup(third + PAGE_SIZE_2M), Some(split[1].pte));
        assert_eq!(
            vm.lookup(third + PAGE_SIZE_2M + PAGE_SIZE_4K),
            Some(pte(11, true, false))
        );
        assert_eq!(vm.unmap(0, usize::MAX), 1 + 2 * ENTRIES + 2);
        assert!(vm.dirs.iter().next().is_none());
        Ok(())
    }

    /// A big page is one entry: its pages read as the 512 it maps, it
    /// counts 512, and it is dropped whole.
    #[test]
    fn huge_is_one_entry() -> Result {
        let mut vm = SoftVm::new();
        assert_eq!(map(&mut vm, &[big(BASE, 1, true)])?, ENTRIES);
        let dir = vm.dirs.get(&dir_index(BASE)).ok_or(EINVAL)?;
        // No table of 4 KiB entries was allocated for it.
        assert!(dir.ptes.is_empty());
        for n in [0, 1, ENTRIES - 1] {
            assert_eq!(
                vm.lookup(BASE + n * PAGE_SIZE_4K),
                Some(pte(n + 1, true, true))
            );
        }
        assert!(vm.lookup(BASE + PAGE_SIZE_2M).is_none());
        assert!(vm.lookup(BASE - PAGE_SIZE_4K).is_none());
        assert_eq!(vm.entries().system, ENTRIES);
        // Splitting it would allocate: one page drops the whole 2 MiB.
        assert_eq!(
            vm.unmap(BASE + PAGE_SIZE_4K, BASE + 2 * PAGE_SIZE_4K),
            ENTRIES
        );
        assert!(vm.lookup(BASE).is_none());
        assert!(vm.dirs.iter().next().is_none());
        assert_eq!(vm.entries(), Entries::default());
        // Not at a 2 MiB boundary: not written.
        assert_eq!(map(&mut vm, &[big(BASE + PAGE_SIZE_4K, 1, true)])?, 0);
        assert!(vm.lookup(BASE + PAGE_SIZE_4K).is_none());
        Ok(())
    }

    /// A big page over 4 KiB entries replaces them; a 4 KiB entry inside a
    /// big page splits it, and the other 511 pages stay mapped as they were.
    #[test]
    fn huge_replaces_and_splits() -> Result {
        let mut vm = SoftVm::new();
        map(&mut vm, &ptes(BASE, 3, false)?)?;
        assert_eq!(map(&mut vm, &[big(BASE, 100, true)])?, ENTRIES);
        assert_eq!(vm.entries().system, ENTRIES);
        assert_eq!(vm.lookup(BASE), Some(pte(100, true, true)));
        let one = Mapping {
            va: BASE + 5 * PAGE_SIZE_4K,
            pte: pte(7, false, false),
        };
        assert_eq!(map(&mut vm, &[one])?, 1);
        assert_eq!(vm.entries().system, ENTRIES);
        assert_eq!(vm.lookup(one.va), Some(one.pte));
        assert_eq!(vm.lookup(BASE), Some(pte(100, true, false)));
        assert_eq!(
            vm.lookup(BASE + (ENTRIES - 1) * PAGE_SIZE_4K),
            Some(pte(100 + ENTRIES - 1, true, false))
        );
        // Split: unmapping a page drops only that page now.
        assert_eq!(vm.unmap(BASE, BASE + PAGE_SIZE_4K), 1);
        assert_eq!(vm.entries().system, ENTRIES - 1);
        assert_eq!(vm.unmap(0, usize::MAX), ENTRIES - 1);
        assert!(vm.dirs.iter().next().is_none());
        Ok(())
    }

    /// Protecting part of a big page protects it whole: the GPU never
    /// writes where the CPU may not.
    #[test]
    fn huge_protects_whole() -> Result {
        let mut vm = SoftVm::new();
        map(&mut vm, &[big(BASE, 1, true)])?;
        assert_eq!(
            vm.protect(BASE + PAGE_SIZE_4K, BASE + 2 * PAGE_SIZE_4K),
            ENTRIES
        );
        assert_eq!(vm.lookup(BASE), Some(pte(1, false, true)));
        assert_eq!(vm.protect(0, usize::MAX), 0);
        assert_eq!(vm.entries().system, ENTRIES);
        Ok(())
    }

    #[test]
    fn entries_count_what_is_mapped() -> Result {
        let mut vm = SoftVm::new();
        map(&mut vm, &ptes(BASE, 3, false)?)?;
        // Mapping over an entry replaces it: still three.
        map(&mut vm, &ptes(BASE + PAGE_SIZE_4K, 1, false)?)?;
        let vram = Mapping {
            va: BASE + 2 * PAGE_SIZE_4K,
            pte: Pte {
                addr: PteAddr::Vram(7),
                writable: true,
                huge: false,
                atomic: true,
            },
        };
        // A system entry replaced by device memory moves between counts.
        map(&mut vm, &[vram])?;
        let e = |system, vram| Entries { system, vram };
        assert_eq!(vm.entries(), e(2, 1));
        vm.unmap(BASE, BASE + 2 * PAGE_SIZE_4K);
        assert_eq!(vm.entries(), e(0, 1));
        vm.unmap(0, usize::MAX & !(PAGE_SIZE_4K - 1));
        assert_eq!(vm.entries(), e(0, 0));
        Ok(())
    }

    #[test]
    fn unmap_everything_is_quick() -> Result {
        // exit_mmap() invalidates 0..ULONG_MAX: only present directories
        // may be walked.
        let mut vm = SoftVm::new();
        map(&mut vm, &ptes(BASE, 3, false)?)?;
        map(&mut vm, &ptes(BASE * 2, 3, false)?)?;
        assert_eq!(vm.unmap(0, usize::MAX & !(PAGE_SIZE_4K - 1)), 6);
        assert!(vm.dirs.iter().next().is_none());
        assert_eq!(vm.unmap(0, usize::MAX), 0);
        Ok(())
    }

    #[test]
    fn protect_keeps_mapping() -> Result {
        let mut vm = SoftVm::new();
        map(&mut vm, &ptes(BASE, 4, true)?)?;
        assert_eq!(vm.protect(BASE + PAGE_SIZE_4K, BASE + 3 * PAGE_SIZE_4K), 2);
        assert!(vm.lookup(BASE).is_some_and(|p| p.writable));
        assert!(vm.lookup(BASE + PAGE_SIZE_4K).is_some_and(|p| !p.writable));
        assert!(vm
            .lookup(BASE + 3 * PAGE_SIZE_4K)
            .is_some_and(|p| p.writable));
        assert_eq!(vm.protect(0, usize::MAX), 2);
        assert_eq!(vm.unmap(0, usize::MAX), 4);
        Ok(())
    }

    #[test]
    fn remap_keeps_count() -> Result {
        let mut vm = SoftVm::new();
        map(&mut vm, &ptes(BASE, 2, false)?)?;
        // Upgrading an entry to writable does not count it twice.
        map(&mut vm, &ptes(BASE, 2, true)?)?;
        assert!(vm.lookup(BASE).is_some_and(|p| p.writable));
        assert_eq!(vm.unmap(BASE, BASE + PAGE_SIZE_2M), 2);
        assert!(vm.dirs.iter().next().is_none());
        Ok(())
    }
}
