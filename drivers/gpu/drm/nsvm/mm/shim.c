// SPDX-License-Identifier: GPL-2.0
/*
 * nsvm mm shim: wraps the mmu interval notifier and hmm_range_fault() for
 * the safe Rust types in mm.rs. See shim.h for the contract of each call.
 */

#include <kunit/test.h>
#include <kunit/test-bug.h>
#include <linux/bitops.h>
#include <linux/err.h>
#include <linux/hmm.h>
#include <linux/jiffies.h>
#include <linux/memremap.h>
#include <linux/mm.h>
#include <linux/mman.h>
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
		.own_exclusive = range->event == MMU_NOTIFY_EXCLUSIVE &&
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

void nsvm_fs_reclaim_acquire(void)
{
	fs_reclaim_acquire(GFP_KERNEL);
}

void nsvm_fs_reclaim_release(void)
{
	fs_reclaim_release(GFP_KERNEL);
}

void nsvm_task_layout(struct nsvm_task_layout *out)
{
	out->size = sizeof(struct task_struct);
	out->mm = offsetof(struct task_struct, mm);
	out->pid = offsetof(struct task_struct, pid);
	out->tgid = offsetof(struct task_struct, tgid);
	out->group_leader = offsetof(struct task_struct, group_leader);
}

unsigned int nsvm_nofs_save(void)
{
	return memalloc_nofs_save();
}

void nsvm_nofs_restore(unsigned int flags)
{
	memalloc_nofs_restore(flags);
}

int nsvm_mm_oom_victim(const struct mm_struct *mm)
{
	return mm_flags_test(MMF_OOM_REAP_QUEUED, mm);
}

int nsvm_mm_users(const struct mm_struct *mm)
{
	return atomic_read(&mm->mm_users);
}

unsigned long nsvm_mm_task_size(const struct mm_struct *mm)
{
	return mm->task_size;
}

unsigned int nsvm_user_va_bits(void)
{
	return fls64(TASK_SIZE_MAX);
}

unsigned long nsvm_kunit_mmap(unsigned long len)
{
#if IS_ENABLED(CONFIG_KUNIT)
	struct kunit *test = kunit_get_current_test();
	unsigned long addr;

	if (!test)
		return 0;
	addr = kunit_vm_mmap(test, NULL, 0, len, PROT_READ | PROT_WRITE,
			     MAP_ANONYMOUS | MAP_PRIVATE, 0);
	return IS_ERR_VALUE(addr) ? 0 : addr;
#else
	return 0;
#endif
}

struct mm_struct *nsvm_notifier_mm(struct nsvm_notifier *n)
{
	return n->mni.mm;
}

int nsvm_range_fault(struct nsvm_notifier *n, unsigned long start, unsigned long end,
		     unsigned long *pfns, bool fault, bool write, bool device,
		     unsigned long *seq)
{
	struct hmm_range range = {
		.notifier = &n->mni,
		.start = start,
		.end = end,
		.hmm_pfns = pfns,
		.default_flags = fault ? HMM_PFN_REQ_FAULT | (write ? HMM_PFN_REQ_WRITE : 0) : 0,
		.dev_private_owner = device ? n->owner : NULL,
	};
	int ret;

	/* The caller's mmget keeps the address space alive. */
	VM_WARN_ON_ONCE(!atomic_read(&n->mni.mm->mm_users));
	ret = hmm_range_fault_unlocked_timeout(&range,
					       msecs_to_jiffies(HMM_RANGE_DEFAULT_TIMEOUT));
	*seq = range.notifier_seq;
	return ret;
}

static_assert(BIT(NSVM_HMM_PFN_VALID_BIT) == HMM_PFN_VALID);
static_assert(BIT(NSVM_HMM_PFN_ERROR_BIT) == HMM_PFN_ERROR);

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
	out->pfn = page_to_pfn(out->page);
	out->order = hmm_pfn_to_map_order(hmm_pfn);
	out->device_private = is_device_private_page(out->page) &&
			      page_pgmap(out->page)->owner == n->owner;
}
