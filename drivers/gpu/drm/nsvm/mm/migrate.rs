// SPDX-License-Identifier: GPL-2.0

//! Page migration between system memory and device-private memory:
//! `migrate_vma_*()` over a virtual range, `migrate_device_*()` over a range
//! of device pages, and exclusive access (`make_device_exclusive()`).
//!
//! A migration runs in three steps, as `Documentation/mm/hmm.rst` says:
//!
//! ```text
//! let mut m = migrate.setup(&lock, start, end, owner, dir)?; // collect, lock, unmap
//! for i in 0..m.len() { m.src(i) ...; m.set_dst(i, ...) }   // allocate and copy
//! m.migrate_pages();                                       // switch struct pages
//! drop(m);                                                 // finalize: remap, unlock
//! ```
//!
//! Sources are locked and unmapped from the CPU between setup and
//! finalize; at most [`MAX_PAGES`] pages move at a time.

use core::{
    marker::PhantomData,
    ptr::NonNull, //
};

use kernel::{
    bindings,
    mm::MmWithUser,
    prelude::*, //
};

use super::{
    notifier::CpuPage,
    pagemap::{
        DeviceFault,
        NewDevicePage,
        Owner,
        PagemapRef, //
    },
    sys,
};

/// Most pages one migration step moves: one 2 MiB folio.
pub(crate) const MAX_PAGES: usize = sys::NSVM_MIGRATE_MAX_PAGES as usize;

/// The mmap lock of an address space, held for reading.
///
/// # Invariants
///
/// `mm`'s mmap lock is held for reading by this value, which releases it
/// on drop in the same task (it is not `Send`).
pub(crate) struct MmapRead<'a> {
    mm: &'a MmWithUser,
    _not_send: PhantomData<*mut ()>,
}

impl<'a> MmapRead<'a> {
    /// Takes the mmap lock of `mm` for reading, killably: `EINTR` when a
    /// fatal signal comes first (`mmap_read_lock_killable()`). The kernel
    /// crate's `MmWithUser::mmap_read_lock()` cannot be killed, which would
    /// keep a dying process waiting behind a writer.
    pub(crate) fn lock(mm: &'a MmWithUser) -> Result<Self> {
        // SAFETY: `mm` is a valid address space with users.
        kernel::error::to_result(unsafe { sys::nsvm_mmap_read_lock_killable(mm.as_raw()) })?;
        // INVARIANT: The lock is held.
        Ok(Self {
            mm,
            _not_send: PhantomData,
        })
    }
}

impl Drop for MmapRead<'_> {
    fn drop(&mut self) {
        // SAFETY: This value holds the lock for reading (type invariants).
        unsafe { sys::nsvm_mmap_read_unlock(self.mm.as_raw()) };
    }
}

/// Which way pages move.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    /// System pages to the owner's device pages.
    ToDevice,
    /// The owner's device pages to system pages.
    ToSystem,
}

/// One source entry of a migration.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Src {
    /// The page; `None` for a hole or the zero page (the destination gets
    /// zeroes). Locked and valid until the migration is finalized.
    pub(crate) page: Option<NonNull<bindings::page>>,
    /// The page's pfn (0 without a page).
    pub(crate) pfn: usize,
    /// Selected (before [`Collected::migrate_pages`]) or migrated (after).
    pub(crate) migrate: bool,
    /// Mapped writable.
    pub(crate) write: bool,
    /// Head of a folio of `1 << order` pages; the next entries are its
    /// tail and empty.
    pub(crate) order: u32,
}

/// Migration buffers, reused step after step.
///
/// # Invariants
///
/// `raw` is from `nsvm_migrate_alloc()`, freed by [`Drop`].
pub(crate) struct Migrate {
    raw: NonNull<sys::nsvm_migrate>,
}

// SAFETY: The buffers are plain memory, usable from any thread.
unsafe impl Send for Migrate {}

impl Migrate {
    /// Allocates the buffers.
    pub(crate) fn new() -> Result<Self> {
        // SAFETY: No requirements.
        let raw = unsafe { sys::nsvm_migrate_alloc() };
        Ok(Self {
            raw: NonNull::new(raw).ok_or(ENOMEM)?,
        })
    }

    /// Collects `[start, end)` clipped to one 2 MiB block and to the VMA
    /// of `start` (`migrate_vma_setup()`): the system pages for
    /// [`Direction::ToDevice`], `owner`'s device pages for
    /// [`Direction::ToSystem`]. Returns where the step ended and the
    /// collected pages, or `None` when there is nothing to collect: a hole
    /// (the step ends where the next VMA starts) or a VMA that cannot
    /// migrate (PROT_NONE, hugetlb, I/O; the step ends at its end).
    pub(crate) fn setup<'a>(
        &'a mut self,
        lock: &'a MmapRead<'_>,
        start: usize,
        end: usize,
        owner: Owner,
        dir: Direction,
    ) -> Result<(usize, Option<Collected<'a>>)> {
        let dir = match dir {
            Direction::ToDevice => sys::nsvm_migrate_dir_NSVM_MIGRATE_TO_DEVICE,
            Direction::ToSystem => sys::nsvm_migrate_dir_NSVM_MIGRATE_TO_SYSTEM,
        };
        let mut step_end = 0;
        // SAFETY: `raw` is ours (type invariants); `lock` holds the mmap
        // lock of `lock.mm`, which has users.
        let ret = unsafe {
            sys::nsvm_migrate_setup(
                self.raw.as_ptr(),
                lock.mm.as_raw(),
                start,
                end,
                owner.as_ptr(),
                dir,
                &mut step_end,
            )
        };
        match ret {
            0 => Ok((step_end, Some(self.collected()))),
            r if r == EINVAL.to_errno() || r == EFAULT.to_errno() => Ok((step_end, None)),
            r => Err(Error::from_errno(r)),
        }
    }

    /// Collects the device folio a CPU fault hit (the whole folio if the
    /// CPU maps it with a PMD) for migration to system memory.
    pub(crate) fn setup_fault<'a>(
        &'a mut self,
        fault: &'a DeviceFault<'_>,
    ) -> Result<Collected<'a>> {
        // SAFETY: `raw` is ours; `fault.vmf` is the fault being handled.
        let ret = unsafe {
            sys::nsvm_migrate_setup_fault(
                self.raw.as_ptr(),
                fault.vmf.as_ptr(),
                fault.pagemap().owner().as_ptr(),
            )
        };
        kernel::error::to_result(ret)?;
        Ok(self.collected())
    }

    /// Collects the `npages` (1 to [`MAX_PAGES`]) device pages of `pagemap`
    /// from `index` on, wherever they are mapped (`migrate_device_range()`),
    /// for migration to system memory: eviction. Pages that are free or busy
    /// (locked by someone else) are not selected. `EINVAL` for pages that
    /// are not all the pagemap's.
    pub(crate) fn setup_device<'a>(
        &'a mut self,
        pagemap: PagemapRef<'_>,
        index: usize,
        npages: usize,
    ) -> Result<Collected<'a>> {
        let end = index.checked_add(npages).ok_or(EINVAL)?;
        if npages == 0 || npages > MAX_PAGES || end > pagemap.npages() {
            return Err(EINVAL);
        }
        // SAFETY: `raw` is ours; the `npages` pfns from `pfn() + index` are
        // the pagemap's (checked above), which lives for the call.
        unsafe { sys::nsvm_migrate_setup_device(self.raw.as_ptr(), pagemap.pfn() + index, npages) };
        Ok(self.collected())
    }

    fn collected(&mut self) -> Collected<'_> {
        Collected {
            raw: self.raw,
            migrated: false,
            _m: PhantomData,
        }
    }
}

impl Drop for Migrate {
    fn drop(&mut self) {
        // SAFETY: `raw` is ours and no `Collected` borrows it any more.
        unsafe { sys::nsvm_migrate_free(self.raw.as_ptr()) };
    }
}

/// Pages collected for migration, locked and unmapped from the CPU. The
/// migration is finalized when this is dropped: migrated entries get
/// their new pages mapped, the others their old ones back.
pub(crate) struct Collected<'a> {
    raw: NonNull<sys::nsvm_migrate>,
    migrated: bool,
    _m: PhantomData<&'a mut Migrate>,
}

impl Collected<'_> {
    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        // SAFETY: `raw` is set up.
        unsafe { sys::nsvm_migrate_npages(self.raw.as_ptr()) }
    }

    /// Source entry `i` (`i < len()`).
    pub(crate) fn src(&self, i: usize) -> Src {
        let mut out = sys::nsvm_mpfn {
            page: core::ptr::null_mut(),
            pfn: 0,
            migrate: false,
            write: false,
            order: 0,
        };
        if i < self.len() {
            // SAFETY: `raw` is set up and `i` in range.
            unsafe { sys::nsvm_migrate_src(self.raw.as_ptr(), i, &mut out) };
        }
        Src {
            page: NonNull::new(out.page),
            pfn: out.pfn,
            migrate: out.migrate,
            write: out.write,
            order: out.order,
        }
    }

    /// Makes device folio `page` the destination of entry `i`, mapped
    /// writable with `write`: of the entry's order to move its folio whole,
    /// or a single page per entry to split it.
    pub(crate) fn set_dst(&mut self, i: usize, page: NewDevicePage, write: bool) {
        if self.migrated || i >= self.len() {
            return;
        }
        // SAFETY: `raw` is set up, `i` in range; the migration takes over
        // the page's lock and reference.
        unsafe { sys::nsvm_migrate_set_dst(self.raw.as_ptr(), i, page.into_raw().as_ptr(), write) };
    }

    /// Allocates a system folio of `1 << order` pages as destination of
    /// entry `i`; `None` when memory is short. The page is valid until the
    /// migration is finalized.
    pub(crate) fn alloc_dst(
        &mut self,
        i: usize,
        order: u32,
        write: bool,
    ) -> Option<NonNull<bindings::page>> {
        if self.migrated || i >= self.len() {
            return None;
        }
        // SAFETY: `raw` is set up, `i` in range.
        NonNull::new(unsafe { sys::nsvm_migrate_alloc_dst(self.raw.as_ptr(), i, order, write) })
    }

    /// Moves the struct pages over: afterwards `src(i).migrate` says
    /// whether entry `i` migrated.
    pub(crate) fn migrate_pages(&mut self) {
        if !self.migrated {
            self.migrated = true;
            // SAFETY: `raw` is set up.
            unsafe { sys::nsvm_migrate_pages(self.raw.as_ptr()) };
        }
    }
}

impl Drop for Collected<'_> {
    fn drop(&mut self) {
        if !self.migrated {
            // Abandoned before the pages moved (an error while copying):
            // the destinations are dropped and every source restored.
            // SAFETY: `raw` is set up.
            unsafe { sys::nsvm_migrate_abort(self.raw.as_ptr()) };
        }
        // SAFETY: `raw` is set up.
        unsafe { sys::nsvm_migrate_finalize(self.raw.as_ptr()) };
    }
}

/// A page the device has exclusive access to (`make_device_exclusive()`):
/// the CPU faults on it, which takes the access back (an invalidation with
/// `MMU_NOTIFY_EXCLUSIVE`). Holds the folio lock, so no CPU fault can take
/// it back before this is dropped.
///
/// # Invariants
///
/// `page` is locked and referenced by this value.
pub(crate) struct ExclusivePage {
    page: NonNull<bindings::page>,
}

impl ExclusivePage {
    /// Faults the page at `addr` in writable and PTE-mapped, ending any
    /// exclusive access to it. After this, [`ExclusivePage::new`] raises no
    /// invalidation but its own unless something else changes the page: a
    /// retry loop around it does not undo its own previous attempt.
    pub(crate) fn prepare(lock: &MmapRead<'_>, addr: usize) -> Result {
        // SAFETY: `lock` holds the mmap lock of `lock.mm`, which has users.
        kernel::error::to_result(unsafe { sys::nsvm_fault_in_write(lock.mm.as_raw(), addr) })
    }

    /// Makes the anonymous page at `addr` exclusive to `owner`'s device;
    /// `EOPNOTSUPP` for other memory (shared, file-backed, hugetlb), and
    /// the errors of a CPU write fault (`EFAULT`, `ENOMEM`, ...).
    pub(crate) fn new(lock: &MmapRead<'_>, addr: usize, owner: Owner) -> Result<Self> {
        let mut err = 0;
        // SAFETY: `lock` holds the mmap lock of `lock.mm`, which has users.
        let page =
            unsafe { sys::nsvm_make_exclusive(lock.mm.as_raw(), addr, owner.as_ptr(), &mut err) };
        // INVARIANT: make_device_exclusive() returns the page locked and
        // referenced.
        NonNull::new(page)
            .map(|page| Self { page })
            .ok_or_else(|| Error::from_errno(err))
    }

    /// The page, to map on the device while this value lives: the CPU
    /// cannot take it back before, and the invalidation it then raises
    /// unmaps it.
    pub(crate) fn page(&self) -> CpuPage {
        CpuPage::new(self.page)
    }
}

impl Drop for ExclusivePage {
    fn drop(&mut self) {
        // SAFETY: We hold the lock and a reference (type invariants).
        unsafe { sys::nsvm_page_unlock_put(self.page.as_ptr()) };
    }
}
