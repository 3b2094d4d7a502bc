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
 */

/** DRM_NSVM_UAPI_MAJOR - incompatible uapi revisions bump this. */
#define DRM_NSVM_UAPI_MAJOR 0
/** DRM_NSVM_UAPI_MINOR - compatible additions bump this. */
#define DRM_NSVM_UAPI_MINOR 1

#define DRM_NSVM_GET_PARAM 0x00

/**
 * enum drm_nsvm_param - what DRM_IOCTL_NSVM_GET_PARAM can report.
 *
 * @DRM_NSVM_PARAM_UAPI_VERSION: (DRM_NSVM_UAPI_MAJOR << 16) |
 *	DRM_NSVM_UAPI_MINOR of the running driver.
 * @DRM_NSVM_PARAM_FEATURES: mask of DRM_NSVM_FEATURE_* bits.
 * @DRM_NSVM_PARAM_PAGE_SIZES: mask of the page sizes the GPU page table can
 *	map; bit n set means pages of 2^n bytes.
 * @DRM_NSVM_PARAM_VA_BITS: width of a GPU virtual address; the GPU can
 *	reach CPU addresses below 2^VA_BITS.
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
 * None is defined in uapi 0.1.
 */

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

#define DRM_IOCTL_NSVM_GET_PARAM \
	DRM_IOWR(DRM_COMMAND_BASE + DRM_NSVM_GET_PARAM, struct drm_nsvm_get_param)

#if defined(__cplusplus)
}
#endif

#endif /* __NSVM_DRM_H__ */
