// SPDX-License-Identifier: GPL-2.0

//! The software GPU's command processor.
//!
//! Runs `DRM_NSVM_OP_*` commands the way a GPU would: every access walks
//! the GPU page table, and a miss (no entry, or a write to a read-only one)
//! raises a page fault. Like the many warps of a real GPU, a command first
//! touches every page it will use: all misses go to the fault queue at
//! once (up to [`FAULT_BATCH`]), the SVM core serves the batch, and the
//! command is replayed, as with a replayable fault buffer. The accesses
//! themselves happen page by page under the mirror's VM lock, so an
//! invalidation can never pull a page from under one; a miss there (an
//! invalidation raced the batch) is served on its own.

use kernel::{
    mm::MmWithUser,
    page::{
        BorrowedPage,
        Page, //
    },
    prelude::*,
    uaccess::{
        UserPtr,
        UserSlice, //
    },
};

use crate::{
    gpu::{
        GpuVm,
        PAGE_SIZE_4K, //
    },
    svm::{
        Counters,
        Fault,
        Mirror,
        Unserved, //
    },
    uapi,
};

/// A fault served this many times in a row without the access going
/// through (invalidations keep racing it) gives up with `EBUSY`.
const MAX_REPLAYS: u32 = 64;

/// Most faults one batch queues, as a GPU's fault buffer holds a bounded
/// number of entries.
pub(crate) const FAULT_BATCH: usize = 64;

/// Why a command stopped.
pub(crate) enum Stop {
    /// A GPU fault could not be served.
    Unserved(Unserved),
    /// Anything else (`ENOMEM`, `EFAULT` on the user buffer, ...).
    Error(Error),
}

impl From<Error> for Stop {
    fn from(e: Error) -> Self {
        Stop::Error(e)
    }
}

/// Runs commands against one mirror, for one ioctl.
pub(crate) struct Engine<'a, V: GpuVm> {
    mirror: &'a Mirror<V>,
    mm: &'a MmWithUser,
    bounce: KVec<u8>,
    /// The fault queue: what the last probe missed.
    queue: KVec<Fault>,
}

impl<'a, V: GpuVm> Engine<'a, V> {
    /// An engine for `mirror`, whose address space `mm` the caller entered.
    pub(crate) fn new(mirror: &'a Mirror<V>, mm: &'a MmWithUser) -> Result<Self> {
        Ok(Self {
            mirror,
            mm,
            bounce: KVec::from_elem(0u8, PAGE_SIZE_4K, GFP_KERNEL)?,
            queue: KVec::with_capacity(FAULT_BATCH, GFP_KERNEL)?,
        })
    }

    /// Runs `f` on the page the GPU maps at `va`, with the offset of `va` in
    /// it, faulting and replaying as needed.
    fn access<R>(
        mirror: &Mirror<V>,
        mm: &MmWithUser,
        va: usize,
        write: bool,
        mut f: impl FnMut(&Page, usize) -> Result<R>,
    ) -> Result<R, Stop> {
        let vm = mirror.vm();
        for _ in 0..MAX_REPLAYS {
            {
                let guard = vm.vm.lock();
                if let Some(pte) = guard.lookup(va).filter(|p| p.writable || !write) {
                    // SAFETY: The entry is in the GPU page table and we hold the
                    // VM lock, which the invalidation callback takes before the
                    // CPU may unmap (and so free) the page: the page stays
                    // valid until the guard drops, after `f` returns.
                    let page = unsafe { BorrowedPage::from_raw(pte.page.as_ptr()) };
                    return f(&page, va % PAGE_SIZE_4K).map_err(Stop::Error);
                }
            }
            Counters::add(&vm.counters.faults, 1);
            mirror.fault(mm, va, write).map_err(|err| {
                Stop::Unserved(Unserved {
                    addr: va,
                    write,
                    err,
                })
            })?;
            Counters::add(&vm.counters.batches, 1);
        }
        Err(Stop::Error(EBUSY))
    }

    /// The GPU address ranges `cmd` touches, and whether it writes them.
    fn ranges(cmd: &uapi::drm_nsvm_cmd) -> [(usize, usize, bool); 2] {
        let len = cmd.len as usize;
        let (src, dst) = (cmd.src as usize, cmd.dst as usize);
        match cmd.op {
            uapi::DRM_NSVM_OP_FILL => [(dst, len, true), (0, 0, false)],
            uapi::DRM_NSVM_OP_COPY => [(src, len, false), (dst, len, true)],
            // READ writes `dst` through the CPU, not the GPU.
            uapi::DRM_NSVM_OP_READ => [(src, len, false), (0, 0, false)],
            uapi::DRM_NSVM_OP_ATOMIC_ADD32 => [(dst, 4, true), (0, 0, false)],
            uapi::DRM_NSVM_OP_ATOMIC_ADD64 => [(dst, 8, true), (0, 0, false)],
            _ => [(0, 0, false), (0, 0, false)],
        }
    }

    /// Touches every page `cmd` uses and queues the misses, at most
    /// [`FAULT_BATCH`], in `queue`.
    fn probe(mirror: &Mirror<V>, cmd: &uapi::drm_nsvm_cmd, queue: &mut KVec<Fault>) -> Result {
        queue.clear();
        let vm = mirror.vm().vm.lock();
        for (start, len, write) in Self::ranges(cmd) {
            if len == 0 {
                continue;
            }
            let mut va = start & !(PAGE_SIZE_4K - 1);
            while va < start + len && queue.len() < FAULT_BATCH {
                if !vm.lookup(va).is_some_and(|p| p.writable || !write) {
                    // The queue was allocated with room for a whole batch.
                    queue
                        .push_within_capacity(Fault { addr: va, write })
                        .map_err(|_| ENOMEM)?;
                }
                va += PAGE_SIZE_4K;
            }
        }
        Ok(())
    }

    /// Runs one (validated) command.
    pub(crate) fn run(&mut self, cmd: &mut uapi::drm_nsvm_cmd) -> Result<(), Stop> {
        let (mirror, mm) = (self.mirror, self.mm);
        // Every batch maps at least its first fault, so a command needs at
        // most one batch per page it touches; more means invalidations keep
        // undoing the work.
        let pages: usize = Self::ranges(cmd)
            .iter()
            .map(|&(_, len, _)| len.div_ceil(PAGE_SIZE_4K) + 1)
            .sum();
        let mut batches = 0;
        loop {
            Self::probe(mirror, cmd, &mut self.queue)?;
            if self.queue.is_empty() {
                break;
            }
            batches += 1;
            if batches > pages + MAX_REPLAYS as usize {
                return Err(Stop::Error(EBUSY));
            }
            let vm = mirror.vm();
            Counters::add(&vm.counters.faults, self.queue.len() as u64);
            mirror.serve(mm, &mut self.queue).map_err(Stop::Unserved)?;
            Counters::add(&vm.counters.batches, 1);
        }
        let len = cmd.len as usize;
        match cmd.op {
            uapi::DRM_NSVM_OP_FILL => {
                let pattern = cmd.value.to_le_bytes();
                let dst = cmd.dst as usize;
                let mut done = 0;
                while done < len {
                    let va = dst + done;
                    let n = chunk(va, len - done);
                    for (i, b) in self.bounce[..n].iter_mut().enumerate() {
                        *b = pattern[(done + i) % 8];
                    }
                    let buf = &self.bounce[..n];
                    // SAFETY: `buf` holds `n` bytes; the page is user memory,
                    // which the process may race on as with `copy_to_user()`.
                    Self::access(mirror, mm, va, true, |p, off| unsafe {
                        p.write_raw(buf.as_ptr(), off, n)
                    })?;
                    done += n;
                }
            }
            uapi::DRM_NSVM_OP_COPY => {
                let (src, dst) = (cmd.src as usize, cmd.dst as usize);
                let mut done = 0;
                while done < len {
                    let n = chunk(src + done, len - done).min(chunk(dst + done, len - done));
                    let buf = &mut self.bounce[..n];
                    // SAFETY: `buf` holds `n` bytes; see FILL for the page.
                    Self::access(mirror, mm, src + done, false, |p, off| unsafe {
                        p.read_raw(buf.as_mut_ptr(), off, n)
                    })?;
                    let buf = &self.bounce[..n];
                    // SAFETY: As above.
                    Self::access(mirror, mm, dst + done, true, |p, off| unsafe {
                        p.write_raw(buf.as_ptr(), off, n)
                    })?;
                    done += n;
                }
            }
            uapi::DRM_NSVM_OP_READ => {
                let src = cmd.src as usize;
                let mut out = UserSlice::new(UserPtr::from_addr(cmd.dst as usize), len).writer();
                let mut done = 0;
                while done < len {
                    let n = chunk(src + done, len - done);
                    let buf = &mut self.bounce[..n];
                    // SAFETY: As for COPY.
                    Self::access(mirror, mm, src + done, false, |p, off| unsafe {
                        p.read_raw(buf.as_mut_ptr(), off, n)
                    })?;
                    // Outside the VM lock: this may fault on user memory.
                    out.write_slice(&self.bounce[..n])?;
                    done += n;
                }
            }
            uapi::DRM_NSVM_OP_ATOMIC_ADD32 | uapi::DRM_NSVM_OP_ATOMIC_ADD64 => {
                let wide = cmd.op == uapi::DRM_NSVM_OP_ATOMIC_ADD64;
                let size = if wide { 8 } else { 4 };
                let addend = cmd.value;
                // Read-modify-write under one hold of the VM lock: atomic
                // against every other GPU access. CPU-side atomicity comes
                // with exclusive access (make_device_exclusive), later.
                let old = Self::access(mirror, mm, cmd.dst as usize, true, |p, off| {
                    let mut bytes = [0u8; 8];
                    // SAFETY: `bytes` holds 8 >= `size` bytes; the operand is
                    // aligned, so it does not cross the page.
                    unsafe { p.read_raw(bytes.as_mut_ptr(), off, size)? };
                    let old = u64::from_le_bytes(bytes);
                    let new = if wide {
                        old.wrapping_add(addend)
                    } else {
                        u64::from((old as u32).wrapping_add(addend as u32))
                    };
                    // SAFETY: As above.
                    unsafe { p.write_raw(new.to_le_bytes().as_ptr(), off, size)? };
                    Ok(old)
                })?;
                cmd.value = old;
            }
            _ => return Err(Stop::Error(EINVAL)),
        }
        Ok(())
    }
}

/// Bytes from `va` to the end of its page, at most `left`.
fn chunk(va: usize, left: usize) -> usize {
    (PAGE_SIZE_4K - va % PAGE_SIZE_4K).min(left)
}

/// Checks a command before anything runs: `EINVAL` for what the uapi
/// forbids.
pub(crate) fn validate(cmd: &uapi::drm_nsvm_cmd) -> Result {
    if cmd.flags != 0 || cmd.len > u64::from(uapi::DRM_NSVM_CMD_MAX_LEN) {
        return Err(EINVAL);
    }
    let in_range = |addr: u64, len: u64| addr.checked_add(len).is_some();
    match cmd.op {
        uapi::DRM_NSVM_OP_FILL if in_range(cmd.dst, cmd.len) => Ok(()),
        uapi::DRM_NSVM_OP_READ if in_range(cmd.src, cmd.len) && in_range(cmd.dst, cmd.len) => {
            Ok(())
        }
        uapi::DRM_NSVM_OP_COPY
            if in_range(cmd.src, cmd.len)
                && in_range(cmd.dst, cmd.len)
                && (cmd.src + cmd.len <= cmd.dst || cmd.dst + cmd.len <= cmd.src) =>
        {
            Ok(())
        }
        uapi::DRM_NSVM_OP_ATOMIC_ADD32 if cmd.dst % 4 == 0 => Ok(()),
        uapi::DRM_NSVM_OP_ATOMIC_ADD64 if cmd.dst % 8 == 0 => Ok(()),
        _ => Err(EINVAL),
    }
}
