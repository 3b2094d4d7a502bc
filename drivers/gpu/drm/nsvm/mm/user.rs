// SPDX-License-Identifier: GPL-2.0

//! User memory pinned for the driver to write: the destination of a READ,
//! which the GPU's worker fills without the process's address space.

use core::ptr::{
    self,
    NonNull, //
};

use kernel::{
    alloc::flags::__GFP_NOWARN,
    bindings,
    error::to_result,
    page::PAGE_SIZE,
    prelude::*, //
};

use super::{
    access,
    sys, //
};

/// The pages of `[addr, addr + len)` of the current process, pinned for
/// writing.
///
/// # Invariants
///
/// `pages` holds the pages covering `[addr & PAGE_MASK, addr + len)`, each
/// pinned by `nsvm_pin_user_write()` until `drop`; `offset` is
/// `addr % PAGE_SIZE`.
pub(crate) struct PinnedWrite {
    pages: KVVec<*mut bindings::page>,
    offset: usize,
    len: usize,
}

// SAFETY: Pinned pages may be written from any thread; the pointers are
// only dereferenced while the pin, which `self` owns, holds.
unsafe impl Send for PinnedWrite {}
// SAFETY: `write()` takes `&self` and writes with `access::write()`, which
// allows concurrent accesses, as `copy_to_user()` from two threads would.
unsafe impl Sync for PinnedWrite {}

impl PinnedWrite {
    /// Pins `[addr, addr + len)` of the current process for writing;
    /// `EFAULT` if not all of it is writable memory.
    pub(crate) fn new(addr: usize, len: usize) -> Result<Self> {
        let offset = addr % PAGE_SIZE;
        let npages = (offset + len).div_ceil(PAGE_SIZE);
        let mut pages = KVVec::from_elem(ptr::null_mut(), npages, GFP_KERNEL | __GFP_NOWARN)?;
        // SAFETY: `pages` has room for `npages` pointers.
        to_result(unsafe { sys::nsvm_pin_user_write(addr - offset, npages, pages.as_mut_ptr()) })?;
        // INVARIANT: All `npages` are pinned.
        Ok(Self { pages, offset, len })
    }

    /// Writes `data` at byte `at` of the range; `EINVAL` past its end.
    pub(crate) fn write(&self, at: usize, data: &[u8]) -> Result {
        if at.checked_add(data.len()).is_none_or(|end| end > self.len) {
            return Err(EINVAL);
        }
        let mut done = 0;
        while done < data.len() {
            let pos = self.offset + at + done;
            let off = pos % PAGE_SIZE;
            let n = (PAGE_SIZE - off).min(data.len() - done);
            let raw = NonNull::new(self.pages[pos / PAGE_SIZE]).ok_or(EINVAL)?;
            // SAFETY: By the type invariants the page is pinned, so
            // allocated, until `self` drops, and pinned for writing. The
            // process may access it meanwhile, which `access::write()`
            // allows.
            unsafe { access::write(raw, off, &data[done..done + n])? };
            done += n;
        }
        Ok(())
    }
}

impl Drop for PinnedWrite {
    fn drop(&mut self) {
        // SAFETY: By the type invariants, `nsvm_pin_user_write()` pinned all
        // of `pages`; nothing uses them after this.
        unsafe { sys::nsvm_unpin_user_dirty(self.pages.as_mut_ptr(), self.pages.len()) };
    }
}
