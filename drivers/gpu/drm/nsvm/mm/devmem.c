// SPDX-License-Identifier: GPL-2.0
/*
 * nsvm mm shim, device memory: the device-private pagemap, migrate_vma and
 * migrate_device, and exclusive access, for the safe Rust types in
 * mm/pagemap.rs and mm/migrate.rs. See shim.h for the contract of each
 * call.
 */

#include <linux/atomic.h>
#include <linux/highmem.h>
#include <linux/huge_mm.h>
#include <linux/ioport.h>
#include <linux/memremap.h>
#include <linux/migrate.h>
#include <linux/mm.h>
#include <linux/rmap.h>
#include <linux/slab.h>

#include "shim.h"

struct nsvm_pagemap {
	struct dev_pagemap pgmap;
	const void *ctx;
	nsvm_folio_free_fn folio_free;
	nsvm_migrate_to_ram_fn migrate_to_ram;
	unsigned long pfn;
	/* Pages asked for; the region is section aligned, so it may be larger. */
	unsigned long npages;
};

static struct nsvm_pagemap *to_nsvm_pagemap(struct dev_pagemap *pgmap)
{
	return container_of(pgmap, struct nsvm_pagemap, pgmap);
}

static void nsvm_pagemap_folio_free(struct folio *folio)
{
	struct nsvm_pagemap *pm = to_nsvm_pagemap(page_pgmap(&folio->page));

	pm->folio_free(pm->ctx, folio_pfn(folio) - pm->pfn, folio_order(folio));
}

static vm_fault_t nsvm_pagemap_migrate_to_ram(struct vm_fault *vmf)
{
	struct nsvm_pagemap *pm = to_nsvm_pagemap(page_pgmap(vmf->page));
	int ret = pm->migrate_to_ram(pm->ctx, pm, vmf);

	if (ret == -ENOMEM)
		return VM_FAULT_OOM;
	return ret ? VM_FAULT_SIGBUS : 0;
}

/*
 * No folio_split callback: the driver names device pages by pfn, so a
 * split folio needs no per-page data moved.
 */
static const struct dev_pagemap_ops nsvm_pagemap_ops = {
	.folio_free = nsvm_pagemap_folio_free,
	.migrate_to_ram = nsvm_pagemap_migrate_to_ram,
};

struct nsvm_pagemap *nsvm_pagemap_create(unsigned long size, const void *ctx,
					 nsvm_folio_free_fn folio_free,
					 nsvm_migrate_to_ram_fn migrate_to_ram, int *err)
{
	struct nsvm_pagemap *pm;
	struct resource *res;
	void *addr;

	if (!size || !IS_ALIGNED(size, PMD_SIZE)) {
		*err = -EINVAL;
		return NULL;
	}
	pm = kzalloc(sizeof(*pm), GFP_KERNEL);
	if (!pm) {
		*err = -ENOMEM;
		return NULL;
	}
	/* Section aligned, so 2 MiB folios are naturally aligned. */
	res = request_free_mem_region(&iomem_resource, size, "nsvm");
	if (IS_ERR(res)) {
		*err = PTR_ERR(res);
		goto free;
	}
	pm->ctx = ctx;
	pm->folio_free = folio_free;
	pm->migrate_to_ram = migrate_to_ram;
	pm->pfn = res->start >> PAGE_SHIFT;
	pm->npages = size >> PAGE_SHIFT;
	pm->pgmap.type = MEMORY_DEVICE_PRIVATE;
	pm->pgmap.range.start = res->start;
	pm->pgmap.range.end = res->end;
	pm->pgmap.nr_range = 1;
	pm->pgmap.ops = &nsvm_pagemap_ops;
	pm->pgmap.owner = pm;
	addr = memremap_pages(&pm->pgmap, numa_node_id());
	if (IS_ERR(addr)) {
		*err = PTR_ERR(addr);
		goto release;
	}
	return pm;

release:
	release_mem_region(res->start, resource_size(res));
free:
	kfree(pm);
	return NULL;
}

void nsvm_pagemap_destroy(struct nsvm_pagemap *pm)
{
	memunmap_pages(&pm->pgmap);
	release_mem_region(pm->pgmap.range.start, range_len(&pm->pgmap.range));
	kfree(pm);
}

unsigned long nsvm_pagemap_pfn(const struct nsvm_pagemap *pm)
{
	return pm->pfn;
}

struct page *nsvm_pagemap_page_init(struct nsvm_pagemap *pm, unsigned long index,
				    unsigned int order)
{
	struct page *page = pfn_to_page(pm->pfn + index);

	zone_device_page_init(page, &pm->pgmap, order);
	return page;
}

unsigned long nsvm_pagemap_npages(const struct nsvm_pagemap *pm)
{
	return pm->npages;
}

unsigned long nsvm_fault_address(const struct vm_fault *vmf)
{
	return vmf->address;
}

struct page *nsvm_fault_page(const struct vm_fault *vmf)
{
	return vmf->page;
}

void nsvm_copy_page(struct page *dst, struct page *src)
{
	copy_highpage(dst, src);
}

void nsvm_clear_page(struct page *page)
{
	clear_highpage(page);
}

void nsvm_page_read(struct page *page, unsigned long offset, void *to, unsigned long len)
{
	memcpy_from_page(to, page, offset, len);
}

void nsvm_page_write(struct page *page, unsigned long offset, const void *from,
		     unsigned long len)
{
	memcpy_to_page(page, offset, from, len);
}

unsigned long long nsvm_page_atomic_add(struct page *page, unsigned long offset,
					unsigned long long value, bool wide)
{
	void *addr = kmap_local_page(page) + offset;
	unsigned long long old;

	if (wide)
		old = atomic64_fetch_add(value, addr);
	else
		old = (u32)atomic_fetch_add((u32)value, addr);
	kunmap_local(addr);
	return old;
}

struct nsvm_migrate {
	struct migrate_vma args;
	/* Set up by migrate_device_range(): no VMA. */
	bool device;
	unsigned long npages;
	unsigned long src[NSVM_MIGRATE_MAX_PAGES];
	unsigned long dst[NSVM_MIGRATE_MAX_PAGES];
};

struct nsvm_migrate *nsvm_migrate_alloc(void)
{
	/* Failure is the caller's -ENOMEM, not a warning (injected or not). */
	return kvzalloc(sizeof(struct nsvm_migrate), GFP_KERNEL | __GFP_NOWARN);
}

void nsvm_migrate_free(struct nsvm_migrate *m)
{
	kvfree(m);
}

static void nsvm_migrate_reset(struct nsvm_migrate *m)
{
	memset(&m->args, 0, sizeof(m->args));
	memset(m->dst, 0, sizeof(m->dst));
	m->args.src = m->src;
	m->args.dst = m->dst;
	m->device = false;
	m->npages = 0;
}

int nsvm_migrate_setup(struct nsvm_migrate *m, struct mm_struct *mm, unsigned long start,
		       unsigned long end, void *owner, enum nsvm_migrate_dir dir,
		       unsigned long *out_end)
{
	struct vm_area_struct *vma;
	int ret;

	mmap_assert_locked(mm);
	nsvm_migrate_reset(m);
	vma = find_vma(mm, start);
	if (!vma || vma->vm_start > start) {
		*out_end = vma ? min(vma->vm_start, end) : end;
		return -EFAULT;
	}
	if (!(vma->vm_flags & VM_READ)) {
		*out_end = vma->vm_end;
		return -EINVAL;
	}
	end = min3(end, ALIGN_DOWN(start, PMD_SIZE) + PMD_SIZE, vma->vm_end);
	*out_end = end;
	m->args.vma = vma;
	m->args.start = start;
	m->args.end = end;
	m->args.pgmap_owner = owner;
	m->args.flags = MIGRATE_VMA_SELECT_COMPOUND |
			(dir == NSVM_MIGRATE_TO_DEVICE ? MIGRATE_VMA_SELECT_SYSTEM :
							 MIGRATE_VMA_SELECT_DEVICE_PRIVATE);
	m->npages = (end - start) >> PAGE_SHIFT;
	ret = migrate_vma_setup(&m->args);
	if (ret == -EINVAL)
		*out_end = vma->vm_end;
	if (ret)
		m->npages = 0;
	return ret;
}

int nsvm_migrate_setup_fault(struct nsvm_migrate *m, struct vm_fault *vmf, void *owner)
{
	/* A PTE-mapped folio migrates page by page; a PMD-mapped one whole. */
	unsigned int order = vmf->pte ? 0 : folio_order(page_folio(vmf->page));
	unsigned long size = PAGE_SIZE << order;
	int ret;

	nsvm_migrate_reset(m);
	m->args.vma = vmf->vma;
	m->args.start = ALIGN_DOWN(vmf->address, size);
	m->args.end = m->args.start + size;
	m->args.pgmap_owner = owner;
	m->args.flags = MIGRATE_VMA_SELECT_DEVICE_PRIVATE |
			(order ? MIGRATE_VMA_SELECT_COMPOUND : 0);
	m->args.fault_page = vmf->page;
	m->npages = size >> PAGE_SHIFT;
	ret = migrate_vma_setup(&m->args);
	if (ret)
		m->npages = 0;
	return ret;
}

void nsvm_migrate_setup_device(struct nsvm_migrate *m, unsigned long pfn,
			       unsigned long npages)
{
	nsvm_migrate_reset(m);
	m->device = true;
	m->npages = min(npages, (unsigned long)NSVM_MIGRATE_MAX_PAGES);
	migrate_device_range(m->src, pfn, m->npages);
}

unsigned long nsvm_migrate_npages(const struct nsvm_migrate *m)
{
	return m->npages;
}

void nsvm_migrate_src(const struct nsvm_migrate *m, unsigned long i, struct nsvm_mpfn *out)
{
	unsigned long mpfn = m->src[i];

	out->page = migrate_pfn_to_page(mpfn);
	out->pfn = out->page ? page_to_pfn(out->page) : 0;
	out->migrate = mpfn & MIGRATE_PFN_MIGRATE;
	out->write = mpfn & MIGRATE_PFN_WRITE;
	out->order = 0;
	if (mpfn & MIGRATE_PFN_COMPOUND)
		out->order = out->page ? folio_order(page_folio(out->page)) : HPAGE_PMD_ORDER;
}

static unsigned long nsvm_migrate_dst(struct page *page, bool write)
{
	unsigned long mpfn = migrate_pfn(page_to_pfn(page));

	if (write)
		mpfn |= MIGRATE_PFN_WRITE;
	if (folio_test_large(page_folio(page)))
		mpfn |= MIGRATE_PFN_COMPOUND;
	return mpfn;
}

void nsvm_migrate_set_dst(struct nsvm_migrate *m, unsigned long i, struct page *page,
			  bool write)
{
	m->dst[i] = nsvm_migrate_dst(page, write);
}

struct page *nsvm_migrate_alloc_dst(struct nsvm_migrate *m, unsigned long i,
				    unsigned int order, bool write)
{
	struct folio *folio;

	if (m->device)
		folio = folio_alloc(GFP_HIGHUSER_MOVABLE, order);
	else
		folio = vma_alloc_folio(GFP_HIGHUSER_MOVABLE, order, m->args.vma,
					m->args.start + (i << PAGE_SHIFT));
	if (!folio)
		return NULL;
	folio_lock(folio);
	m->dst[i] = nsvm_migrate_dst(&folio->page, write);
	return &folio->page;
}

void nsvm_migrate_abort(struct nsvm_migrate *m)
{
	unsigned long i;

	for (i = 0; i < m->npages; i++) {
		struct page *page = migrate_pfn_to_page(m->dst[i]);

		if (page)
			nsvm_page_unlock_put(page);
		m->dst[i] = 0;
	}
}

void nsvm_migrate_pages(struct nsvm_migrate *m)
{
	if (m->device)
		migrate_device_pages(m->src, m->dst, m->npages);
	else
		migrate_vma_pages(&m->args);
}

void nsvm_migrate_finalize(struct nsvm_migrate *m)
{
	if (m->device)
		migrate_device_finalize(m->src, m->dst, m->npages);
	else
		migrate_vma_finalize(&m->args);
}

int nsvm_mmap_read_lock_killable(struct mm_struct *mm)
{
	return mmap_read_lock_killable(mm);
}

void nsvm_mmap_read_unlock(struct mm_struct *mm)
{
	mmap_read_unlock(mm);
}

int nsvm_fault_in_write(struct mm_struct *mm, unsigned long addr)
{
	struct page *page;
	long ret;

	mmap_assert_locked(mm);
	ret = get_user_pages_remote(mm, addr, 1, FOLL_WRITE | FOLL_SPLIT_PMD, &page, NULL);
	if (ret == 1) {
		put_page(page);
		return 0;
	}
	return ret < 0 ? ret : -EFAULT;
}

struct page *nsvm_make_exclusive(struct mm_struct *mm, unsigned long addr, void *owner,
				 int *err)
{
	struct folio *folio;
	struct page *page = make_device_exclusive(mm, addr, owner, &folio);

	if (IS_ERR(page)) {
		*err = PTR_ERR(page);
		return NULL;
	}
	return page;
}

void nsvm_page_unlock_put(struct page *page)
{
	struct folio *folio = page_folio(page);

	folio_unlock(folio);
	folio_put(folio);
}

int nsvm_pin_user_write(unsigned long addr, unsigned long npages, struct page **pages)
{
	long ret = pin_user_pages_fast(addr, npages, FOLL_WRITE, pages);

	if (ret == npages)
		return 0;
	if (ret > 0)
		unpin_user_pages(pages, ret);
	return -EFAULT;
}

void nsvm_unpin_user_dirty(struct page **pages, unsigned long npages)
{
	unpin_user_pages_dirty_lock(pages, npages, true);
}
