// SPDX-License-Identifier: GPL-2.0

//! Device-private memory: a pagemap of `MEMORY_DEVICE_PRIVATE` pages.
//!
//! A [`Pagemap`] gives a device struct pages for its memory. The CPU cannot
//! map them: a CPU access to one faults, and the pagemap's owner migrates
//! it back to system memory ([`PagemapOps::migrate_to_ram`]). Pages are
//! named by their index in the pagemap; index `i` of a folio of order `o`
//! is aligned to `1 << o`.
//!
//! Lifetimes: a device page handed out by [`PagemapRef::page_init`] holds a
//! reference on the pagemap until it is freed ([`PagemapOps::free`]);
//! dropping the [`Pagemap`] waits until every page is free, so whoever owns
//! it must first migrate everything back (`migrate_device_range()`).

use core::{
    ffi::c_void,
    marker::PhantomData,
    ptr::NonNull, //
};

use kernel::{
    bindings,
    ffi::c_int,
    prelude::*,
    sync::Arc, //
};

use super::sys;

/// The owner cookie of a pagemap: `dev_pagemap::owner`, and what HMM and
/// migration compare it with to tell this device's pages from others'.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Owner(NonNull<c_void>);

// SAFETY: An `Owner` is an opaque cookie, never dereferenced by Rust.
unsafe impl Send for Owner {}
// SAFETY: See above.
unsafe impl Sync for Owner {}

impl Owner {
    pub(super) fn as_ptr(self) -> *mut c_void {
        self.0.as_ptr()
    }
}

/// What a device does with its pagemap's pages.
pub(crate) trait PagemapOps: Send + Sync {
    /// The device folio of `1 << order` pages at `index` is free. Called
    /// from any context, also atomic: must not sleep.
    fn free(&self, index: usize, order: u32);

    /// The CPU faulted on a device page: migrate it back to system memory,
    /// with [`super::Migrate::setup_fault`]. `ENOMEM` makes the fault OOM,
    /// other errors `SIGBUS`.
    fn migrate_to_ram(&self, fault: &DeviceFault<'_>) -> Result;
}

/// A CPU fault on a device page, for [`PagemapOps::migrate_to_ram`].
pub(crate) struct DeviceFault<'a> {
    pub(super) vmf: NonNull<bindings::vm_fault>,
    pagemap: PagemapRef<'a>,
}

impl DeviceFault<'_> {
    /// The pagemap of the faulting page.
    pub(crate) fn pagemap(&self) -> PagemapRef<'_> {
        self.pagemap
    }

    /// The faulting address.
    pub(crate) fn address(&self) -> usize {
        // SAFETY: `vmf` is the fault being handled, valid while `self` is.
        unsafe { sys::nsvm_fault_address(self.vmf.as_ptr()) }
    }
}

/// A pagemap, borrowed.
///
/// # Invariants
///
/// `raw` is a live pagemap for `'a`.
#[derive(Clone, Copy)]
pub(crate) struct PagemapRef<'a> {
    raw: NonNull<sys::nsvm_pagemap>,
    _p: PhantomData<&'a ()>,
}

impl PagemapRef<'_> {
    /// Its owner cookie.
    pub(crate) fn owner(&self) -> Owner {
        Owner(self.raw.cast())
    }

    /// The first pfn (2 MiB aligned).
    pub(crate) fn pfn(&self) -> usize {
        // SAFETY: `raw` is live (type invariants).
        unsafe { sys::nsvm_pagemap_pfn(self.raw.as_ptr()) }
    }

    /// The number of pages.
    pub(crate) fn npages(&self) -> usize {
        // SAFETY: `raw` is live (type invariants).
        unsafe { sys::nsvm_pagemap_npages(self.raw.as_ptr()) }
    }

    /// The index of the page at `pfn` if it is one of this pagemap's pages:
    /// the pagemap owns its pfn range, so this is arithmetic, and no
    /// `struct page` is looked at.
    pub(crate) fn index(&self, pfn: usize) -> Option<usize> {
        pfn.checked_sub(self.pfn()).filter(|&i| i < self.npages())
    }

    /// Hands out the free device folio of `1 << order` pages at `index`:
    /// locked, with one reference, which the migration it is given to
    /// takes over.
    ///
    /// # Safety
    ///
    /// The folio at `index` is free (its pages were never handed out, or
    /// [`PagemapOps::free`] returned them) and `index` is aligned to
    /// `1 << order` and in the pagemap.
    pub(crate) unsafe fn page_init(&self, index: usize, order: u32) -> NewDevicePage {
        // SAFETY: `raw` is live and the folio free and in range (safety
        // requirements).
        let page = unsafe { sys::nsvm_pagemap_page_init(self.raw.as_ptr(), index, order) };
        // INVARIANT: a page of the pagemap, locked, with one reference.
        NewDevicePage {
            // SAFETY: `pfn_to_page()` of a pagemap pfn is never null.
            page: unsafe { NonNull::new_unchecked(page) },
        }
    }
}

/// A device folio fresh from [`PagemapRef::page_init`]: locked, with one
/// reference. Given to a migration as destination, or dropped (unlocked
/// and put: it is then freed).
///
/// # Invariants
///
/// `page` is the head of a locked device folio that this value holds one
/// reference on.
pub(crate) struct NewDevicePage {
    page: NonNull<bindings::page>,
}

impl NewDevicePage {
    /// Gives up the lock and reference to the caller.
    pub(super) fn into_raw(self) -> NonNull<bindings::page> {
        let page = self.page;
        core::mem::forget(self);
        page
    }
}

impl Drop for NewDevicePage {
    fn drop(&mut self) {
        // SAFETY: We hold the lock and a reference (type invariants).
        unsafe { sys::nsvm_page_unlock_put(self.page.as_ptr()) };
    }
}

/// A device-private pagemap whose pages `T` manages.
///
/// # Invariants
///
/// `raw` was created with `Arc::as_ptr(&data)` as context and the
/// callbacks of `T`, and is destroyed only by [`Drop`].
pub(crate) struct Pagemap<T: PagemapOps> {
    raw: NonNull<sys::nsvm_pagemap>,
    data: Arc<T>,
}

// SAFETY: The C pagemap may be used from any thread; `T` is `Send + Sync`.
unsafe impl<T: PagemapOps> Send for Pagemap<T> {}
// SAFETY: Every `&self` method calls thread-safe C; `T` is `Sync`.
unsafe impl<T: PagemapOps> Sync for Pagemap<T> {}

/// # Safety
///
/// `ctx` is the context of a live [`Pagemap<T>`].
unsafe extern "C" fn free_callback<T: PagemapOps>(ctx: *const c_void, index: usize, order: u32) {
    // SAFETY: `ctx` is `Arc::as_ptr()` of the pagemap's data, which lives
    // as long as the pagemap (type invariants of `Pagemap`).
    let data = unsafe { &*ctx.cast::<T>() };
    data.free(index, order);
}

/// # Safety
///
/// `ctx` is the context of the live [`Pagemap<T>`] `pm`, and `vmf` a CPU
/// fault on one of its pages, valid for the call.
unsafe extern "C" fn migrate_to_ram_callback<T: PagemapOps>(
    ctx: *const c_void,
    pm: *mut sys::nsvm_pagemap,
    vmf: *mut bindings::vm_fault,
) -> c_int {
    // SAFETY: As for `free_callback()`.
    let data = unsafe { &*ctx.cast::<T>() };
    let fault = DeviceFault {
        // SAFETY: `vmf` is valid for the call (safety requirements).
        vmf: unsafe { NonNull::new_unchecked(vmf) },
        // INVARIANT: `pm` is live: one of its pages is being faulted on.
        pagemap: PagemapRef {
            // SAFETY: `pm` is not null (safety requirements).
            raw: unsafe { NonNull::new_unchecked(pm) },
            _p: PhantomData,
        },
    };
    match data.migrate_to_ram(&fault) {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

impl<T: PagemapOps> Pagemap<T> {
    /// Creates a pagemap of `size` bytes (a multiple of 2 MiB) over a free
    /// physical address range, its pages managed by `data`.
    pub(crate) fn new(size: usize, data: Arc<T>) -> Result<Self> {
        let mut err = 0;
        // SAFETY: The context stays valid until `Drop` destroys the pagemap:
        // it is `data`'s, which `Self` owns.
        let raw = unsafe {
            sys::nsvm_pagemap_create(
                size,
                Arc::as_ptr(&data).cast(),
                Some(free_callback::<T>),
                Some(migrate_to_ram_callback::<T>),
                &mut err,
            )
        };
        // INVARIANT: created with `data` as context and `T`'s callbacks.
        match NonNull::new(raw) {
            Some(raw) => Ok(Self { raw, data }),
            None => Err(Error::from_errno(err)),
        }
    }

    /// The manager of the pages.
    pub(crate) fn data(&self) -> &Arc<T> {
        &self.data
    }

    /// The pagemap, borrowed.
    pub(crate) fn get(&self) -> PagemapRef<'_> {
        // INVARIANT: `raw` lives as long as `self`.
        PagemapRef {
            raw: self.raw,
            _p: PhantomData,
        }
    }
}

impl<T: PagemapOps> Drop for Pagemap<T> {
    fn drop(&mut self) {
        // SAFETY: `raw` is live (type invariants); this waits until every
        // page is free, so no callback runs once it returns.
        unsafe { sys::nsvm_pagemap_destroy(self.raw.as_ptr()) };
    }
}

#[kunit_tests(nsvm_pagemap)]
mod tests {
    use super::*;
    use crate::mm::migrate::{
        Migrate,
        MAX_PAGES, //
    };

    /// Pages nobody uses.
    struct Idle;

    impl PagemapOps for Idle {
        fn free(&self, _index: usize, _order: u32) {}

        fn migrate_to_ram(&self, _fault: &DeviceFault<'_>) -> Result {
            Err(EFAULT)
        }
    }

    #[test]
    fn indices_stay_inside() -> Result {
        let pm = Pagemap::new(
            MAX_PAGES * kernel::page::PAGE_SIZE,
            Arc::new(Idle, GFP_KERNEL)?,
        )?;
        let r = pm.get();
        let n = r.npages();
        assert_eq!(n, MAX_PAGES);
        assert_eq!(r.index(r.pfn()), Some(0));
        assert_eq!(r.index(r.pfn() + n - 1), Some(n - 1));
        assert_eq!(r.index(r.pfn() + n), None);
        assert_eq!(r.index(r.pfn() - 1), None);
        assert_eq!(r.index(0), None);
        assert_eq!(r.index(usize::MAX), None);

        let mut m = Migrate::new()?;
        assert!(m.setup_device(r, 0, 0).is_err());
        assert!(m.setup_device(r, n, 1).is_err());
        assert!(m.setup_device(r, n - 1, 2).is_err());
        assert!(m.setup_device(r, usize::MAX, 2).is_err());
        assert!(m.setup_device(r, 0, n + 1).is_err());
        // Every page is free: none is selected.
        let c = m.setup_device(r, 0, n)?;
        assert_eq!(c.len(), n);
        assert!((0..n).all(|i| !c.src(i).migrate));
        Ok(())
    }
}
