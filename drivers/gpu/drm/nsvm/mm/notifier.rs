// SPDX-License-Identifier: GPL-2.0

//! Mmu interval notifiers and `hmm_range_fault()`.
//!
//! The subscriber keeps its device mappings behind one mutex, the "driver
//! lock" of `Documentation/mm/hmm.rst` ([`Invalidate::lock`]), and the
//! notifier runs the protocol of that document around it. An invalidation
//! takes the lock (with `try_lock()` when it may not block, failing if the
//! lock is held), records its sequence and has the subscriber drop its
//! mappings of the range, all before it returns. The read side is:
//!
//! ```text
//! again:
//!     let snap = notifier.snapshot(mm, ...)?;        // read_begin + hmm
//!     let Some(mut mappings) = notifier.lock_if_current(snap.seq()) else {
//!         goto again;                                // invalidated since
//!     };
//!     use snap.iter() to program `mappings`          // under the lock
//! ```
//!
//! Missing pages are faulted in before, with [`IntervalNotifier::fault`].
//! Both take the mmap lock themselves (killably), as
//! `hmm_range_fault_unlocked_timeout()` does.
//!
//! The lock's guard is only handed out by [`IntervalNotifier::lock_if_current`]
//! and to [`Invalidate::invalidate`]: what the device maps is only changed
//! with the sequence checked or recorded.
//!
//! Invalidations run from reclaim (and with page locks held): nothing under
//! the driver lock may allocate memory in a way that can reclaim. The
//! notifier tells lockdep so when it is created, as `drm_gpusvm_init()`
//! does, so that an allocation under the lock is reported on every run, not
//! only when reclaim happens to invalidate.

use core::{
    ffi::c_void,
    marker::PhantomData,
    ptr::NonNull, //
};

use kernel::{
    alloc::flags::__GFP_NOWARN,
    bindings,
    mm::MmWithUser,
    page::{
        PAGE_SHIFT,
        PAGE_SIZE, //
    },
    prelude::*,
    sync::{
        Arc,
        Mutex,
        MutexGuard, //
    },
};

use super::{
    pagemap::Owner,
    sys, //
};

/// Receives the invalidations of an [`IntervalNotifier`].
pub(crate) trait Invalidate: Send + Sync {
    /// What the driver lock protects: the device's mappings.
    type Mappings: Send + Unpin;

    /// The driver lock (see the module documentation).
    fn lock(&self) -> &Mutex<Self::Mappings>;

    /// The CPU page tables of `inv.start()..inv.end()` are about to change:
    /// before returning, stop every device access to the range through
    /// `mappings`. Runs with the driver lock held and the sequence
    /// recorded; must not sleep (the invalidation may be one that may not
    /// block) nor allocate (it may run from reclaim).
    fn invalidate(&self, inv: &Invalidation<'_>, mappings: &mut Self::Mappings);
}

/// One invalidation callback.
pub(crate) struct Invalidation<'a> {
    raw: &'a sys::nsvm_invalidation,
}

impl Invalidation<'_> {
    /// First invalidated address.
    pub(crate) fn start(&self) -> usize {
        self.raw.start
    }

    /// End (exclusive) of the invalidated range.
    pub(crate) fn end(&self) -> usize {
        self.raw.end
    }

    /// A migration started by this notifier's owner, which handles the
    /// device's mappings itself.
    #[expect(dead_code)]
    pub(crate) fn own_migration(&self) -> bool {
        self.raw.own_migration
    }

    /// The pages stay mapped and only lose write access: a device may keep
    /// read access to them.
    pub(crate) fn write_protect(&self) -> bool {
        self.raw.write_protect
    }
}

/// A sequence number from a notifier's read side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Seq(usize);

/// An mmu interval notifier over a range of an address space.
///
/// # Invariants
///
/// `raw` was returned by `nsvm_notifier_create()` with `Arc::as_ptr(&data)`
/// as context and [`callback::<T>`] as callback, over `[start, end)`, and
/// stays inserted until [`Drop`] removes it; `data` outlives it.
pub(crate) struct IntervalNotifier<T: Invalidate> {
    raw: NonNull<sys::nsvm_notifier>,
    data: Arc<T>,
    start: usize,
    end: usize,
}

// SAFETY: The C notifier may be used from any thread; `T` is `Send + Sync`.
unsafe impl<T: Invalidate> Send for IntervalNotifier<T> {}
// SAFETY: Every `&self` method calls thread-safe C; `T` is `Sync`.
unsafe impl<T: Invalidate> Sync for IntervalNotifier<T> {}

/// The C callback: takes the driver lock, records the sequence and hands
/// the invalidation to `T`.
///
/// # Safety
///
/// `ctx` must be the context of a live [`IntervalNotifier<T>`], `notifier`
/// its C notifier and `inv` valid for the call.
unsafe extern "C" fn callback<T: Invalidate>(
    ctx: *const c_void,
    notifier: *mut sys::nsvm_notifier,
    inv: *const sys::nsvm_invalidation,
) -> bool {
    // SAFETY: By the safety requirements `ctx` is `Arc::as_ptr()` of the
    // notifier's `data`, which outlives the insertion (type invariants).
    let data = unsafe { &*ctx.cast::<T>() };
    // SAFETY: By the safety requirements `inv` is valid for this call.
    let raw = unsafe { &*inv };
    // The owner's own make_device_exclusive() hands the page to its device,
    // which maps it under the driver lock after checking the sequence it
    // read before: let it through (as nouveau does). Recording it would
    // only make the owner retry, and retry again.
    if raw.own_exclusive {
        return true;
    }
    let mut mappings = if raw.blockable {
        data.lock().lock()
    } else {
        match data.lock().try_lock() {
            Some(guard) => guard,
            None => return false,
        }
    };
    // SAFETY: `notifier` is the notifier this callback runs for, alive for
    // the call (safety requirements).
    unsafe { sys::nsvm_notifier_set_seq(notifier, raw.cur_seq) };
    data.invalidate(&Invalidation { raw }, &mut mappings);
    true
}

impl<T: Invalidate> IntervalNotifier<T> {
    /// Subscribes `data` to the invalidations of `[start, start + len)` of
    /// `mm` (page aligned), for the device whose pages have owner `owner`.
    /// `EINVAL` for an empty, unaligned or wrapping range.
    pub(crate) fn new(
        mm: &MmWithUser,
        start: usize,
        len: usize,
        owner: Option<Owner>,
        data: Arc<T>,
    ) -> Result<Self> {
        let end = start.checked_add(len).ok_or(EINVAL)?;
        if len == 0 || start % PAGE_SIZE != 0 || len % PAGE_SIZE != 0 {
            return Err(EINVAL);
        }
        // Reclaim runs invalidations, which take the driver lock: tell
        // lockdep now (see the module documentation).
        // SAFETY: Paired with the release below, in the same context.
        unsafe { sys::nsvm_fs_reclaim_acquire() };
        drop(data.lock().lock());
        // SAFETY: Pairs with the acquire above.
        unsafe { sys::nsvm_fs_reclaim_release() };
        let mut err = 0;
        // SAFETY:
        // - `mm` has users (`MmWithUser`), as insertion requires.
        // - The context stays valid until `Drop` removes the notifier: it is
        //   `data`'s, which `Self` owns.
        let raw = unsafe {
            sys::nsvm_notifier_create(
                mm.as_raw(),
                start,
                len,
                Arc::as_ptr(&data).cast(),
                Some(callback::<T>),
                owner.map_or(core::ptr::null_mut(), Owner::as_ptr),
                &mut err,
            )
        };
        // INVARIANT: `raw` was created with `data` as context over `[start,
        // end)` and stays inserted until `drop()`.
        match NonNull::new(raw) {
            Some(raw) => Ok(Self {
                raw,
                data,
                start,
                end,
            }),
            None => Err(Error::from_errno(err)),
        }
    }

    /// The subscriber.
    pub(crate) fn data(&self) -> &Arc<T> {
        &self.data
    }

    /// Whether `mm` is the address space this notifier watches.
    pub(crate) fn watches(&self, mm: &MmWithUser) -> bool {
        // SAFETY: `raw` is a live notifier (type invariants).
        let ours = unsafe { sys::nsvm_notifier_mm(self.raw.as_ptr()) };
        core::ptr::eq(ours, mm.as_raw())
    }

    /// Starts a read side (`mmu_interval_read_begin()`): may sleep until
    /// running invalidations are done.
    pub(crate) fn read_begin(&self) -> Seq {
        // SAFETY: `raw` is a live notifier (type invariants).
        Seq(unsafe { sys::nsvm_notifier_read_begin(self.raw.as_ptr()) })
    }

    /// Takes the driver lock and returns its guard if no invalidation ran
    /// since the read side that returned `seq`: what was read since is
    /// current, and stays so while the guard is held. `None` (the lock
    /// dropped again) if one ran: read again.
    pub(crate) fn lock_if_current(&self, seq: Seq) -> Option<MutexGuard<'_, T::Mappings>> {
        let guard = self.data.lock().lock();
        // SAFETY: `raw` is a live notifier (type invariants); the driver
        // lock, which invalidations take to record their sequence, is held.
        if unsafe { sys::nsvm_notifier_read_retry(self.raw.as_ptr(), seq.0) } {
            return None;
        }
        Some(guard)
    }

    /// `EINVAL` unless `mm` is this notifier's address space and `[start,
    /// end)` a page-aligned, non-empty range inside the notifier's.
    fn check(&self, mm: &MmWithUser, start: usize, end: usize) -> Result {
        if !self.watches(mm)
            || start % PAGE_SIZE != 0
            || end % PAGE_SIZE != 0
            || start >= end
            || start < self.start
            || end > self.end
        {
            return Err(EINVAL);
        }
        Ok(())
    }

    /// Runs `hmm_range_fault_unlocked_timeout()` over `[start, end)`: the
    /// pfn array is sized here, by the range [`Self::check`] accepted.
    /// Every entry is written (a hole as 0), also when it fails.
    fn hmm(
        &self,
        mm: &MmWithUser,
        (start, end): (usize, usize),
        fault: Option<bool>,
        device: bool,
    ) -> Result<(KVVec<usize>, Seq)> {
        self.check(mm, start, end)?;
        let npages = (end - start) >> PAGE_SHIFT;
        // Sized by the caller's range (up to a 1 GiB window): vmalloc may
        // serve it, and a failure is the caller's ENOMEM, not a warning.
        // Zeroed, as nsvm_range_fault() wants it.
        let mut pfns = KVVec::from_elem(0usize, npages, GFP_KERNEL | __GFP_NOWARN)?;
        let mut seq = 0;
        // SAFETY:
        // - `raw` is a live notifier (type invariants) and `mm`, its address
        //   space, has users for the call.
        // - The range is page aligned and inside the notifier's (checked
        //   above), and `pfns` has one zeroed slot per page of it.
        let ret = unsafe {
            sys::nsvm_range_fault(
                self.raw.as_ptr(),
                start,
                end,
                pfns.as_mut_ptr().cast(),
                fault.is_some(),
                fault.unwrap_or(false),
                device,
                &mut seq,
            )
        };
        kernel::error::to_result(ret)?;
        Ok((pfns, Seq(seq)))
    }

    /// What the CPU page table maps in `[start, end)` (see [`RangeFault`]):
    /// holes and inaccessible pages are reported, nothing is faulted in, and
    /// no fault handler runs. With `device`, the owner's device pages are
    /// reported as they are; without, as absent.
    ///
    /// The mmap lock is taken inside, killably (`EINTR` for a fatal
    /// signal); `EBUSY` when invalidations keep colliding with the walk for
    /// a second; `EFAULT` for an address space the OOM reaper took. `mm`
    /// must be this notifier's, held with `mmget` for the call, and the
    /// range page aligned, not empty and inside the notifier's: `EINVAL`
    /// otherwise.
    pub(crate) fn snapshot(
        &self,
        mm: &MmWithUser,
        start: usize,
        end: usize,
        device: bool,
    ) -> Result<RangeFault<'_>> {
        self.result(start, self.hmm(mm, (start, end), None, device)?)
    }

    /// The result of [`Self::hmm`] from `start`, decoded as it is read.
    fn result(&self, start: usize, (pfns, seq): (KVVec<usize>, Seq)) -> Result<RangeFault<'_>> {
        // INVARIANT: The notifier is borrowed for the result's lifetime.
        Ok(RangeFault {
            start,
            seq,
            pfns,
            raw: self.raw,
            _notifier: PhantomData,
        })
    }

    /// Faults every page of `[start, end)` in, as a CPU access would
    /// (writable with `write`): `EFAULT` if a page cannot be (no VMA,
    /// `PROT_NONE`, a fault handler's `SIGBUS`), `EPERM` for a write to
    /// read-only memory. Fault handlers may drop the mmap lock (userfaultfd
    /// memory is served by its handler). With `device`, the owner's device
    /// pages are left where they are; without, they come back to system
    /// memory. A page after the first one that needs a fault is faulted
    /// whatever it is (HMM faults the rest of the page table it walks): a
    /// caller that must not fault some pages leaves them out of the range.
    ///
    /// Returns what is mapped in the range then, as [`Self::snapshot`]
    /// would; errors and requirements as for it.
    pub(crate) fn fault(
        &self,
        mm: &MmWithUser,
        start: usize,
        end: usize,
        write: bool,
        device: bool,
    ) -> Result<RangeFault<'_>> {
        self.result(start, self.hmm(mm, (start, end), Some(write), device)?)
    }
}

impl<T: Invalidate> Drop for IntervalNotifier<T> {
    fn drop(&mut self) {
        // SAFETY: `raw` is inserted (type invariants); removal waits for
        // running callbacks, so none uses `data` once this returns.
        unsafe { sys::nsvm_notifier_destroy(self.raw.as_ptr()) };
    }
}

/// A page the CPU page table mapped at the time of a [`RangeFault`].
///
/// It carries no reference: the page stays the one mapped there only until
/// the next invalidation of its address, which the user must observe (the
/// HMM contract); it is valid to access only under the driver lock, from
/// [`IntervalNotifier::lock_if_current`] on, and until
/// [`Invalidate::invalidate`] drops it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CpuPage(NonNull<bindings::page>);

// SAFETY: A `CpuPage` is an address; see its docs for when it may be used.
unsafe impl Send for CpuPage {}
// SAFETY: See above.
unsafe impl Sync for CpuPage {}

impl CpuPage {
    /// A stand-in for tests of page-table code, which stores and compares
    /// pages but never touches them.
    #[cfg(CONFIG_KUNIT = "y")]
    pub(crate) fn fake(n: usize) -> Self {
        // `struct page`s apart, as a folio's are (see `nth_in_huge()`).
        let page = NonNull::<bindings::page>::dangling().as_ptr();
        Self(NonNull::new(page.wrapping_add(n)).unwrap_or(NonNull::dangling()))
    }

    /// A page the caller may map as the HMM contract says (see above).
    pub(super) fn new(page: NonNull<bindings::page>) -> Self {
        Self(page)
    }

    /// The `struct page`.
    pub(crate) fn as_ptr(self) -> NonNull<bindings::page> {
        self.0
    }

    /// Page `n` of the 2 MiB CPU mapping whose first page this is (as
    /// [`RangeFault::huge_at`] gives it); `None` past its 512 pages. The
    /// `struct page`s of a folio are contiguous (`folio_page()`), and the
    /// result may be used as this page may.
    pub(crate) fn nth_in_huge(self, n: usize) -> Option<Self> {
        if n >= HUGE_PAGES {
            return None;
        }
        Some(Self(NonNull::new(self.0.as_ptr().wrapping_add(n))?))
    }
}

/// The state of one page in a [`RangeFault`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PageState {
    /// Not mapped by the CPU (or a device-exclusive entry, or another
    /// device's page).
    Absent,
    /// Cannot be accessed (no VMA, `PROT_NONE`, I/O memory).
    Error,
    /// Mapped.
    Present {
        /// The page.
        page: CpuPage,
        /// Its pfn.
        pfn: usize,
        /// Mapped writable.
        writable: bool,
        /// CPU mapping order: 0 for a PTE, 9 for a 2 MiB PMD.
        order: u8,
        /// A device-private page of this notifier's owner.
        device_private: bool,
    },
}

/// Pages of a 2 MiB mapping.
const HUGE_PAGES: usize = 512;

/// The page of entry `raw` if the entry before it was `before`, decoded as
/// `state`, and both are pages of one 2 MiB CPU mapping (see
/// [`RangeFault::iter_range`]).
fn next_in_folio(before: usize, state: PageState, raw: usize) -> Option<PageState> {
    let PageState::Present {
        page,
        pfn,
        writable,
        order,
        device_private,
    } = state
    else {
        return None;
    };
    if order < 9 || raw != before.wrapping_add(1) || (pfn + 1) % HUGE_PAGES == 0 {
        return None;
    }
    Some(PageState::Present {
        // The next `struct page` of the folio.
        page: CpuPage(NonNull::new(page.0.as_ptr().wrapping_add(1))?),
        pfn: pfn + 1,
        writable,
        order,
        device_private,
    })
}

/// The flags of an `hmm_range_fault()` entry that is no hole.
const HMM_PFN_NOT_HOLE: usize =
    (1 << sys::NSVM_HMM_PFN_VALID_BIT) | (1 << sys::NSVM_HMM_PFN_ERROR_BIT);

/// The result of [`IntervalNotifier::snapshot`]: the pages of a range,
/// valid if no invalidation ran since (check [`RangeFault::seq`]).
///
/// It keeps `hmm_range_fault()`'s entries and decodes a page when it is
/// read: most of a fault window is holes, which cost nothing.
///
/// # Invariants
///
/// `raw` is the notifier that made it, borrowed for `'a`.
pub(crate) struct RangeFault<'a> {
    start: usize,
    seq: Seq,
    pfns: KVVec<usize>,
    raw: NonNull<sys::nsvm_notifier>,
    _notifier: PhantomData<&'a ()>,
}

impl RangeFault<'_> {
    /// First address covered.
    pub(crate) fn start(&self) -> usize {
        self.start
    }

    /// End (exclusive) of the range covered.
    pub(crate) fn end(&self) -> usize {
        self.start + (self.pfns.len() << PAGE_SHIFT)
    }

    /// The notifier sequence to check with
    /// [`IntervalNotifier::lock_if_current`].
    pub(crate) fn seq(&self) -> Seq {
        self.seq
    }

    /// Page `i` from [`RangeFault::start`], if the range has it.
    pub(crate) fn get(&self, i: usize) -> Option<PageState> {
        self.pfns.get(i).map(|&p| self.decode(p))
    }

    /// One entry per page, from [`RangeFault::start`].
    pub(crate) fn iter(&self) -> impl Iterator<Item = PageState> + '_ {
        self.iter_range(0, self.pfns.len())
    }

    /// The entries of pages `lo..hi` (clipped to the range).
    ///
    /// The pages of a 2 MiB CPU mapping are decoded once: the entry after
    /// one of such a page, for the next pfn with the same flags and in the
    /// same 2 MiB of pfns, is the next page of the same folio, whose
    /// `struct page`s are contiguous (`folio_page()`).
    pub(crate) fn iter_range(&self, lo: usize, hi: usize) -> impl Iterator<Item = PageState> + '_ {
        let pfns = self.pfns.get(lo..hi.min(self.pfns.len())).unwrap_or(&[]);
        let mut prev: Option<(usize, PageState)> = None;
        pfns.iter().map(move |&raw| {
            let state = prev
                .and_then(|(before, state)| next_in_folio(before, state, raw))
                .unwrap_or_else(|| self.decode(raw));
            prev = Some((raw, state));
            state
        })
    }

    /// Entry `i` if it and the 511 after it are one 2 MiB CPU mapping (a
    /// PMD): a present page of order 9, the first of its 2 MiB of pfns,
    /// and the entries after it are its next pfns with the same flags.
    /// Decodes one entry, whatever the 511 others are.
    pub(crate) fn huge_at(&self, i: usize) -> Option<PageState> {
        let run = self.pfns.get(i..i.checked_add(HUGE_PAGES)?)?;
        let first = run[0];
        if !run
            .iter()
            .enumerate()
            .all(|(j, &raw)| raw == first.wrapping_add(j))
        {
            return None;
        }
        match self.decode(first) {
            state @ PageState::Present { pfn, order, .. }
                if order >= 9 && pfn % HUGE_PAGES == 0 =>
            {
                Some(state)
            }
            _ => None,
        }
    }

    /// The indices from the first page that is no hole to the last (only
    /// [`PageState::Absent`] lies outside); `None` if all are holes.
    pub(crate) fn span(&self) -> Option<(usize, usize)> {
        let some = |p: &usize| p & HMM_PFN_NOT_HOLE != 0;
        let first = self.pfns.iter().position(some)?;
        let last = self.pfns.iter().rposition(some)?;
        Some((first, last + 1))
    }

    /// Takes the pages of `later` (read after `self`, as by a fault of
    /// some of `self`'s pages) where the two overlap. The result is
    /// current if `self`'s sequence is: everything in it was read after
    /// `self`'s read side began.
    pub(crate) fn merge(&mut self, later: &RangeFault<'_>) {
        let (start, end) = (self.start().max(later.start()), self.end().min(later.end()));
        if start >= end {
            return;
        }
        let n = (end - start) >> PAGE_SHIFT;
        let (a, b) = (
            (start - self.start) >> PAGE_SHIFT,
            (start - later.start) >> PAGE_SHIFT,
        );
        self.pfns[a..a + n].copy_from_slice(&later.pfns[b..b + n]);
    }

    fn decode(&self, hmm_pfn: usize) -> PageState {
        // Most of a fresh window: no call out for a hole.
        if hmm_pfn & HMM_PFN_NOT_HOLE == 0 {
            return PageState::Absent;
        }
        let mut out = sys::nsvm_pfn {
            page: core::ptr::null_mut(),
            pfn: 0,
            order: 0,
            valid: false,
            write: false,
            error: false,
            device_private: false,
        };
        // SAFETY: `raw` is a live notifier (type invariants: it is borrowed
        // for `self`'s lifetime); `out` is valid.
        unsafe { sys::nsvm_pfn_decode(self.raw.as_ptr(), hmm_pfn, &mut out) };
        match NonNull::new(out.page) {
            Some(page) if out.valid => PageState::Present {
                page: CpuPage(page),
                pfn: out.pfn,
                writable: out.write,
                order: out.order as u8,
                device_private: out.device_private,
            },
            _ if out.error => PageState::Error,
            _ => PageState::Absent,
        }
    }
}

#[kunit_tests(nsvm_notifier)]
mod tests {
    use super::*;
    use crate::mm::kunit_mmap;

    /// A subscriber with no device mappings.
    #[pin_data]
    struct Nothing {
        #[pin]
        lock: Mutex<()>,
    }

    impl Invalidate for Nothing {
        type Mappings = ();

        fn lock(&self) -> &Mutex<()> {
            &self.lock
        }

        fn invalidate(&self, _inv: &Invalidation<'_>, _mappings: &mut ()) {}
    }

    impl Nothing {
        fn new() -> Result<Arc<Self>> {
            Arc::pin_init(
                pin_init!(Nothing {
                    lock <- kernel::new_mutex!(()),
                }),
                GFP_KERNEL,
            )
        }
    }

    #[test]
    fn rejects_what_it_cannot_serve() -> Result {
        let len = 16 * PAGE_SIZE;
        let addr = kunit_mmap(len).ok_or(ENOMEM)?;
        let task = kernel::current!();
        let mm = task.mm().ok_or(ENOENT)?;
        let data = Nothing::new()?;
        let new = |start, len| IntervalNotifier::new(mm, start, len, None, data.clone()).err();
        assert_eq!(new(addr + 1, len), Some(EINVAL));
        assert_eq!(new(addr, len - 1), Some(EINVAL));
        assert_eq!(new(addr, 0), Some(EINVAL));
        assert_eq!(new(addr, usize::MAX & !(PAGE_SIZE - 1)), Some(EINVAL));

        let n = IntervalNotifier::new(mm, addr, len, None, data.clone())?;
        let snap = |s, e| n.snapshot(mm, s, e, false).err();
        let fault = |s, e| n.fault(mm, s, e, true, false).err();
        // Unaligned ranges: hmm would fill a pfn array sized by rounding
        // down, past its end. Empty ones, and ones outside the notifier's.
        for (s, e) in [
            (addr, addr + len - 1),
            (addr + 1, addr + len),
            (addr, addr),
            (addr + PAGE_SIZE, addr),
            (addr - PAGE_SIZE, addr + len),
            (addr, addr + len + PAGE_SIZE),
        ] {
            assert_eq!(snap(s, e), Some(EINVAL));
            assert_eq!(fault(s, e), Some(EINVAL));
        }

        // The range itself: nothing there until faulted in.
        let mut r = n.snapshot(mm, addr, addr + len, false)?;
        assert_eq!((r.start(), r.end()), (addr, addr + len));
        assert!(r.iter().all(|p| p == PageState::Absent));
        assert_eq!(r.span(), None);
        let f = n.fault(mm, addr + PAGE_SIZE, addr + 3 * PAGE_SIZE, true, false)?;
        assert_eq!(
            (f.start(), f.end()),
            (addr + PAGE_SIZE, addr + 3 * PAGE_SIZE)
        );
        // The fault's pages, merged into the older snapshot, are what a new
        // snapshot reads.
        r.merge(&f);
        let again = n.snapshot(mm, addr, addr + len, false)?;
        assert!(r.iter().eq(again.iter()));
        assert_eq!(again.span(), Some((1, 3)));
        for (i, p) in again.iter().enumerate() {
            let present = matches!(p, PageState::Present { writable: true, .. });
            assert_eq!(present, (1..3).contains(&i));
        }
        Ok(())
    }

    /// Runs `test` on a snapshot of the 2 MiB after a fresh mapping's
    /// start (which may be aligned), faulted in as a THP where the kernel
    /// makes one, with a page either side, and on its number of pages.
    fn with_thp(test: impl FnOnce(&RangeFault<'_>, usize)) -> Result {
        const MB2: usize = 2 << 20;
        let len = 3 * MB2;
        let addr = kunit_mmap(len).ok_or(ENOMEM)?;
        let task = kernel::current!();
        let mm = task.mm().ok_or(ENOENT)?;
        let n = IntervalNotifier::new(mm, addr, len, None, Nothing::new()?)?;
        let huge = (addr + MB2) & !(MB2 - 1);
        let (start, end) = (huge - PAGE_SIZE, huge + MB2 + PAGE_SIZE);
        n.fault(mm, start, end, true, false)?;
        let r = n.snapshot(mm, start, end, false)?;
        test(&r, (end - start) / PAGE_SIZE);
        Ok(())
    }

    /// Reading a snapshot in order (which decodes the pages of a 2 MiB
    /// mapping from the first) gives what reading each page on its own
    /// does, for a THP and across its ends.
    #[test]
    fn iter_decodes_huge_pages_as_get_does() -> Result {
        with_thp(|r, pages| {
            assert!((0..pages).map(|i| r.get(i)).eq(r.iter().map(Some)));
            assert!((5..pages - 3)
                .map(|i| r.get(i))
                .eq(r.iter_range(5, pages - 3).map(Some)));
            assert_eq!(r.iter_range(pages - 1, pages + 8).count(), 1);
            assert_eq!(r.iter_range(pages, pages + 8).count(), 0);
            assert_eq!(r.span(), Some((0, pages)));
        })
    }

    /// `huge_at()` finds a 2 MiB mapping at its first page and nowhere
    /// else, and its pages are those `get()` reads.
    #[test]
    fn huge_at_is_one_pmd() -> Result {
        with_thp(|r, pages| {
            let mut found = 0;
            for i in 0..pages {
                let Some(head) = r.huge_at(i) else {
                    continue;
                };
                found += 1;
                // Only the THP's first page.
                assert_eq!(i, 1);
                assert_eq!(Some(head), r.get(1));
                let PageState::Present { page, .. } = head else {
                    panic!("huge_at() gave no page");
                };
                for j in 0..HUGE_PAGES {
                    match r.get(1 + j) {
                        Some(PageState::Present { page: p, order, .. }) => {
                            assert_eq!(Some(p), page.nth_in_huge(j));
                            assert!(order >= 9);
                        }
                        other => panic!("page {j} of a THP is {other:?}"),
                    }
                }
                assert_eq!(page.nth_in_huge(HUGE_PAGES), None);
            }
            // Where the kernel made a THP, huge_at() found it.
            let thp = matches!(r.get(1), Some(PageState::Present { order: 9.., .. }));
            assert_eq!(found, usize::from(thp));
            assert_eq!(r.huge_at(usize::MAX), None);
        })
    }
}
