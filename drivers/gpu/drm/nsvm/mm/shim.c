// SPDX-License-Identifier: GPL-2.0
/*
 * nsvm mm shim: wraps the mmu interval notifier and hmm_range_fault() for
 * the safe Rust types in mm.rs. See shim.h for the contract of each call.
 */

#include <linux/hmm.h>
#include <linux/jiffies.h>
#include <linux/memremap.h>
#include <linux/mm.h>
#include <linux/mmu_notifier.h>
#include <linux/sched.h>
#include <linux/sched/mm.h>
#include <linux/slab.h>

#include "shim.h"

struct nsvm_notifier {
	struct mmu_interval_notifier mni;
	const void *ctx;
	nsvm_invalidate_fn invalidate;
	void *owner;
};

static bool nsvm_shim_invalidate(struct mmu_interval_notifier *mni,
				 const struct mmu_notifier_range *range,
				 unsigned long cur_seq)
{
	struct nsvm_notifier *n = container_of(mni, struct nsvm_notifier, mni);
	struct nsvm_invalidation inv = {
		.start = range->start,
		.end = range->end,
		.cur_seq = cur_seq,
		.blockable = mmu_notifier_range_blockable(range),
		.own_migration = range->event == MMU_NOTIFY_MIGRATE &&
				 n->owner && range->owner == n->owner,
		.write_protect = range->event == MMU_NOTIFY_PROTECTION_PAGE,
	};

	return n->invalidate(n->ctx, n, &inv);
}

static const struct mmu_interval_notifier_ops nsvm_shim_ops = {
	.invalidate = nsvm_shim_invalidate,
};

struct nsvm_notifier *nsvm_notifier_create(struct mm_struct *mm, unsigned long start,
					   unsigned long length, const void *ctx,
					   nsvm_invalidate_fn invalidate, void *owner,
					   int *err)
{
	struct nsvm_notifier *n = kzalloc(sizeof(*n), GFP_KERNEL);

	if (!n) {
		*err = -ENOMEM;
		return NULL;
	}
	n->ctx = ctx;
	n->invalidate = invalidate;
	n->owner = owner;
	*err = mmu_interval_notifier_insert(&n->mni, mm, start, length, &nsvm_shim_ops);
	if (*err) {
		kfree(n);
		return NULL;
	}
	return n;
}

void nsvm_notifier_destroy(struct nsvm_notifier *n)
{
	mmu_interval_notifier_remove(&n->mni);
	kfree(n);
}

unsigned long nsvm_notifier_read_begin(struct nsvm_notifier *n)
{
	return mmu_interval_read_begin(&n->mni);
}

bool nsvm_notifier_read_retry(struct nsvm_notifier *n, unsigned long seq)
{
	return mmu_interval_read_retry(&n->mni, seq);
}

void nsvm_notifier_set_seq(struct nsvm_notifier *n, unsigned long cur_seq)
{
	mmu_interval_set_seq(&n->mni, cur_seq);
}

struct mm_struct *nsvm_current_mm(void)
{
	return current->mm;
}

struct mm_struct *nsvm_notifier_mm(struct nsvm_notifier *n)
{
	return n->mni.mm;
}

int nsvm_range_fault(struct nsvm_notifier *n, unsigned long addr, unsigned long win_start,
		     unsigned long win_end, unsigned long *pfns, bool fault, bool write,
		     unsigned long *start, unsigned long *end, unsigned long *seq)
{
	struct mm_struct *mm = n->mni.mm;
	unsigned long timeout = jiffies + msecs_to_jiffies(HMM_RANGE_DEFAULT_TIMEOUT);
	struct hmm_range range = {
		.notifier = &n->mni,
		.default_flags = fault ? HMM_PFN_REQ_FAULT | (write ? HMM_PFN_REQ_WRITE : 0) : 0,
		.dev_private_owner = n->owner,
	};
	struct vm_area_struct *vma;
	int ret;

	/* The caller's mmget keeps the address space alive. */
	VM_WARN_ON_ONCE(!atomic_read(&mm->mm_users));

	do {
		if (time_after(jiffies, timeout))
			return -EBUSY;
		range.notifier_seq = mmu_interval_read_begin(&n->mni);
		mmap_read_lock(mm);
		range.start = win_start;
		range.end = win_end;
		if (fault) {
			vma = vma_lookup(mm, addr);
			if (!vma) {
				mmap_read_unlock(mm);
				return -EFAULT;
			}
			range.start = max(win_start, vma->vm_start);
			range.end = min(win_end, vma->vm_end);
		}
		range.hmm_pfns = pfns + ((range.start - win_start) >> PAGE_SHIFT);
		ret = hmm_range_fault(&range);
		mmap_read_unlock(mm);
	} while (ret == -EBUSY);

	*start = range.start;
	*end = range.end;
	*seq = range.notifier_seq;
	return ret;
}

void nsvm_pfn_decode(const struct nsvm_notifier *n, unsigned long hmm_pfn,
		     struct nsvm_pfn *out)
{
	*out = (struct nsvm_pfn){ 0 };
	out->error = hmm_pfn & HMM_PFN_ERROR;
	if (!(hmm_pfn & HMM_PFN_VALID))
		return;
	out->valid = true;
	out->write = hmm_pfn & HMM_PFN_WRITE;
	out->page = hmm_pfn_to_page(hmm_pfn);
	out->order = hmm_pfn_to_map_order(hmm_pfn);
	out->device_private = is_device_private_page(out->page) &&
			      page_pgmap(out->page)->owner == n->owner;
}
