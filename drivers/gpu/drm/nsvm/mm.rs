// SPDX-License-Identifier: GPL-2.0

//! Safe abstractions of the mm interfaces nsvm needs and the `kernel` crate
//! lacks: mmu interval notifiers and `hmm_range_fault()` ([`notifier`]),
//! device-private pagemaps ([`pagemap`]), page migration and exclusive
//! access ([`migrate`]), and accesses to pages that others access at the
//! same time ([`access`]).
//!
//! Written as if for `rust/kernel/mm/`: nothing here knows about GPUs. The
//! raw C lives in `mm/shim.c` and `mm/devmem.c`, which own every kernel
//! struct involved;
//! [`sys`] holds its generated declarations and nothing outside this module
//! calls them.
//!
//! Lifetimes: an [`IntervalNotifier`] is created from an `&MmWithUser` (the
//! caller holds `mmget`) and keeps the mm_struct's memory alive itself
//! (`mmu_interval_notifier_insert()` takes `mmgrab`), so it can be dropped
//! at any time, also after `exit_mmap()`. A range fault needs an
//! `&MmWithUser` of the notifier's mm: the address space must have users
//! for its duration.

pub(crate) mod access;
pub(crate) mod migrate;
pub(crate) mod notifier;
pub(crate) mod pagemap;
mod sys;
mod user;

use kernel::{
    mm::{
        Mm,
        MmWithUser, //
    },
    prelude::*, //
};

/// The user address limit of `mm` (`mm->task_size`, `TASK_SIZE` of its
/// processes): page aligned, and no user address of `mm` lies at or above
/// it.
pub(crate) fn task_size(mm: &Mm) -> usize {
    // SAFETY: `mm` is a valid `mm_struct` (its memory is held by `Mm`'s
    // reference), and `task_size` is set once, at exec.
    unsafe { sys::nsvm_mm_task_size(mm.as_raw()) }
}

/// Whether a process still uses `mm`: a user reference other than the
/// caller's own (`mm_users > 1`). The device fault handler holds one per
/// batch; once it holds the only one, the process has exited (or is
/// exiting) and nobody waits for what it would fault in.
pub(crate) fn has_other_users(mm: &MmWithUser) -> bool {
    // SAFETY: `mm` is a valid `mm_struct` with a user reference held, and
    // reading its `mm_users` count is always allowed.
    unsafe { sys::nsvm_mm_users(mm.as_raw()) > 1 }
}

/// Whether the OOM killer killed `mm`'s process: it queued `mm` for the
/// OOM reaper (`MMF_OOM_REAP_QUEUED`).
pub(crate) fn is_oom_victim(mm: &Mm) -> bool {
    // SAFETY: `mm` is a valid `mm_struct` (its memory is held by `Mm`'s
    // reference); its flags may be read at any time.
    unsafe { sys::nsvm_mm_oom_victim(mm.as_raw()) != 0 }
}

/// A scope in which the calling task's allocations cannot invoke the
/// global OOM killer (`memalloc_nofs_save()`: they leave out `__GFP_FS`,
/// and the killer does not run for those); they reclaim and wait instead.
///
/// For the device fault handler: it may hold the last user reference of
/// an address space whose process the killer just killed. Its memory is
/// then freed only when the handler lets go (or the OOM reaper runs), and
/// a kill invoked meanwhile, finding that process gone, would take
/// another. Must be dropped on the task that entered it, in the reverse
/// order of entry: it is neither `Send` nor `Sync`.
pub(crate) struct NoOomScope {
    flags: u32,
    _not_send: core::marker::PhantomData<*mut ()>,
}

impl NoOomScope {
    pub(crate) fn enter() -> Self {
        Self {
            // SAFETY: No requirements; restored by `Drop` on this task.
            flags: unsafe { sys::nsvm_nofs_save() },
            _not_send: core::marker::PhantomData,
        }
    }
}

impl Drop for NoOomScope {
    fn drop(&mut self) {
        // SAFETY: `flags` came from `nsvm_nofs_save()` on this task (the
        // type is not `Send`), and scopes end in reverse order (a scope is
        // only created and dropped within one function).
        unsafe { sys::nsvm_nofs_restore(self.flags) }
    }
}

/// Bits of a user address on this machine: every process's limit
/// ([`task_size`]) lies below `1 << user_va_bits()` (47, or 56 with 5-level
/// paging).
pub(crate) fn user_va_bits() -> u32 {
    // SAFETY: No requirements.
    unsafe { sys::nsvm_user_va_bits() }
}

/// For KUnit: gives the test's kthread an address space of its own and
/// maps `len` bytes of private anonymous memory in it; their address.
#[cfg(CONFIG_KUNIT = "y")]
pub(crate) fn kunit_mmap(len: usize) -> Option<usize> {
    // SAFETY: No requirements: outside a KUnit test it returns 0.
    Some(unsafe { sys::nsvm_kunit_mmap(len) }).filter(|&a| a != 0)
}

pub(crate) use user::PinnedWrite;

pub(crate) use notifier::{
    IntervalNotifier,
    Invalidate,
    Invalidation,
    PageState, //
};

#[kunit_tests(nsvm_layout)]
mod tests {
    use core::mem::offset_of;

    use kernel::bindings::task_struct;

    use super::sys;

    /// The kernel crate reads `task_struct` through bindgen's layout:
    /// it must be the layout the C compiler built the kernel with.
    #[test]
    fn task_struct_as_compiled() {
        let mut c = sys::nsvm_task_layout {
            size: 0,
            mm: 0,
            pid: 0,
            tgid: 0,
            group_leader: 0,
        };
        // SAFETY: `c` is valid for writes.
        unsafe { sys::nsvm_task_layout(&mut c) };
        let c = (c.size, c.mm, c.pid, c.tgid, c.group_leader);
        let rust = (
            size_of::<task_struct>(),
            offset_of!(task_struct, mm),
            offset_of!(task_struct, pid),
            offset_of!(task_struct, tgid),
            offset_of!(task_struct, group_leader),
        );
        if rust != c {
            kernel::pr_err!(
                "task_struct (size, mm, pid, tgid, group_leader): C {c:?}, bindgen {rust:?}\n"
            );
        }
        assert_eq!(rust, c);
    }
}
