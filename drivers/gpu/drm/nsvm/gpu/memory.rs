// SPDX-License-Identifier: GPL-2.0

//! The software GPU's memory: "VRAM" backed by kernel pages, and a copy
//! engine that moves pages between it and system memory.
//!
//! Each 2 MiB chunk gets its 512 backing pages the first time it is used
//! and keeps them until the device goes away, as real VRAM would stay
//! where it is. Copies run over the engine's channels (see
//! [`super::copy`]). A hardware backend would instead program its copy
//! engines with the physical addresses of both sides (DMA-mapped system
//! pages and VRAM offsets) and wait for the semaphore.

use core::ptr::NonNull;

use kernel::{
    bindings,
    page::Page,
    prelude::*,
    sync::SetOnce, //
};

use super::{
    copy::{
        self,
        CopyPage,
        HelperQueue, //
    },
    CopyOp,
    DeviceMemory,
    MemPage,
    PAGE_SIZE_2M,
    PAGE_SIZE_4K, //
};
use crate::mm::access::{
    clear_page,
    copy_page, //
};

/// Pages per chunk.
const CHUNK_PAGES: usize = PAGE_SIZE_2M / PAGE_SIZE_4K;

/// Software VRAM: backing pages per 2 MiB chunk, and the copy engine.
pub(crate) struct SoftMemory {
    chunks: KVec<SetOnce<KVec<Page>>>,
    /// Where the channels beyond the caller's run, if there are any.
    /// Dropping it waits for helpers still queued: they run module code.
    helpers: Option<HelperQueue>,
}

impl SoftMemory {
    /// Memory of `nchunks` 2 MiB chunks, none populated yet, with a copy
    /// engine of `channels` channels (`EINVAL` outside
    /// `1..=copy::MAX_CHANNELS`).
    pub(crate) fn new(nchunks: usize, channels: u32) -> Result<Self> {
        if !(1..=copy::MAX_CHANNELS).contains(&channels) {
            return Err(EINVAL);
        }
        let mut chunks = KVec::with_capacity(nchunks, GFP_KERNEL)?;
        for _ in 0..nchunks {
            chunks.push(SetOnce::new(), GFP_KERNEL)?;
        }
        let helpers = match channels {
            1 => None,
            _ => Some(HelperQueue::new(channels)?),
        };
        Ok(Self { chunks, helpers })
    }

    /// The backing page of device page `index`, if its chunk is populated.
    pub(crate) fn page(&self, index: usize) -> Option<&Page> {
        self.chunks
            .get(index / CHUNK_PAGES)?
            .as_ref()?
            .get(index % CHUNK_PAGES)
    }

    fn raw(&self, page: MemPage) -> Result<NonNull<bindings::page>> {
        match page {
            MemPage::System(p) => Ok(p),
            MemPage::Vram(index) => {
                let page = self.page(index).ok_or(EINVAL)?;
                NonNull::new(page.as_ptr()).ok_or(EINVAL)
            }
        }
    }
}

impl DeviceMemory for SoftMemory {
    fn populate(&self, chunk: usize) -> Result {
        let slot = self.chunks.get(chunk).ok_or(EINVAL)?;
        if slot.as_ref().is_some() {
            return Ok(());
        }
        let mut pages = KVec::with_capacity(CHUNK_PAGES, GFP_KERNEL)?;
        for _ in 0..CHUNK_PAGES {
            pages.push(Page::alloc_page(GFP_KERNEL)?, GFP_KERNEL)?;
        }
        // A racing populate may have won: these pages are then freed.
        let _ = slot.populate(pages);
        Ok(())
    }

    unsafe fn copy(&self, ops: &[CopyOp]) -> Result {
        // SAFETY: By the safety requirements.
        unsafe { copy::run(self, ops, self.helpers.as_ref()) }
    }
}

impl CopyPage for SoftMemory {
    unsafe fn copy_page(&self, op: &CopyOp) -> Result {
        let dst = self.raw(op.dst)?;
        match op.src {
            // SAFETY: Both pages are allocated for the call and nothing
            // else writes `dst` (safety requirements); VRAM pages are
            // backing pages, allocated until `self` is dropped.
            Some(src) => unsafe { copy_page(dst, self.raw(src)?) },
            // SAFETY: As above.
            None => unsafe { clear_page(dst) },
        }
        Ok(())
    }
}

#[kunit_tests(nsvm_memory)]
mod tests {
    use super::*;
    use crate::gpu::copy::{
        MAX_CHANNELS,
        SLICE_PAGES, //
    };

    /// `n` system pages, page `i` filled with byte `seed + i`.
    fn pages(n: usize, seed: u8) -> Result<KVec<Page>> {
        let mut v = KVec::with_capacity(n, GFP_KERNEL)?;
        for i in 0..n {
            let page = Page::alloc_page(GFP_KERNEL)?;
            let fill = [seed.wrapping_add(i as u8); PAGE_SIZE_4K];
            // SAFETY: `fill` is a page long; nothing else uses `page`.
            unsafe { page.write_raw(fill.as_ptr(), 0, PAGE_SIZE_4K)? };
            v.push(page, GFP_KERNEL)?;
        }
        Ok(v)
    }

    /// Whether every byte of `page` is `byte`.
    fn all(page: &Page, byte: u8) -> Result<bool> {
        let mut buf = [0u8; PAGE_SIZE_4K];
        // SAFETY: `buf` is a page long.
        unsafe { page.read_raw(buf.as_mut_ptr(), 0, PAGE_SIZE_4K)? };
        Ok(buf.iter().all(|b| *b == byte))
    }

    fn sys(page: &Page) -> MemPage {
        MemPage::System(NonNull::new(page.as_ptr()).unwrap())
    }

    #[test]
    fn channel_counts() {
        assert_eq!(SoftMemory::new(1, 0).err(), Some(EINVAL));
        assert_eq!(SoftMemory::new(1, MAX_CHANNELS + 1).err(), Some(EINVAL));
    }

    #[test]
    fn copy_round_trip() -> Result {
        // Not a whole number of slices: the last one is short.
        let n = 3 * SLICE_PAGES + 5;
        for channels in [1, 2, MAX_CHANNELS] {
            let mem = SoftMemory::new(1, channels)?;
            mem.populate(0)?;
            let src = pages(n, 1)?;
            let back = pages(n, 0)?;
            let mut ops = KVec::with_capacity(2 * n, GFP_KERNEL)?;
            for (i, p) in src.iter().enumerate() {
                ops.push(
                    CopyOp {
                        src: Some(sys(p)),
                        dst: MemPage::Vram(i),
                    },
                    GFP_KERNEL,
                )?;
            }
            // SAFETY: The pages are ours and populated.
            unsafe { mem.copy(&ops)? };
            ops.clear();
            for (i, p) in back.iter().enumerate() {
                ops.push(
                    CopyOp {
                        src: Some(MemPage::Vram(i)),
                        dst: sys(p),
                    },
                    GFP_KERNEL,
                )?;
            }
            // A clear in the same batch.
            ops.push(
                CopyOp {
                    src: None,
                    dst: sys(&src[0]),
                },
                GFP_KERNEL,
            )?;
            // SAFETY: As above.
            unsafe { mem.copy(&ops)? };
            for (i, p) in back.iter().enumerate() {
                assert!(all(p, 1u8.wrapping_add(i as u8))?);
            }
            assert!(all(&src[0], 0)?);
        }
        Ok(())
    }

    #[test]
    fn error_keeps_the_rest() -> Result {
        // Chunk 1 is never populated: its pages cannot be copied to.
        let mem = SoftMemory::new(2, MAX_CHANNELS)?;
        mem.populate(0)?;
        let n = 4 * SLICE_PAGES;
        let src = pages(n, 7)?;
        let mut ops = KVec::with_capacity(n, GFP_KERNEL)?;
        for (i, p) in src.iter().enumerate() {
            let index = if i == SLICE_PAGES + 3 { CHUNK_PAGES } else { i };
            ops.push(
                CopyOp {
                    src: Some(sys(p)),
                    dst: MemPage::Vram(index),
                },
                GFP_KERNEL,
            )?;
        }
        // SAFETY: As in `copy_round_trip`.
        assert_eq!(unsafe { mem.copy(&ops) }.err(), Some(EINVAL));
        // The slices after the failed one were still copied.
        let last = n - 1;
        let page = mem.page(last).ok_or(EINVAL)?;
        assert!(all(page, 7u8.wrapping_add(last as u8))?);
        Ok(())
    }
}
