/* SPDX-License-Identifier: GPL-2.0 */
/*
 * nsvm mm shim: the C side of the safe mm abstractions in mm.rs.
 *
 * C owns every kernel struct involved (mmu_interval_notifier, hmm_range):
 * Rust only sees opaque pointers and the small plain structs below, and its
 * declarations are generated from this header by scripts/gen-bindings.sh.
 * This header includes nothing, so bindgen needs no kernel include path.
 */
#ifndef NSVM_MM_SHIM_H
#define NSVM_MM_SHIM_H

struct mm_struct;
struct page;
struct nsvm_notifier;

/**
 * struct nsvm_invalidation - one invalidation callback, as the driver sees it.
 * @start: first address of the invalidated range (page aligned).
 * @end: end (exclusive) of the invalidated range.
 * @cur_seq: sequence to pass to nsvm_notifier_set_seq().
 * @blockable: the callback may sleep; if false it must not, and returns false
 *	when it cannot proceed without sleeping.
 * @own_migration: the invalidation is a migration started by the owner
 *	passed to nsvm_notifier_create(), which handles its own mappings.
 * @write_protect: the pages stay mapped and only lose write access
 *	(MMU_NOTIFY_PROTECTION_PAGE: fork's COW, KSM, uffd-wp); a device may
 *	keep read access.
 */
struct nsvm_invalidation {
	unsigned long start;
	unsigned long end;
	unsigned long cur_seq;
	_Bool blockable;
	_Bool own_migration;
	_Bool write_protect;
};

/* The driver's invalidate callback: returns false only if !inv->blockable
 * and it would have had to sleep. */
typedef _Bool (*nsvm_invalidate_fn)(const void *ctx, struct nsvm_notifier *notifier,
				    const struct nsvm_invalidation *inv);

/*
 * Allocate a notifier and insert it over [start, start + length) of @mm,
 * which must have mm_users > 0. @ctx is handed back to @invalidate; @owner
 * is the dev_private_owner of this driver's device pages. Returns NULL with
 * *err set on failure.
 */
struct nsvm_notifier *nsvm_notifier_create(struct mm_struct *mm, unsigned long start,
					   unsigned long length, const void *ctx,
					   nsvm_invalidate_fn invalidate, void *owner,
					   int *err);
/* Remove (waiting for running callbacks to return) and free. May sleep. */
void nsvm_notifier_destroy(struct nsvm_notifier *n);
unsigned long nsvm_notifier_read_begin(struct nsvm_notifier *n);
_Bool nsvm_notifier_read_retry(struct nsvm_notifier *n, unsigned long seq);
void nsvm_notifier_set_seq(struct nsvm_notifier *n, unsigned long cur_seq);
struct mm_struct *nsvm_notifier_mm(struct nsvm_notifier *n);

/*
 * current->mm, read by C. The kernel crate's CurrentTask::mm() reads the
 * field through bindgen's layout of task_struct, which on a GCC-built
 * kernel disagrees with GCC's (7.3.4 + libclang 18: offset 936 vs 984).
 */
struct mm_struct *nsvm_current_mm(void);

/**
 * struct nsvm_pfn - one page of an hmm_range_fault() result, decoded.
 * @page: the page, or NULL when not valid.
 * @order: the CPU mapping order (0: 4 KiB, 9: 2 MiB PMD).
 * @valid: present in the CPU page table.
 * @write: mapped writable.
 * @error: the address cannot be accessed (no VMA, PROT_NONE, ...).
 * @device_private: a device-private page of this notifier's owner.
 */
struct nsvm_pfn {
	struct page *page;
	unsigned int order;
	_Bool valid;
	_Bool write;
	_Bool error;
	_Bool device_private;
};

/*
 * hmm_range_fault() under mmap_read_lock, retrying on -EBUSY until
 * HMM_RANGE_DEFAULT_TIMEOUT.
 *
 * With @fault, the range is [win_start, win_end) clipped to the VMA that
 * holds @addr (-EFAULT if none does), and missing pages are faulted in,
 * writable with @write. Without @fault, [win_start, win_end) is only
 * snapshot. The range used is returned in *start and *end; @pfns has one
 * slot per page of the window. On success *seq is the notifier sequence
 * the result is valid for: check it with nsvm_notifier_read_retry() under
 * the driver lock before using it. The caller must hold an mmget reference
 * on the mm.
 */
int nsvm_range_fault(struct nsvm_notifier *n, unsigned long addr, unsigned long win_start,
		     unsigned long win_end, unsigned long *pfns, _Bool fault, _Bool write,
		     unsigned long *start, unsigned long *end, unsigned long *seq);
void nsvm_pfn_decode(const struct nsvm_notifier *n, unsigned long hmm_pfn,
		     struct nsvm_pfn *out);

#endif /* NSVM_MM_SHIM_H */
