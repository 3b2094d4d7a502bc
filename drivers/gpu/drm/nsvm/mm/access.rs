// SPDX-License-Identifier: GPL-2.0

//! Accesses to pages that others access at the same time.
//!
//! A device reads and writes process memory while the process runs, and
//! device memory that another mirror of the same process may map as well:
//! the bytes may change during the copy. A Rust access to memory that is
//! written concurrently is a data race, undefined behaviour whatever the
//! bytes are, which is why `Page::read_raw()` and `Page::write_raw()`
//! require that nothing else accesses the page. The copies here are done
//! in C instead, with `memcpy_from_page()`, `memcpy_to_page()`,
//! `copy_highpage()` and `clear_highpage()`, as `copy_to_user()` is: the
//! kernel's memory model covers racing accesses there, and Rust only
//! touches its own buffer. [`atomic_add`] is the CPU's atomic instruction,
//! atomic against the CPU and against every other device access.

use core::ptr::NonNull;

use kernel::{
    bindings,
    page::PAGE_SIZE,
    prelude::*, //
};

use super::sys;

/// Whether `[offset, offset + len)` lies within a page.
fn in_page(offset: usize, len: usize) -> bool {
    offset.checked_add(len).is_some_and(|end| end <= PAGE_SIZE)
}

/// Copies `buf.len()` bytes at `offset` of `page` into `buf`, while others
/// may access the page; `EINVAL` if they do not lie within the page.
///
/// # Safety
///
/// `page` is a valid `struct page` that stays allocated for the call.
pub(crate) unsafe fn read(page: NonNull<bindings::page>, offset: usize, buf: &mut [u8]) -> Result {
    if !in_page(offset, buf.len()) {
        return Err(EINVAL);
    }
    // SAFETY: `page` is valid for the call (safety requirements), the
    // bytes lie within it (checked above), and `buf` is ours to write.
    unsafe { sys::nsvm_page_read(page.as_ptr(), offset, buf.as_mut_ptr().cast(), buf.len()) };
    Ok(())
}

/// Copies `buf` to `offset` of `page`, while others may access the page;
/// `EINVAL` if it does not fit within the page.
///
/// # Safety
///
/// `page` is a valid `struct page` that stays allocated for the call, and
/// the caller may write it (it is the memory the access is for).
pub(crate) unsafe fn write(page: NonNull<bindings::page>, offset: usize, buf: &[u8]) -> Result {
    if !in_page(offset, buf.len()) {
        return Err(EINVAL);
    }
    // SAFETY: As for `read()`; the caller may write the page.
    unsafe { sys::nsvm_page_write(page.as_ptr(), offset, buf.as_ptr().cast(), buf.len()) };
    Ok(())
}

/// Adds `value` to the little-endian word at `offset` of `page`, 8 bytes
/// with `wide` (else 4, adding the low 32 bits of `value`), with an atomic
/// instruction; returns the old value. `EINVAL` unless the word is aligned
/// (so within the page).
///
/// # Safety
///
/// As for [`write`].
pub(crate) unsafe fn atomic_add(
    page: NonNull<bindings::page>,
    offset: usize,
    value: u64,
    wide: bool,
) -> Result<u64> {
    let size = if wide { 8 } else { 4 };
    if offset % size != 0 || !in_page(offset, size) {
        return Err(EINVAL);
    }
    // SAFETY: As for `write()`; the word is aligned and within the page.
    Ok(unsafe { sys::nsvm_page_atomic_add(page.as_ptr(), offset, value, wide) })
}

/// Copies the contents of page `src` to page `dst`.
///
/// # Safety
///
/// Both pages are valid and stay allocated for the call, and the caller may
/// write `dst`.
pub(crate) unsafe fn copy_page(dst: NonNull<bindings::page>, src: NonNull<bindings::page>) {
    // SAFETY: By the safety requirements.
    unsafe { sys::nsvm_copy_page(dst.as_ptr(), src.as_ptr()) };
}

/// Zeroes page `dst`.
///
/// # Safety
///
/// As for [`copy_page`].
pub(crate) unsafe fn clear_page(dst: NonNull<bindings::page>) {
    // SAFETY: By the safety requirements.
    unsafe { sys::nsvm_clear_page(dst.as_ptr()) };
}

#[kunit_tests(nsvm_access)]
mod tests {
    use kernel::page::Page;

    use super::*;

    fn raw(page: &Page) -> Result<NonNull<bindings::page>> {
        NonNull::new(page.as_ptr()).ok_or(EINVAL)
    }

    #[test]
    fn copies_stay_within_the_page() -> Result {
        let page = Page::alloc_page(GFP_KERNEL | __GFP_ZERO)?;
        let p = raw(&page)?;
        let mut buf = [0u8; 16];
        // SAFETY: `page` is ours and allocated.
        unsafe {
            write(p, PAGE_SIZE - 4, &[1, 2, 3, 4])?;
            assert_eq!(write(p, PAGE_SIZE - 3, &[1, 2, 3, 4]), Err(EINVAL));
            assert_eq!(write(p, usize::MAX, &[1]), Err(EINVAL));
            assert_eq!(read(p, PAGE_SIZE - 8, &mut buf), Err(EINVAL));
            read(p, PAGE_SIZE - 16, &mut buf)?;
        }
        assert_eq!(buf[12..], [1, 2, 3, 4]);
        assert!(buf[..12].iter().all(|&b| b == 0));
        Ok(())
    }

    #[test]
    fn atomics() -> Result {
        let page = Page::alloc_page(GFP_KERNEL | __GFP_ZERO)?;
        let p = raw(&page)?;
        // SAFETY: `page` is ours and allocated.
        unsafe {
            assert_eq!(atomic_add(p, 8, u64::MAX, true)?, 0);
            assert_eq!(atomic_add(p, 8, 2, true)?, u64::MAX);
            assert_eq!(atomic_add(p, 8, 0, true)?, 1);
            // 32 bits wrap on their own; the high word is not touched.
            assert_eq!(atomic_add(p, 16, u64::from(u32::MAX), false)?, 0);
            assert_eq!(
                atomic_add(p, 16, 0x1_0000_0002, false)?,
                u64::from(u32::MAX)
            );
            assert_eq!(atomic_add(p, 16, 0, false)?, 1);
            assert_eq!(atomic_add(p, 20, 0, false)?, 0);
            // Unaligned, or past the page.
            assert_eq!(atomic_add(p, 4, 1, true), Err(EINVAL));
            assert_eq!(atomic_add(p, 2, 1, false), Err(EINVAL));
            assert_eq!(atomic_add(p, PAGE_SIZE, 1, false), Err(EINVAL));
        }
        Ok(())
    }
}
