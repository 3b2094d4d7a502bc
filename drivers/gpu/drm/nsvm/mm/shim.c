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

/* Whether @hmm_pfn already satisfies @req, or is a device page of @owner
 * (which must not be faulted: that would migrate it to system memory). */
static bool nsvm_pfn_done(unsigned long hmm_pfn, unsigned long req, void *owner)
{
	struct page *page;

	if (!(hmm_pfn & HMM_PFN_VALID))
		return false;
	page = hmm_pfn_to_page(hmm_pfn);
	if (owner && is_device_private_page(page) && page_pgmap(page)->owner == owner)
		return true;
	return !(req & HMM_PFN_REQ_WRITE) || (hmm_pfn & HMM_PFN_WRITE);
}

/*
 * Fault the pages of a snapshot in [@from, @to) that need it, run by run. One
 * hmm_range_fault() with HMM_PFN_REQ_FAULT over the whole range would not
 * do: once a page needs a fault, it calls handle_mm_fault() on every page
 * up to the end of the page table it walks, device pages of the owner
 * included, which migrates them back to system memory.
 */
static int nsvm_fault_runs(const struct hmm_range *snap, unsigned long req, unsigned long from,
			   unsigned long to)
{
	unsigned long npages, i, j;
	int ret;

	from = max(from, snap->start);
	to = min(to, snap->end);
	if (from >= to)
		return 0;
	i = (from - snap->start) >> PAGE_SHIFT;
	npages = (to - snap->start) >> PAGE_SHIFT;

	while (i < npages) {
		if (nsvm_pfn_done(snap->hmm_pfns[i], req, snap->dev_private_owner)) {
			i++;
			continue;
		}
		for (j = i + 1; j < npages; j++)
			if (nsvm_pfn_done(snap->hmm_pfns[j], req, snap->dev_private_owner))
				break;
		{
			struct hmm_range run = *snap;

			run.start = snap->start + (i << PAGE_SHIFT);
			run.end = snap->start + (j << PAGE_SHIFT);
			run.hmm_pfns = snap->hmm_pfns + i;
			run.default_flags = req;
			ret = hmm_range_fault(&run);
			if (ret)
				return ret;
		}
		i = j;
	}
	return 0;
}

int nsvm_range_fault(struct nsvm_notifier *n, unsigned long addr, unsigned long win_start,
		     unsigned long win_end, unsigned long *pfns, unsigned long fault_start,
		     unsigned long fault_end, bool write, bool device, unsigned long *start,
		     unsigned long *end, unsigned long *seq)
{
	bool fault = fault_start < fault_end;
	struct mm_struct *mm = n->mni.mm;
	unsigned long timeout = jiffies + msecs_to_jiffies(HMM_RANGE_DEFAULT_TIMEOUT);
	unsigned long req = HMM_PFN_REQ_FAULT | (write ? HMM_PFN_REQ_WRITE : 0);
	struct hmm_range range = {
		.notifier = &n->mni,
		.dev_private_owner = device ? n->owner : NULL,
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
		/* A snapshot first; then what needs it is faulted. */
		memset(range.hmm_pfns, 0,
		       ((range.end - range.start) >> PAGE_SHIFT) * sizeof(*pfns));
		ret = hmm_range_fault(&range);
		if (!ret && fault)
			ret = nsvm_fault_runs(&range, req, fault_start, fault_end);
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
	out->pfn = page_to_pfn(out->page);
	out->order = hmm_pfn_to_map_order(hmm_pfn);
	out->device_private = is_device_private_page(out->page) &&
			      page_pgmap(out->page)->owner == n->owner;
}
