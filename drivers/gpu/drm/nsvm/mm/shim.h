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
 * @own_exclusive: make_device_exclusive() by the owner, about to hand
 *	the page to its device: the driver must not wait for or undo it.
 * @write_protect: the pages stay mapped and only lose write access
 *	(MMU_NOTIFY_PROTECTION_PAGE: in 7.3, fork's copy-on-write setup,
 *	folio_mkclean() and the write-protection of shared mappings for dirty
 *	tracking; KSM raises MMU_NOTIFY_CLEAR and uffd-wp goes through
 *	change_protection(), MMU_NOTIFY_PROTECTION_VMA); a device may keep
 *	read access.
 */
struct nsvm_invalidation {
	unsigned long start;
	unsigned long end;
	unsigned long cur_seq;
	_Bool blockable;
	_Bool own_migration;
	_Bool own_exclusive;
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
/* fs_reclaim_acquire(GFP_KERNEL) and its release: with lockdep, the code
 * between them counts as running in reclaim (no-ops without). */
void nsvm_fs_reclaim_acquire(void);
void nsvm_fs_reclaim_release(void);
struct mm_struct *nsvm_notifier_mm(struct nsvm_notifier *n);

/*
 * memalloc_nofs_save()/_restore(): the calling task's allocations leave
 * out __GFP_FS until the restore, which also keeps them from invoking
 * the global OOM killer.
 */
unsigned int nsvm_nofs_save(void);
void nsvm_nofs_restore(unsigned int flags);
/* Whether the OOM killer killed @mm's process (it queued @mm for reaping). */
int nsvm_mm_oom_victim(const struct mm_struct *mm);
/* Users of @mm (mm->mm_users): 0 once its address space is torn down. */
int nsvm_mm_users(const struct mm_struct *mm);
/* mm->task_size: the user address limit of @mm, page aligned. */
unsigned long nsvm_mm_task_size(const struct mm_struct *mm);
/* Bits of a user address: TASK_SIZE_MAX is below 1 << this. */
unsigned int nsvm_user_va_bits(void);

/**
 * struct nsvm_task_layout - where the C compiler put fields of task_struct
 * that the kernel crate reads through bindgen's layout.
 * @size: sizeof(struct task_struct).
 * @mm: offsetof(struct task_struct, mm).
 * @pid: offsetof(struct task_struct, pid).
 * @tgid: offsetof(struct task_struct, tgid).
 * @group_leader: offsetof(struct task_struct, group_leader).
 */
struct nsvm_task_layout {
	unsigned long size;
	unsigned long mm;
	unsigned long pid;
	unsigned long tgid;
	unsigned long group_leader;
};

void nsvm_task_layout(struct nsvm_task_layout *out);

/*
 * For KUnit: give the test's kthread an address space of its own
 * (kunit_attach_mm()) and map @len bytes of private anonymous memory in it
 * (kunit_vm_mmap()); returns the address, or 0.
 */
unsigned long nsvm_kunit_mmap(unsigned long len);

/**
 * struct nsvm_pfn - one page of an hmm_range_fault() result, decoded.
 * @page: the page, or NULL when not valid.
 * @pfn: its pfn.
 * @order: the CPU mapping order (0: 4 KiB, 9: 2 MiB PMD).
 * @valid: present in the CPU page table.
 * @write: mapped writable.
 * @error: the address cannot be accessed (no VMA, PROT_NONE, ...).
 * @device_private: a device-private page of this notifier's owner.
 */
struct nsvm_pfn {
	struct page *page;
	unsigned long pfn;
	unsigned int order;
	_Bool valid;
	_Bool write;
	_Bool error;
	_Bool device_private;
};

/*
 * hmm_range_fault_unlocked_timeout() over [@start, @end) of the notifier's
 * mm (page aligned), as Documentation/mm/hmm.rst recommends: it takes
 * mmap_read_lock itself (killably), lets fault handlers drop it (as
 * userfaultfd's do), fails an address space the OOM reaper has taken
 * (check_stable_address_space()), and retries invalidations for up to
 * HMM_RANGE_DEFAULT_TIMEOUT. Without @fault it only snapshots; with it
 * every page of the range is faulted in, writable with @write. With
 * @device, device pages of the notifier's owner are reported as they are,
 * never faulted; without, faulting migrates them to system memory.
 * @pfns has one slot per page, zeroed by the caller: HMM keeps the
 * in-out flags (HMM_PFN_DMA_MAPPED and its kind) it finds there, and with
 * no per-page request flags (pfn_flags_mask 0) reads nothing else. On
 * success *seq is the notifier sequence the result is valid for: check it
 * with nsvm_notifier_read_retry() under the driver lock before using it.
 * The caller must hold an mmget reference on the mm. Returns 0, or
 * -EFAULT, -EPERM (a write to read-only memory), -ENOMEM, -EBUSY (the
 * timeout) or -EINTR (a fatal signal).
 */
int nsvm_range_fault(struct nsvm_notifier *n, unsigned long start, unsigned long end,
		     unsigned long *pfns, _Bool fault, _Bool write, _Bool device,
		     unsigned long *seq);
void nsvm_pfn_decode(const struct nsvm_notifier *n, unsigned long hmm_pfn,
		     struct nsvm_pfn *out);

/*
 * The bits of HMM_PFN_VALID and HMM_PFN_ERROR in an hmm_range_fault()
 * result (64-bit only): an entry with neither is a hole, which callers
 * decode without nsvm_pfn_decode(). shim.c checks them against
 * <linux/hmm.h>.
 */
#define NSVM_HMM_PFN_VALID_BIT 63
#define NSVM_HMM_PFN_ERROR_BIT 61

/*
 * Device-private memory: a pagemap of MEMORY_DEVICE_PRIVATE struct pages
 * over a free physical address range (request_free_mem_region()), with
 * the driver's callbacks. Pages are named by their index in the pagemap.
 */
struct nsvm_pagemap;
struct vm_fault;

/* A device page (or folio of 2^order pages) at @index was freed: called
 * from any context, it must not sleep. */
typedef void (*nsvm_folio_free_fn)(const void *ctx, unsigned long index, unsigned int order);
/* The CPU faulted on a device page of @pm: migrate it (with its folio)
 * back to system memory. Returns 0 or a negative errno (-ENOMEM: OOM). */
typedef int (*nsvm_migrate_to_ram_fn)(const void *ctx, struct nsvm_pagemap *pm,
				      struct vm_fault *vmf);

/*
 * Create a pagemap of @size bytes (a multiple of 2 MiB) whose owner is the
 * returned pointer. Returns NULL with *err set on failure.
 */
struct nsvm_pagemap *nsvm_pagemap_create(unsigned long size, const void *ctx,
					 nsvm_folio_free_fn folio_free,
					 nsvm_migrate_to_ram_fn migrate_to_ram, int *err);
/* memunmap_pages() (waits until every page is free), release the range. */
void nsvm_pagemap_destroy(struct nsvm_pagemap *pm);
/* The first pfn; it is 2 MiB aligned. */
unsigned long nsvm_pagemap_pfn(const struct nsvm_pagemap *pm);
/* The number of pages, @size of nsvm_pagemap_create() (the struct pages
 * of the section-aligned region past them are never handed out). */
unsigned long nsvm_pagemap_npages(const struct nsvm_pagemap *pm);
/*
 * Hand out the free device page (folio of 2^@order pages) at @index:
 * refcount 1, locked, ready to be a migration destination.
 */
struct page *nsvm_pagemap_page_init(struct nsvm_pagemap *pm, unsigned long index,
				    unsigned int order);
/* The device page a CPU fault hit, for a migrate_to_ram callback. */
struct page *nsvm_fault_page(const struct vm_fault *vmf);
/* The faulting address of @vmf. */
unsigned long nsvm_fault_address(const struct vm_fault *vmf);

/* copy_highpage() and clear_highpage(). */
void nsvm_copy_page(struct page *dst, struct page *src);
void nsvm_clear_page(struct page *page);
/* memcpy_from_page() and memcpy_to_page(): @offset + @len within the page. */
void nsvm_page_read(struct page *page, unsigned long offset, void *to, unsigned long len);
void nsvm_page_write(struct page *page, unsigned long offset, const void *from,
		     unsigned long len);
/*
 * atomic64_fetch_add() (@wide) or atomic_fetch_add() of @value at @offset
 * of @page (aligned); returns the old value.
 */
unsigned long long nsvm_page_atomic_add(struct page *page, unsigned long offset,
					unsigned long long value, _Bool wide);

/*
 * Migration (migrate_vma_* and migrate_device_*), for at most
 * NSVM_MIGRATE_MAX_PAGES pages at a time. C owns struct migrate_vma and
 * the pfn arrays; the driver reads sources and sets destinations by index.
 */
#define NSVM_MIGRATE_MAX_PAGES 512
struct nsvm_migrate;

/**
 * struct nsvm_mpfn - one source entry of a migration, decoded.
 * @page: the source page, NULL for a hole (pte_none) or the zero page.
 * @pfn: its pfn (0 without a page).
 * @migrate: the entry is selected for migration (after
 *	nsvm_migrate_pages(): it was migrated).
 * @write: the page was mapped writable.
 * @order: the entry is the head of a folio of 2^order pages (the
 *	following entries are part of it), 0 for a single page.
 */
struct nsvm_mpfn {
	struct page *page;
	unsigned long pfn;
	_Bool migrate;
	_Bool write;
	unsigned int order;
};

enum nsvm_migrate_dir {
	NSVM_MIGRATE_TO_DEVICE = 0,
	NSVM_MIGRATE_TO_SYSTEM = 1,
};

struct nsvm_migrate *nsvm_migrate_alloc(void);
void nsvm_migrate_free(struct nsvm_migrate *m);
/*
 * migrate_vma_setup() over [start, min(end, start + 2 MiB, VMA end)),
 * under mmap_read_lock of @mm (asserted); 2 MiB folios are selected whole.
 * To the device, system pages are selected; to the system, the device
 * pages of @owner. The range used is returned in *out_end. -EFAULT when no
 * VMA holds @start, with *out_end set to where the next VMA starts (at most
 * @end); -EINVAL when the VMA cannot migrate (PROT_NONE, hugetlb, VM_IO,
 * VM_PFNMAP, DAX), with *out_end set to its end.
 */
int nsvm_migrate_setup(struct nsvm_migrate *m, struct mm_struct *mm, unsigned long start,
		       unsigned long end, void *owner, enum nsvm_migrate_dir dir,
		       unsigned long *out_end);
/* For a migrate_to_ram callback: the faulting folio (whole if it is
 * PMD-mapped), to system memory. */
int nsvm_migrate_setup_fault(struct nsvm_migrate *m, struct vm_fault *vmf, void *owner);
/* migrate_device_range() over @npages device pages from @pfn (eviction). */
void nsvm_migrate_setup_device(struct nsvm_migrate *m, unsigned long pfn,
			       unsigned long npages);
unsigned long nsvm_migrate_npages(const struct nsvm_migrate *m);
void nsvm_migrate_src(const struct nsvm_migrate *m, unsigned long i, struct nsvm_mpfn *out);
/*
 * Destination of entry @i, mapped writable with @write: a locked device
 * page from nsvm_pagemap_page_init(). A folio of the entry's order moves
 * it whole; single pages for each entry of a folio split it.
 */
void nsvm_migrate_set_dst(struct nsvm_migrate *m, unsigned long i, struct page *page,
			  _Bool write);
/* Allocate a locked system folio of 2^@order pages as destination of
 * entry @i, as nsvm_migrate_set_dst() would; NULL if none is free. */
struct page *nsvm_migrate_alloc_dst(struct nsvm_migrate *m, unsigned long i,
				    unsigned int order, _Bool write);
/* Drop every destination set so far (before nsvm_migrate_pages()): the
 * finalize then restores all sources. */
void nsvm_migrate_abort(struct nsvm_migrate *m);
/* migrate_vma_pages() / migrate_device_pages(). */
void nsvm_migrate_pages(struct nsvm_migrate *m);
/* migrate_vma_finalize() / migrate_device_finalize(). */
void nsvm_migrate_finalize(struct nsvm_migrate *m);

/* mmap_read_lock_killable() (0 or -EINTR) and mmap_read_unlock() of @mm. */
int nsvm_mmap_read_lock_killable(struct mm_struct *mm);
void nsvm_mmap_read_unlock(struct mm_struct *mm);

/*
 * Fault the page at @addr of @mm in writable and PTE-mapped (splitting a
 * PMD), under mmap_read_lock of @mm: a device-exclusive entry there goes
 * back to a normal one. make_device_exclusive() then finds the page as it
 * wants it and raises no invalidation but its own.
 */
int nsvm_fault_in_write(struct mm_struct *mm, unsigned long addr);
/*
 * make_device_exclusive() for @owner under mmap_read_lock of @mm: returns
 * the page, its folio locked and referenced, or NULL with *err set.
 * Release with nsvm_page_unlock_put().
 */
struct page *nsvm_make_exclusive(struct mm_struct *mm, unsigned long addr, void *owner,
				 int *err);
/* Unlock and put the folio of @page. */
void nsvm_page_unlock_put(struct page *page);

/*
 * Pin the @npages pages of the current process from @addr for writing
 * (pin_user_pages_fast() with FOLL_WRITE) into @pages: 0, or -EFAULT
 * (nothing stays pinned) if not all of them could be. Release with
 * nsvm_unpin_user_dirty().
 */
int nsvm_pin_user_write(unsigned long addr, unsigned long npages, struct page **pages);
/* Mark dirty and unpin what nsvm_pin_user_write() pinned. */
void nsvm_unpin_user_dirty(struct page **pages, unsigned long npages);

#endif /* NSVM_MM_SHIM_H */
