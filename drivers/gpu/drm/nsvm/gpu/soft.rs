// SPDX-License-Identifier: GPL-2.0

//! The software GPU: a two-level page table in kernel memory.
//!
//! Level one is an rbtree of page directories, one per 2 MiB of address
//! space; each holds 512 4 KiB entries and a flag saying the whole 2 MiB
//! was mapped at once from a huge CPU mapping (a real GMMU would write one
//! big-page PDE there).

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
        if self.meta & Self::PRESENT == 0 {
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

    fn take(&mut self) -> Option<Pte> {
        let pte = self.get();
        *self = Self::default();
        pte
    }
}

/// One 2 MiB page directory.
struct Dir {
    ptes: KVec<Slot>,
    used: usize,
}

impl Dir {
    fn new() -> Result<Self> {
        Ok(Self {
            ptes: KVec::from_elem(Slot::default(), ENTRIES, GFP_KERNEL)?,
            used: 0,
        })
    }
}

/// Directories allocated ahead of a map call.
pub(crate) struct Reservation {
    dirs: KVec<(usize, RBTreeNodeReservation<usize, Dir>, Dir)>,
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

    fn reserve(start: usize, end: usize) -> Result<Reservation> {
        // Without the lock the tree cannot be read: reserve a directory for
        // every 2 MiB of the range; map() drops those already present.
        let mut dirs = KVec::new();
        let mut va = start & !(PAGE_SIZE_2M - 1);
        while va < end {
            dirs.push(
                (
                    dir_index(va),
                    RBTreeNodeReservation::new(GFP_KERNEL)?,
                    Dir::new()?,
                ),
                GFP_KERNEL,
            )?;
            va = match va.checked_add(PAGE_SIZE_2M) {
                Some(v) => v,
                None => break,
            };
        }
        Ok(Reservation { dirs })
    }

    fn map(&mut self, res: Reservation, start: usize, ptes: &[Option<Pte>]) -> usize {
        for (idx, node, dir) in res.dirs {
            // Present already: the spare is freed, which does not reclaim.
            if self.dirs.get(&idx).is_none() {
                self.dirs.insert(node.into_node(idx, dir));
            }
        }
        let mut mapped = 0;
        let mut i = 0;
        // A directory at a time.
        while i < ptes.len() {
            let va = start + i * PAGE_SIZE_4K;
            let first = pte_index(va);
            let n = (ENTRIES - first).min(ptes.len() - i);
            let run = &ptes[i..i + n];
            i += n;
            // Every directory the range needs was reserved above; one that is
            // missing would be a reservation bug, and the pages stay unmapped
            // (the GPU faults again) rather than panicking.
            let Some(dir) = self.dirs.get_mut(&dir_index(va)) else {
                continue;
            };
            for (slot, pte) in dir.ptes[first..first + n].iter_mut().zip(run) {
                let Some(pte) = pte else { continue };
                match slot.get() {
                    Some(old) => *count_of(&mut self.entries, &old) -= 1,
                    None => dir.used += 1,
                }
                *count_of(&mut self.entries, pte) += 1;
                *slot = Slot::new(pte);
                mapped += 1;
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
            // A huge mapping is dropped whole, as a real big-page PDE is.
            let whole = dir.ptes.iter().any(|p| p.meta & Slot::HUGE != 0);
            let entries = if whole {
                0..ENTRIES
            } else {
                span(idx, start, end)
            };
            for slot in &mut dir.ptes[entries] {
                if let Some(old) = slot.take() {
                    *count_of(&mut self.entries, &old) -= 1;
                    dir.used -= 1;
                    dropped += 1;
                }
            }
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
            // A huge mapping keeps its size: only its permission changes.
            for slot in &mut dir.ptes[span(idx, start, end)] {
                if slot.meta & Slot::WRITE != 0 {
                    slot.meta &= !Slot::WRITE;
                    changed += 1;
                }
            }
            cursor = c.move_next();
        }
        changed
    }

    fn flush_tlb(&mut self, _start: usize, _end: usize) {
        // The software GPU has no TLB: every access walks the page table.
    }

    fn lookup(&self, va: usize) -> Option<Pte> {
        self.dirs.get(&dir_index(va))?.ptes[pte_index(va)].get()
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

    fn ptes(n: usize, writable: bool, huge: bool) -> Result<KVec<Option<Pte>>> {
        let mut v = KVec::with_capacity(n, GFP_KERNEL)?;
        for i in 0..n {
            v.push(
                Some(Pte {
                    addr: PteAddr::System(CpuPage::fake(i + 1)),
                    writable,
                    huge,
                    atomic: false,
                }),
                GFP_KERNEL,
            )?;
        }
        Ok(v)
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

    fn map(vm: &mut SoftVm, start: usize, p: &[Option<Pte>]) -> Result<usize> {
        let res = SoftVm::reserve(start, start + p.len() * PAGE_SIZE_4K)?;
        Ok(vm.map(res, start, p))
    }

    #[test]
    fn map_lookup_unmap() -> Result {
        let mut vm = SoftVm::new();
        // Four pages straddling a directory boundary.
        let start = BASE + PAGE_SIZE_2M - 2 * PAGE_SIZE_4K;
        assert_eq!(map(&mut vm, start, &ptes(4, true, false)?)?, 4);
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

    #[test]
    fn huge_unmaps_whole() -> Result {
        let mut vm = SoftVm::new();
        assert_eq!(map(&mut vm, BASE, &ptes(ENTRIES, true, true)?)?, ENTRIES);
        // Splitting is not possible: one page drops the whole 2 MiB.
        assert_eq!(
            vm.unmap(BASE + PAGE_SIZE_4K, BASE + 2 * PAGE_SIZE_4K),
            ENTRIES
        );
        assert!(vm.lookup(BASE).is_none());
        assert!(vm.dirs.iter().next().is_none());
        Ok(())
    }

    #[test]
    fn entries_count_what_is_mapped() -> Result {
        let mut vm = SoftVm::new();
        map(&mut vm, BASE, &ptes(3, false, false)?)?;
        // Mapping over an entry replaces it: still three.
        map(&mut vm, BASE + PAGE_SIZE_4K, &ptes(1, false, false)?)?;
        let vram = Pte {
            addr: PteAddr::Vram(7),
            writable: true,
            huge: false,
            atomic: true,
        };
        let mut p = KVec::new();
        p.push(Some(vram), GFP_KERNEL)?;
        // A system entry replaced by device memory moves between counts.
        map(&mut vm, BASE + 2 * PAGE_SIZE_4K, &p)?;
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
        map(&mut vm, BASE, &ptes(3, false, false)?)?;
        map(&mut vm, BASE * 2, &ptes(3, false, false)?)?;
        assert_eq!(vm.unmap(0, usize::MAX & !(PAGE_SIZE_4K - 1)), 6);
        assert!(vm.dirs.iter().next().is_none());
        assert_eq!(vm.unmap(0, usize::MAX), 0);
        Ok(())
    }

    #[test]
    fn protect_keeps_mapping() -> Result {
        let mut vm = SoftVm::new();
        map(&mut vm, BASE, &ptes(4, true, false)?)?;
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
        map(&mut vm, BASE, &ptes(2, false, false)?)?;
        // Upgrading an entry to writable does not count it twice.
        map(&mut vm, BASE, &ptes(2, true, false)?)?;
        assert!(vm.lookup(BASE).is_some_and(|p| p.writable));
        assert_eq!(vm.unmap(BASE, BASE + PAGE_SIZE_2M), 2);
        assert!(vm.dirs.iter().next().is_none());
        Ok(())
    }
}
