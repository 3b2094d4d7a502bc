/* SPDX-License-Identifier: MIT */
/*
 * nsvm: shared virtual memory for a Nouveau-style GPU.
 *
 * This header is the source of truth of the nsvm uapi. The Rust bindings of
 * the driver and of the userspace crate are generated from it by
 * scripts/gen-bindings.sh; never edit those by hand.
 */
#ifndef __NSVM_DRM_H__
#define __NSVM_DRM_H__

#include "drm.h"

#if defined(__cplusplus)
extern "C" {
#endif

/**
 * DOC: nsvm uapi conventions
 *
 * - Every ioctl struct is 64-bit aligned with explicit padding; padding and
 *   reserved fields must be zero on input, else the ioctl fails with
 *   -EINVAL.
 * - Every ioctl struct starts with a @size field that userspace sets to the
 *   size of the struct it was compiled with. The DRM core silently
 *   zero-extends or truncates ioctl arguments of another size; nsvm rejects
 *   them instead: a @size other than the one the kernel knows fails with
 *   -EINVAL. Later revisions that grow a struct accept the older sizes.
 * - Errors are negative errno values; each ioctl documents the ones it
 *   returns. An ioctl number nsvm does not know fails with -EINVAL (from the
 *   DRM core).
 * - Every address range an ioctl takes (MIGRATE and SET_ATTR ranges,
 *   SNAPSHOT's pages, each operand of each EXEC command, a READ's
 *   destination included) must lie below the user address limit of the
 *   calling process: TASK_SIZE of its address space, the end of the last
 *   page below 2^DRM_NSVM_PARAM_VA_BITS (2^47 - 4096 on x86-64, 2^56 - 4096
 *   with 5-level paging). A range that reaches past it, or past 2^64,
 *   fails with -EINVAL before anything is done.
 */

/** DRM_NSVM_UAPI_MAJOR - incompatible uapi revisions bump this. */
#define DRM_NSVM_UAPI_MAJOR 0
/** DRM_NSVM_UAPI_MINOR - compatible additions bump this. */
#define DRM_NSVM_UAPI_MINOR 6

#define DRM_NSVM_GET_PARAM 0x00
#define DRM_NSVM_SVM_INIT 0x01
#define DRM_NSVM_EXEC 0x02
#define DRM_NSVM_SNAPSHOT 0x03
#define DRM_NSVM_MIGRATE 0x04
#define DRM_NSVM_SET_ATTR 0x05
#define DRM_NSVM_QUEUE_CREATE 0x06
#define DRM_NSVM_QUEUE_DESTROY 0x07
#define DRM_NSVM_SUBMIT 0x08
#define DRM_NSVM_WAIT 0x09
#define DRM_NSVM_QUEUE_QUERY 0x0a

/**
 * enum drm_nsvm_param - what DRM_IOCTL_NSVM_GET_PARAM can report.
 *
 * @DRM_NSVM_PARAM_UAPI_VERSION: (DRM_NSVM_UAPI_MAJOR << 16) |
 *	DRM_NSVM_UAPI_MINOR of the running driver.
 * @DRM_NSVM_PARAM_FEATURES: mask of DRM_NSVM_FEATURE_* bits.
 * @DRM_NSVM_PARAM_PAGE_SIZES: mask of the page sizes the GPU page table can
 *	map; bit n set means pages of 2^n bytes.
 * @DRM_NSVM_PARAM_VA_BITS: width of a GPU virtual address: the width of a
 *	user address on this machine (47, or 56 with 5-level paging). The
 *	GPU can reach every address below the user address limit, which
 *	lies below 2^VA_BITS (see "nsvm uapi conventions").
 * @DRM_NSVM_PARAM_VRAM_SIZE: device memory in bytes (0: none yet).
 * @DRM_NSVM_PARAM_DEVICE_INDEX: index of the device among nsvm devices.
 * @DRM_NSVM_PARAM_COUNT: number of params; not a param.
 */
enum drm_nsvm_param {
	DRM_NSVM_PARAM_UAPI_VERSION = 0,
	DRM_NSVM_PARAM_FEATURES = 1,
	DRM_NSVM_PARAM_PAGE_SIZES = 2,
	DRM_NSVM_PARAM_VA_BITS = 3,
	DRM_NSVM_PARAM_VRAM_SIZE = 4,
	DRM_NSVM_PARAM_DEVICE_INDEX = 5,
	DRM_NSVM_PARAM_COUNT,
};

/*
 * Feature bits reported by DRM_NSVM_PARAM_FEATURES. Each names a group of
 * ioctls; a bit is set once the group works on this driver and device.
 */
/** DRM_NSVM_FEATURE_SVM - SVM_INIT, EXEC and SNAPSHOT work. */
#define DRM_NSVM_FEATURE_SVM (1ull << 0)
/**
 * DRM_NSVM_FEATURE_DEVICE_MEMORY - the device has memory: MIGRATE,
 * SET_ATTR and DRM_NSVM_SNAPSHOT_CPU work.
 */
#define DRM_NSVM_FEATURE_DEVICE_MEMORY (1ull << 1)
/**
 * DRM_NSVM_FEATURE_QUEUES - asynchronous submission: QUEUE_CREATE,
 * QUEUE_DESTROY, SUBMIT, WAIT, QUEUE_QUERY and DRM_NSVM_OP_SEM_WAIT work.
 * Since uapi 0.5.
 */
#define DRM_NSVM_FEATURE_QUEUES (1ull << 2)
/**
 * DRM_NSVM_FEATURE_SYNCOBJ - the DRM sync object ioctls work (binary and
 * timeline: DRM_CAP_SYNCOBJ, DRM_CAP_SYNCOBJ_TIMELINE), and SUBMIT takes
 * sync objects as in-fences (struct drm_nsvm_sync). Since uapi 0.6.
 */
#define DRM_NSVM_FEATURE_SYNCOBJ (1ull << 3)

/**
 * struct drm_nsvm_get_param - argument of DRM_IOCTL_NSVM_GET_PARAM.
 *
 * Errors: -EINVAL for a @size other than sizeof(struct drm_nsvm_get_param),
 * an unknown @param, or a non-zero @pad.
 */
struct drm_nsvm_get_param {
	/** @size: in, sizeof(struct drm_nsvm_get_param). */
	__u32 size;
	/** @param: in, one of enum drm_nsvm_param. */
	__u32 param;
	/** @value: out, the value of @param. */
	__u64 value;
	/** @pad: in, must be zero. */
	__u64 pad;
};

/**
 * DOC: SVM lifetime rules
 *
 * SVM_INIT binds the file's mirror to the calling process's address space
 * for the life of the file. Every other SVM ioctl then:
 *
 * - fails with -ENOENT before SVM_INIT;
 * - fails with -EPERM from a process whose address space is not the
 *   mirror's (an fd inherited across fork() or passed with SCM_RIGHTS):
 *   no process reaches another's memory through nsvm;
 * - fails with -ESRCH once the mirrored address space is gone (its process
 *   exited), without any kernel warning.
 *
 * Closing the file, from any process and at any time, tears the mirror
 * down.
 *
 * A device can be removed while files use it (its platform device
 * unbound, the module unloaded): every ioctl then fails with -ENODEV,
 * EXECs and WAITs in progress among them, and jobs end with -ENODEV;
 * what was in device memory is back in system memory, with its data. The
 * files close as usual. A device bound again is a new DRM device, with
 * new nodes.
 */

/**
 * struct drm_nsvm_svm_init - argument of DRM_IOCTL_NSVM_SVM_INIT.
 *
 * Errors: -EINVAL for a bad @size, non-zero @flags or @pad, or a
 * @fault_window that is not 0 or a power of two from 4 KiB to 1 GiB;
 * -EBUSY if the file is already bound.
 */
struct drm_nsvm_svm_init {
	/** @size: in, sizeof(struct drm_nsvm_svm_init). */
	__u32 size;
	/** @flags: in, must be zero. */
	__u32 flags;
	/**
	 * @fault_window: in, bytes the fault handler maps around a faulting
	 * address (aligned to it, clipped to the user address limit): what
	 * the CPU has there is mapped, and missing pages are faulted in
	 * within the 64 KiB blocks of the window's faulting addresses whose
	 * own page needs a CPU fault (a fault on a page the CPU maps as the
	 * access needs faults nothing in around it), writable only in those
	 * of write faults; a neighbour that cannot be
	 * faulted in is left out (only the faulting page's own failure fails
	 * the access); 0 for the default, 2 MiB.
	 */
	__u64 fault_window;
	/** @pad: in, must be zero. */
	__u64 pad;
};

/**
 * enum drm_nsvm_op - what a struct drm_nsvm_cmd asks the GPU to do.
 *
 * Addresses are GPU virtual addresses, which under SVM are the process's
 * CPU pointers. Each access goes through the GPU page table; a miss raises
 * a GPU page fault that the driver serves from the CPU page tables.
 *
 * @DRM_NSVM_OP_FILL: write @len bytes at @dst, repeating the 8 bytes of
 *	@value (little endian) from @dst on.
 * @DRM_NSVM_OP_COPY: copy @len bytes from @src to @dst (the ranges must not
 *	overlap).
 * @DRM_NSVM_OP_ATOMIC_ADD32: add the low 32 bits of @value to the u32 at
 *	@dst (4-byte aligned); @value receives the old value. How the access
 *	is made atomic depends on the range's DRM_NSVM_ATOMIC_* attribute.
 * @DRM_NSVM_OP_ATOMIC_ADD64: add @value to the u64 at @dst (8-byte
 *	aligned); @value receives the old value.
 * @DRM_NSVM_OP_READ: the GPU reads @len bytes at @src and the driver copies
 *	them to the plain user buffer @dst (not through the GPU).
 * @DRM_NSVM_OP_AXPY32: the vector operation y = a * x + y on u32 elements
 *	(wrapping, little endian): for each of the @len / 4 elements,
 *	dst[i] = dst[i] + (__u32)@value * src[i]. @src, @dst and @len are
 *	multiples of 4 and the ranges do not overlap. Since uapi 0.4; older
 *	drivers fail it with -EINVAL.
 * @DRM_NSVM_OP_SEM_WAIT: a semaphore acquire: the GPU reads the u64 at
 *	@dst (8-byte aligned; @src and @len zero) until it is at least
 *	@value, polling it about every millisecond through the GPU page
 *	table (so it faults like a read). Waiting is no progress: a wait
 *	longer than the queue's timeout fails it with -ETIMEDOUT. Since
 *	uapi 0.5.
 */
enum drm_nsvm_op {
	DRM_NSVM_OP_FILL = 1,
	DRM_NSVM_OP_COPY = 2,
	DRM_NSVM_OP_ATOMIC_ADD32 = 3,
	DRM_NSVM_OP_ATOMIC_ADD64 = 4,
	DRM_NSVM_OP_READ = 5,
	DRM_NSVM_OP_AXPY32 = 6,
	DRM_NSVM_OP_SEM_WAIT = 7,
};

/**
 * struct drm_nsvm_cmd - one GPU command of an EXEC.
 */
struct drm_nsvm_cmd {
	/** @op: one of enum drm_nsvm_op. */
	__u32 op;
	/** @flags: must be zero. */
	__u32 flags;
	/** @dst: destination address, see enum drm_nsvm_op. */
	__u64 dst;
	/** @src: source address, see enum drm_nsvm_op. */
	__u64 src;
	/** @len: length in bytes, at most DRM_NSVM_CMD_MAX_LEN. */
	__u64 len;
	/** @value: operand, and result of atomics (written back). */
	__u64 value;
};

/** DRM_NSVM_EXEC_MAX_CMDS - most commands in one EXEC. */
#define DRM_NSVM_EXEC_MAX_CMDS 1024
/** DRM_NSVM_CMD_MAX_LEN - most bytes one command touches. */
#define DRM_NSVM_CMD_MAX_LEN (1ull << 30)

/**
 * struct drm_nsvm_exec - argument of DRM_IOCTL_NSVM_EXEC.
 *
 * Runs the commands in order on the GPU and returns when they are done
 * (or when a signal interrupted them: -EINTR): a submission to a channel
 * of its own and a wait, served like any queue's by the device's fault
 * handler. A GPU fault the
 * driver cannot serve (no VMA, PROT_NONE, a write to read-only memory)
 * stops the EXEC: it fails with -EFAULT, @completed counts the commands
 * that completed and @fault_addr names the address; commands already run
 * stay done, and nothing of the failing command's fault is left mapped.
 *
 * Errors: -EINVAL for a bad @size, non-zero @flags or @pad, a @cmd_size
 * other than sizeof(struct drm_nsvm_cmd), more than DRM_NSVM_EXEC_MAX_CMDS
 * commands, or a command with an unknown op, non-zero flags, a length over
 * DRM_NSVM_CMD_MAX_LEN, an unaligned atomic, overlapping copy ranges or an
 * operand past the user address limit (the whole list is checked before
 * any command runs); -EFAULT for an unreadable @cmds array, an unwritable
 * READ buffer, or a GPU fault that cannot be served (see above); -ENOENT,
 * -EPERM, -ESRCH: see "SVM lifetime rules"; -EBUSY if invalidations
 * kept undoing a fault for a second; -ETIMEDOUT if a command made no
 * progress (a page of it done, or a fault of it served) for the driver's
 * job timeout (module parameter
 * job_timeout_ms, a SEM_WAIT that is never satisfied); -EINTR if a signal
 * interrupted it: it stops the running command within a few pages, and
 * the commands after it do not run (the interrupted command may be partly
 * done; @completed counts those that completed).
 */
struct drm_nsvm_exec {
	/** @size: in, sizeof(struct drm_nsvm_exec). */
	__u32 size;
	/** @num_cmds: in, number of commands at @cmds. */
	__u32 num_cmds;
	/** @cmds: in, user pointer to struct drm_nsvm_cmd[@num_cmds]. */
	__u64 cmds;
	/** @cmd_size: in, sizeof(struct drm_nsvm_cmd). */
	__u32 cmd_size;
	/** @flags: in, must be zero. */
	__u32 flags;
	/** @fault_addr: out, the address of an unserved GPU fault. */
	__u64 fault_addr;
	/** @completed: out, commands that completed. */
	__u32 completed;
	/** @fault_write: out, the unserved fault was a write. */
	__u32 fault_write;
};

/*
 * States of one page in a snapshot (struct drm_nsvm_snapshot); bits of
 * one byte per page.
 */
/** DRM_NSVM_PTE_VALID - mapped in the GPU page table. */
#define DRM_NSVM_PTE_VALID (1 << 0)
/** DRM_NSVM_PTE_WRITE - mapped writable. */
#define DRM_NSVM_PTE_WRITE (1 << 1)
/** DRM_NSVM_PTE_HUGE - part of a 2 MiB GPU mapping. */
#define DRM_NSVM_PTE_HUGE (1 << 2)
/** DRM_NSVM_PTE_DEVICE - backed by device memory. */
#define DRM_NSVM_PTE_DEVICE (1 << 3)
/** DRM_NSVM_PTE_ATOMIC - usable by GPU atomics (see DRM_NSVM_ATOMIC_*). */
#define DRM_NSVM_PTE_ATOMIC (1 << 4)

/**
 * DRM_NSVM_SNAPSHOT_CPU - SNAPSHOT flag: report the CPU side instead of
 * the GPU page table: VALID for a page present in the CPU page table (or
 * in this device's memory), WRITE if writable, HUGE if part of a 2 MiB
 * mapping, DEVICE if it lives in this device's memory. Pages in another
 * device's memory read as not present.
 */
#define DRM_NSVM_SNAPSHOT_CPU (1u << 0)

/** DRM_NSVM_SNAPSHOT_MAX_PAGES - most pages one SNAPSHOT reports. */
#define DRM_NSVM_SNAPSHOT_MAX_PAGES (1u << 20)

/**
 * struct drm_nsvm_counters - per-file SVM counters.
 */
struct drm_nsvm_counters {
	/** @faults: GPU page faults raised. */
	__u64 faults;
	/** @batches: fault batches served. */
	__u64 batches;
	/** @retries: range faults retried because an invalidation raced. */
	__u64 retries;
	/** @invalidations: invalidation callbacks that dropped GPU mappings. */
	__u64 invalidations;
	/** @pages_mapped: GPU page-table entries written. */
	__u64 pages_mapped;
	/** @pages_unmapped: GPU page-table entries dropped. */
	__u64 pages_unmapped;
};

/**
 * struct drm_nsvm_snapshot - argument of DRM_IOCTL_NSVM_SNAPSHOT.
 *
 * Reports the GPU page-table state of [@start, @start + @npages pages):
 * one byte of DRM_NSVM_PTE_* bits per page at @states; and the file's
 * counters. It neither faults nor changes anything; @npages may be 0 to
 * read the counters only.
 *
 * Errors: -EINVAL for a bad @size, non-zero @flags, an unaligned @start,
 * more than DRM_NSVM_SNAPSHOT_MAX_PAGES pages or pages past the user
 * address limit; -EFAULT for an unwritable @states; with
 * DRM_NSVM_SNAPSHOT_CPU, -EBUSY when invalidations keep colliding with
 * the walk for a second and -EINTR for a fatal signal; -ENOENT, -EPERM,
 * -ESRCH: see "SVM lifetime rules".
 */
struct drm_nsvm_snapshot {
	/** @size: in, sizeof(struct drm_nsvm_snapshot). */
	__u32 size;
	/** @flags: in, zero or DRM_NSVM_SNAPSHOT_CPU. */
	__u32 flags;
	/** @start: in, first address, page aligned. */
	__u64 start;
	/** @npages: in, number of pages. */
	__u64 npages;
	/** @states: in, user pointer to __u8[@npages]. */
	__u64 states;
	/** @counters: out, the file's counters. */
	struct drm_nsvm_counters counters;
};

/**
 * enum drm_nsvm_mem - where memory lives.
 * @DRM_NSVM_MEM_SYSTEM: system memory.
 * @DRM_NSVM_MEM_DEVICE: this device's memory.
 */
enum drm_nsvm_mem {
	DRM_NSVM_MEM_SYSTEM = 0,
	DRM_NSVM_MEM_DEVICE = 1,
};

/** DRM_NSVM_MIGRATE_MAX_LEN - most bytes one MIGRATE covers. */
#define DRM_NSVM_MIGRATE_MAX_LEN (1ull << 40)

/**
 * struct drm_nsvm_migrate - argument of DRM_IOCTL_NSVM_MIGRATE.
 * Moves the pages of [@start, @start + @length) to @target: a prefetch.
 * Pages move in steps of up to 2 MiB; a 2 MiB-aligned THP moves as one
 * 2 MiB device folio, and back. Each page either moves whole, with its
 * data, or stays where it was: there is no half-moved page. What cannot
 * move is reported, not an error:
 * - holes, PROT_NONE, hugetlb and I/O mappings are skipped;
 * - pages already at @target, and pages in another device's memory, are
 *   not selected;
 * - pages busy at the time (locked, pinned, off the LRU, or referenced
 *   by someone else: an I/O, a pipe holding vmspliced pages) stay where
 *   they are and are in neither count, as the kernel's migrate_vma_setup()
 *   drops them without a word: compare @migrated + @failed with the
 *   length, and SNAPSHOT with DRM_NSVM_SNAPSHOT_CPU tells where each page
 *   is;
 * - selected pages that cannot move are counted in @failed: MAP_SHARED
 *   and file-backed pages (only anonymous memory moves to a device), and
 *   pages for which no device memory could be freed.
 * To the device, when its memory is full, the least recently used 2 MiB
 * chunks are evicted (migrated back to system memory) to make room.
 * CPU access to a page in device memory migrates it back (a 2 MiB folio
 * whole) transparently.
 * Errors: -EINVAL for a bad @size, non-zero @flags or @pad, an unknown
 * @target, an unaligned @start or @length, a @length of 0 or over
 * DRM_NSVM_MIGRATE_MAX_LEN, or a range past the user address limit;
 * -ENOMEM; -EINTR if a
 * signal interrupted it (what moved stays moved, and is counted);
 * -ENOENT, -EPERM, -ESRCH: see "SVM lifetime rules".
 */
struct drm_nsvm_migrate {
	/** @size: in, sizeof(struct drm_nsvm_migrate). */
	__u32 size;
	/** @flags: in, must be zero. */
	__u32 flags;
	/** @start: in, first address, page aligned. */
	__u64 start;
	/** @length: in, bytes, a multiple of the page size. */
	__u64 length;
	/** @target: in, one of enum drm_nsvm_mem. */
	__u32 target;
	/** @pad: in, must be zero. */
	__u32 pad;
	/** @migrated: out, pages moved to @target. */
	__u64 migrated;
	/** @failed: out, pages selected that could not move. */
	__u64 failed;
};

/**
 * enum drm_nsvm_location - preferred location of a range.
 * @DRM_NSVM_LOCATION_NONE: no preference: data stays where it is.
 * @DRM_NSVM_LOCATION_SYSTEM: system memory.
 * @DRM_NSVM_LOCATION_DEVICE: this device's memory.
 */
enum drm_nsvm_location {
	DRM_NSVM_LOCATION_NONE = 0,
	DRM_NSVM_LOCATION_SYSTEM = 1,
	DRM_NSVM_LOCATION_DEVICE = 2,
};

/**
 * enum drm_nsvm_atomic - how GPU atomics on system memory of a range are
 * made atomic.
 * @DRM_NSVM_ATOMIC_EXCLUSIVE: the device takes exclusive access to the
 *	page (make_device_exclusive()): the CPU faults on it, which ends the
 *	exclusive access, so GPU atomics are atomic against the CPU too. Only
 *	anonymous private memory allows it: an atomic elsewhere is an
 *	unserved GPU fault (-EFAULT from EXEC).
 * @DRM_NSVM_ATOMIC_DEVICE: the page migrates to device memory first; where
 *	it cannot, as for DRM_NSVM_ATOMIC_EXCLUSIVE.
 * @DRM_NSVM_ATOMIC_SYSTEM: the atomic runs on system memory in place, as
 *	over a bus without CPU coherence: atomic against other GPU accesses
 *	only.
 * Atomics on device memory are always atomic.
 */
enum drm_nsvm_atomic {
	DRM_NSVM_ATOMIC_EXCLUSIVE = 0,
	DRM_NSVM_ATOMIC_DEVICE = 1,
	DRM_NSVM_ATOMIC_SYSTEM = 2,
};

/** DRM_NSVM_ATTR_MAX_RANGES - most distinct attribute ranges per file. */
#define DRM_NSVM_ATTR_MAX_RANGES 4096

/**
 * struct drm_nsvm_set_attr - argument of DRM_IOCTL_NSVM_SET_ATTR.
 * Sets the policy of [@start, @start + @length) for GPU faults, replacing
 * what was set there before. Attributes belong to the file and address
 * ranges, not to mappings: they survive munmap and apply to whatever is
 * mapped there later. The default everywhere is LOCATION_NONE, no
 * migration on fault, ATOMIC_EXCLUSIVE.
 * On a GPU fault in a range with @migrate_on_fault, the fault window
 * first migrates to @preferred (DEVICE: to device memory, as MIGRATE
 * would; SYSTEM: device pages come back to system memory); without it,
 * the GPU maps the pages where they are.
 * Errors: -EINVAL for a bad @size, non-zero @flags or @pad, an unknown
 * @preferred or @atomic, @migrate_on_fault other than 0 or 1, an
 * unaligned @start or @length, a @length of 0 or a range past the user
 * address limit;
 * -ENOSPC when the file would hold more than DRM_NSVM_ATTR_MAX_RANGES
 * ranges; -ENOENT, -EPERM, -ESRCH: see "SVM lifetime rules".
 */
struct drm_nsvm_set_attr {
	/** @size: in, sizeof(struct drm_nsvm_set_attr). */
	__u32 size;
	/** @flags: in, must be zero. */
	__u32 flags;
	/** @start: in, first address, page aligned. */
	__u64 start;
	/** @length: in, bytes, a multiple of the page size. */
	__u64 length;
	/** @preferred: in, one of enum drm_nsvm_location. */
	__u32 preferred;
	/** @migrate_on_fault: in, 1 to migrate to @preferred on GPU faults. */
	__u32 migrate_on_fault;
	/** @atomic: in, one of enum drm_nsvm_atomic. */
	__u32 atomic;
	/** @pad: in, must be zero. */
	__u32 pad;
};

/**
 * DOC: exec queues and user fences
 *
 * Since uapi 0.5 (DRM_NSVM_FEATURE_QUEUES), work can run after the ioctl
 * that submitted it returned. A file bound with SVM_INIT creates exec
 * queues (QUEUE_CREATE); SUBMIT queues a job, a list of commands as for
 * EXEC, on one and returns at once. The jobs of one queue run in order,
 * the queues of all files beside each other. Their GPU faults are served
 * by the device's fault handler while no ioctl runs.
 *
 * A job completes by writing its 64-bit fence value at its fence address:
 * a GPU write through the mirror, after the job's commands, which can
 * fault, or fail, like any other. WAIT sleeps until the u64 at an address
 * compares to a value as asked. No dma-fence is involved: work that may
 * page-fault must not signal one.
 *
 * A queue fails for good when one of its jobs does: an unservable GPU
 * fault (-EFAULT, with the address), the mirrored address space gone
 * (-ESRCH: the process exited), a job without progress for the queue's
 * timeout (-ETIMEDOUT, also for a fault that invalidations keep undoing:
 * it is retried until then), memory (-ENOMEM). The failing job and the
 * ones queued behind
 * it do not complete (their fences are not written); QUEUE_QUERY says why;
 * a WAIT naming the queue returns the error at once; SUBMIT to it fails
 * with -ECANCELED. Destroy it and create another.
 *
 * Queued and running jobs hold no reference to the process's address
 * space: when the process exits they fail with -ESRCH as soon as they touch
 * memory. The file can still be queried, waited on by queue sequence
 * number and closed from any process holding it. Closing the file cancels
 * its jobs.
 *
 * QUEUE_CREATE, QUEUE_DESTROY, SUBMIT and WAIT on an address fail with
 * -EPERM from a process that is not the mirror's (see "SVM lifetime
 * rules"); QUEUE_QUERY and WAIT with DRM_NSVM_WAIT_SEQNO work from any.
 */

/**
 * DOC: in-fences
 *
 * Since uapi 0.6 (DRM_NSVM_FEATURE_SYNCOBJ), a job can wait for other
 * work before it starts: SUBMIT takes DRM sync objects of the file, binary
 * ones or points of timelines, whose dma-fences the job waits for (struct
 * drm_nsvm_sync). The fences are looked up when SUBMIT runs; the job, and
 * every job queued behind it on its queue, starts once all of them
 * signaled. An in-fence that signals with an error does not fail the job:
 * the job runs as a CPU that waited for the fence would. Waiting for
 * in-fences is no lack of progress: the queue's timeout starts with the
 * job. Destroying the queue, closing the file, the queue failing or the
 * device going cancels a job that waits for its in-fences within 10 ms.
 *
 * There are no out-fences: a job's completion is its user fence, never a
 * dma-fence, since the job may page-fault (see "exec queues and user
 * fences").
 */

/** DRM_NSVM_SUBMIT_MAX_SYNCS - most in-fences of one SUBMIT. */
#define DRM_NSVM_SUBMIT_MAX_SYNCS 64

/**
 * struct drm_nsvm_sync - one in-fence of SUBMIT: a sync object of the file.
 */
struct drm_nsvm_sync {
	/** @handle: in, the sync object's handle. */
	__u32 handle;
	/** @flags: in, must be zero. */
	__u32 flags;
	/**
	 * @point: in, the timeline point to wait for; 0 for a binary sync
	 * object (or a timeline's newest point).
	 */
	__u64 point;
};

/** DRM_NSVM_MAX_QUEUES - most exec queues of one file. */
#define DRM_NSVM_MAX_QUEUES 64
/** DRM_NSVM_QUEUE_MAX_JOBS - most jobs one queue holds unfinished. */
#define DRM_NSVM_QUEUE_MAX_JOBS 256
/** DRM_NSVM_MAX_TIMEOUT_MS - longest job timeout of a queue. */
#define DRM_NSVM_MAX_TIMEOUT_MS 3600000

/**
 * struct drm_nsvm_queue_create - argument of DRM_IOCTL_NSVM_QUEUE_CREATE.
 *
 * Errors: -EINVAL for a bad @size, non-zero @flags or @pad, or a
 * @timeout_ms over DRM_NSVM_MAX_TIMEOUT_MS; -ENOSPC if the file has DRM_NSVM_MAX_QUEUES
 * queues; -ENOENT, -EPERM, -ESRCH: see "SVM lifetime rules".
 */
struct drm_nsvm_queue_create {
	/** @size: in, sizeof(struct drm_nsvm_queue_create). */
	__u32 size;
	/** @flags: in, must be zero. */
	__u32 flags;
	/**
	 * @timeout_ms: in, how long a job of the queue may go without
	 * progress (a command, or a page of one, done, or a fault of one
	 * served: a job that faults on every page is not hung) before it
	 * fails the queue with -ETIMEDOUT; 0 for the driver's default (module
	 * parameter job_timeout_ms).
	 */
	__u32 timeout_ms;
	/** @queue_id: out, the new queue's id, never 0. */
	__u32 queue_id;
	/** @pad: in, must be zero. */
	__u64 pad;
};

/**
 * struct drm_nsvm_queue_destroy - argument of DRM_IOCTL_NSVM_QUEUE_DESTROY.
 *
 * Cancels the queue's jobs (the running one stops within a few pages; none
 * writes its fence after this returns) and frees the queue.
 *
 * Errors: -EINVAL for a bad @size or non-zero @pad; -ENOENT for an unknown
 * @queue_id (or before SVM_INIT); -EPERM, -ESRCH: see "SVM lifetime rules".
 */
struct drm_nsvm_queue_destroy {
	/** @size: in, sizeof(struct drm_nsvm_queue_destroy). */
	__u32 size;
	/** @queue_id: in, the queue. */
	__u32 queue_id;
	/** @pad: in, must be zero. */
	__u64 pad;
};

/**
 * struct drm_nsvm_submit - argument of DRM_IOCTL_NSVM_SUBMIT.
 *
 * Queues a job of @num_cmds commands on queue @queue_id and returns. The
 * commands are those of EXEC, checked the same way before anything is
 * queued, except DRM_NSVM_OP_READ (its destination is a CPU buffer only an
 * ioctl can fill) and that atomics do not return their old value. When they
 * are done the GPU writes @fence_value at @fence_addr. Since uapi 0.6 the
 * job first waits for the @num_syncs in-fences at @syncs (see "in-fences");
 * a @size of uapi 0.5 (the struct up to @pad) is taken as none.
 *
 * Errors: -EINVAL for a bad @size, non-zero @flags or @pad, a bad
 * @cmd_size or command (see EXEC), a READ, a @fence_addr that is not
 * 8-byte aligned or not below the user address limit, more than
 * DRM_NSVM_SUBMIT_MAX_SYNCS in-fences, a @sync_size other than
 * sizeof(struct drm_nsvm_sync) when there are any, non-zero flags in one,
 * or a sync object without a fence (at that point) yet; -EFAULT for an
 * unreadable @cmds or @syncs array; -ENOENT for an unknown @queue_id or
 * sync object handle; -ECANCELED if the queue failed; -EAGAIN if it has
 * DRM_NSVM_QUEUE_MAX_JOBS unfinished jobs; -EPERM, -ESRCH: see "SVM
 * lifetime rules".
 */
struct drm_nsvm_submit {
	/** @size: in, sizeof(struct drm_nsvm_submit). */
	__u32 size;
	/** @queue_id: in, the queue. */
	__u32 queue_id;
	/** @cmds: in, user pointer to struct drm_nsvm_cmd[@num_cmds]. */
	__u64 cmds;
	/** @num_cmds: in, at most DRM_NSVM_EXEC_MAX_CMDS (0: only a fence). */
	__u32 num_cmds;
	/** @cmd_size: in, sizeof(struct drm_nsvm_cmd). */
	__u32 cmd_size;
	/** @fence_addr: in, where the fence is written; 0 for none. */
	__u64 fence_addr;
	/** @fence_value: in, the value written there. */
	__u64 fence_value;
	/**
	 * @seqno: out, the job's sequence number on its queue: 1 for the
	 * first job, then one more per job (see QUEUE_QUERY).
	 */
	__u64 seqno;
	/** @flags: in, must be zero. */
	__u32 flags;
	/** @pad: in, must be zero. */
	__u32 pad;
	/**
	 * @syncs: in, user pointer to struct drm_nsvm_sync[@num_syncs], the
	 * in-fences. Since uapi 0.6.
	 */
	__u64 syncs;
	/** @num_syncs: in, at most DRM_NSVM_SUBMIT_MAX_SYNCS. */
	__u32 num_syncs;
	/** @sync_size: in, sizeof(struct drm_nsvm_sync); 0 with no syncs. */
	__u32 sync_size;
};

/*
 * Comparisons of DRM_IOCTL_NSVM_WAIT (struct drm_nsvm_wait @op): the wait
 * ends when (*@addr & @mask) compares to (@value & @mask) so.
 */
#define DRM_NSVM_WAIT_EQ 0
#define DRM_NSVM_WAIT_NEQ 1
#define DRM_NSVM_WAIT_GT 2
#define DRM_NSVM_WAIT_GTE 3
#define DRM_NSVM_WAIT_LT 4
#define DRM_NSVM_WAIT_LTE 5

/**
 * DRM_NSVM_WAIT_SEQNO - wait for queue @queue_id's last completed job
 * sequence number instead of the memory at @addr (which must be 0); no
 * memory is read, so it works from any process holding the file.
 */
#define DRM_NSVM_WAIT_SEQNO (1u << 0)

/**
 * struct drm_nsvm_wait - argument of DRM_IOCTL_NSVM_WAIT.
 *
 * Sleeps until the u64 at @addr (in the calling process, which must be the
 * mirror's) compares to @value as @op says, under @mask. The fence is read
 * again on every job completion and queue failure of the device, and at
 * least every 100 ms (a CPU write raises no interrupt). If @queue_id is not
 * 0 and names a queue that failed, the wait returns that queue's error at
 * once (see "exec queues and user fences").
 *
 * Errors: -EINVAL for a bad @size, unknown @flags, a bad @op, non-zero
 * @pad, an unaligned @addr or one not below the user address limit, or
 * DRM_NSVM_WAIT_SEQNO without a queue or with an @addr; -EFAULT for an
 * unreadable @addr; -ENOENT for an unknown @queue_id; -ETIME if @timeout_ns
 * passed first; -EINTR if a signal came (the wait restarts with the same
 * relative timeout where the signal handler allows it); the failed queue's
 * error; -EPERM, -ESRCH: see "SVM lifetime rules".
 */
struct drm_nsvm_wait {
	/** @size: in, sizeof(struct drm_nsvm_wait). */
	__u32 size;
	/** @flags: in, 0 or DRM_NSVM_WAIT_SEQNO. */
	__u32 flags;
	/** @addr: in, the fence: a user pointer to a u64, 8-byte aligned. */
	__u64 addr;
	/** @value: in, what the fence is compared to. */
	__u64 value;
	/** @mask: in, the bits compared. */
	__u64 mask;
	/** @op: in, one of DRM_NSVM_WAIT_EQ .. DRM_NSVM_WAIT_LTE. */
	__u32 op;
	/** @queue_id: in, a queue whose failure ends the wait, or 0. */
	__u32 queue_id;
	/**
	 * @timeout_ns: in, relative: 0 only checks, a negative value waits
	 * until the fence compares (or the queue fails, or a signal).
	 */
	__s64 timeout_ns;
	/** @pad: in, must be zero. */
	__u64 pad;
};

/**
 * struct drm_nsvm_queue_query - argument of DRM_IOCTL_NSVM_QUEUE_QUERY.
 *
 * Works from any process holding the file, also after the mirrored
 * process exited.
 *
 * Errors: -EINVAL for a bad @size or non-zero @pad; -ENOENT for an unknown
 * @queue_id (or before SVM_INIT).
 */
struct drm_nsvm_queue_query {
	/** @size: in, sizeof(struct drm_nsvm_queue_query). */
	__u32 size;
	/** @queue_id: in, the queue. */
	__u32 queue_id;
	/** @submitted: out, sequence number of the last job submitted. */
	__u64 submitted;
	/** @completed: out, of the last job completed (jobs end in order). */
	__u64 completed;
	/**
	 * @error: out, 0, or the negative error code the queue failed with
	 * (see "exec queues and user fences").
	 */
	__s32 error;
	/** @fault_write: out, 1 if the unserved fault was a write. */
	__u32 fault_write;
	/** @fault_addr: out, the unserved fault's address (-EFAULT), else 0. */
	__u64 fault_addr;
	/** @pad: in, must be zero. */
	__u64 pad;
};

#define DRM_IOCTL_NSVM_GET_PARAM \
	DRM_IOWR(DRM_COMMAND_BASE + DRM_NSVM_GET_PARAM, struct drm_nsvm_get_param)
#define DRM_IOCTL_NSVM_SVM_INIT \
	DRM_IOWR(DRM_COMMAND_BASE + DRM_NSVM_SVM_INIT, struct drm_nsvm_svm_init)
#define DRM_IOCTL_NSVM_EXEC \
	DRM_IOWR(DRM_COMMAND_BASE + DRM_NSVM_EXEC, struct drm_nsvm_exec)
#define DRM_IOCTL_NSVM_SNAPSHOT \
	DRM_IOWR(DRM_COMMAND_BASE + DRM_NSVM_SNAPSHOT, struct drm_nsvm_snapshot)
#define DRM_IOCTL_NSVM_MIGRATE \
	DRM_IOWR(DRM_COMMAND_BASE + DRM_NSVM_MIGRATE, struct drm_nsvm_migrate)
#define DRM_IOCTL_NSVM_SET_ATTR \
	DRM_IOWR(DRM_COMMAND_BASE + DRM_NSVM_SET_ATTR, struct drm_nsvm_set_attr)
#define DRM_IOCTL_NSVM_QUEUE_CREATE \
	DRM_IOWR(DRM_COMMAND_BASE + DRM_NSVM_QUEUE_CREATE, \
		 struct drm_nsvm_queue_create)
#define DRM_IOCTL_NSVM_QUEUE_DESTROY \
	DRM_IOWR(DRM_COMMAND_BASE + DRM_NSVM_QUEUE_DESTROY, \
		 struct drm_nsvm_queue_destroy)
#define DRM_IOCTL_NSVM_SUBMIT \
	DRM_IOWR(DRM_COMMAND_BASE + DRM_NSVM_SUBMIT, struct drm_nsvm_submit)
#define DRM_IOCTL_NSVM_WAIT \
	DRM_IOWR(DRM_COMMAND_BASE + DRM_NSVM_WAIT, struct drm_nsvm_wait)
#define DRM_IOCTL_NSVM_QUEUE_QUERY \
	DRM_IOWR(DRM_COMMAND_BASE + DRM_NSVM_QUEUE_QUERY, \
		 struct drm_nsvm_queue_query)

#if defined(__cplusplus)
}
#endif

#endif /* __NSVM_DRM_H__ */
