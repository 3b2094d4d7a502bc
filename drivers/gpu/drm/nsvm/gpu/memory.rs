// SPDX-License-Identifier: GPL-2.0

//! The software GPU's memory: "VRAM" backed by kernel pages, and a copy
//! engine that moves pages between it and system memory.
//!
//! Each 2 MiB chunk gets its 512 backing pages the first time it is used
//! and keeps them until the device goes away, as real VRAM would stay
//! where it is. A hardware backend would instead program its copy engine
//! with the physical addresses of both sides (DMA-mapped system pages and
//! VRAM offsets) and wait for the semaphore.

use core::ptr::NonNull;

use kernel::{
    bindings,
    page::Page,
    prelude::*,
    sync::SetOnce, //
};

use super::{
    CopyOp,
    DeviceMemory,
    MemPage,
    PAGE_SIZE_2M,
    PAGE_SIZE_4K, //
};
use crate::mm::pagemap::{
    clear_page,
    copy_page, //
};

/// Pages per chunk.
const CHUNK_PAGES: usize = PAGE_SIZE_2M / PAGE_SIZE_4K;

/// Software VRAM: backing pages per 2 MiB chunk.
pub(crate) struct SoftMemory {
    chunks: KVec<SetOnce<KVec<Page>>>,
}

impl SoftMemory {
    /// Memory of `nchunks` 2 MiB chunks, none populated yet.
    pub(crate) fn new(nchunks: usize) -> Result<Self> {
        let mut chunks = KVec::with_capacity(nchunks, GFP_KERNEL)?;
        for _ in 0..nchunks {
            chunks.push(SetOnce::new(), GFP_KERNEL)?;
        }
        Ok(Self { chunks })
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
        for op in ops {
            let dst = self.raw(op.dst)?;
            match op.src {
                // SAFETY: Both pages are allocated for the call and nothing
                // else writes `dst` (safety requirements); VRAM pages are
                // backing pages, allocated until `self` is dropped.
                Some(src) => unsafe { copy_page(dst, self.raw(src)?) },
                // SAFETY: As above.
                None => unsafe { clear_page(dst) },
            }
        }
        Ok(())
    }
}
