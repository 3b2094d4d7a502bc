// SPDX-License-Identifier: GPL-2.0

//! Device facts reported by `DRM_IOCTL_NSVM_GET_PARAM`.

use kernel::prelude::*;

use crate::uapi;

/// GPU page sizes the page table can map: 4 KiB and 2 MiB.
pub(crate) const PAGE_SIZES: u64 = (1 << 12) | (1 << 21);

/// What a device tells about itself.
pub(crate) struct Facts {
    /// Device index.
    pub(crate) index: u32,
    /// Device memory in bytes.
    pub(crate) vram_size: u64,
    /// Width of a GPU virtual address: the user address space's (47 bits,
    /// or 56 with 5-level paging). Every address below a process's user
    /// address limit (`TASK_SIZE`, below `1 << va_bits`) is one.
    pub(crate) va_bits: u32,
}

/// The value of `param` for a device with `facts`; `EINVAL` for a param
/// this driver does not know.
pub(crate) fn query(facts: &Facts, param: u32) -> Result<u64> {
    Ok(match param {
        uapi::DRM_NSVM_PARAM_UAPI_VERSION => {
            u64::from(uapi::DRM_NSVM_UAPI_MAJOR << 16 | uapi::DRM_NSVM_UAPI_MINOR)
        }
        uapi::DRM_NSVM_PARAM_FEATURES => {
            let mut f = uapi::DRM_NSVM_FEATURE_SVM
                | uapi::DRM_NSVM_FEATURE_QUEUES
                | uapi::DRM_NSVM_FEATURE_SYNCOBJ;
            if facts.vram_size > 0 {
                f |= uapi::DRM_NSVM_FEATURE_DEVICE_MEMORY;
            }
            u64::from(f)
        }
        uapi::DRM_NSVM_PARAM_PAGE_SIZES => PAGE_SIZES,
        uapi::DRM_NSVM_PARAM_VA_BITS => facts.va_bits.into(),
        uapi::DRM_NSVM_PARAM_VRAM_SIZE => facts.vram_size,
        uapi::DRM_NSVM_PARAM_DEVICE_INDEX => facts.index.into(),
        _ => return Err(EINVAL),
    })
}

#[kunit_tests(nsvm_param)]
mod tests {
    use super::*;

    const FACTS: Facts = Facts {
        index: 3,
        vram_size: 0,
        va_bits: 47,
    };

    #[test]
    fn every_param_answers() -> Result {
        for param in 0..uapi::DRM_NSVM_PARAM_COUNT {
            query(&FACTS, param)?;
        }
        Ok(())
    }

    #[test]
    fn unknown_param_is_einval() {
        assert_eq!(query(&FACTS, uapi::DRM_NSVM_PARAM_COUNT), Err(EINVAL));
        assert_eq!(query(&FACTS, u32::MAX), Err(EINVAL));
    }

    #[test]
    fn values() -> Result {
        let version = query(&FACTS, uapi::DRM_NSVM_PARAM_UAPI_VERSION)?;
        assert_eq!(version >> 16, u64::from(uapi::DRM_NSVM_UAPI_MAJOR));
        assert_eq!(version & 0xffff, u64::from(uapi::DRM_NSVM_UAPI_MINOR));
        assert_eq!(query(&FACTS, uapi::DRM_NSVM_PARAM_DEVICE_INDEX)?, 3);
        assert_eq!(query(&FACTS, uapi::DRM_NSVM_PARAM_VA_BITS)?, 47);
        let sizes = query(&FACTS, uapi::DRM_NSVM_PARAM_PAGE_SIZES)?;
        assert_eq!(sizes & (1 << 12), 1 << 12);
        assert_eq!(sizes & (1 << 21), 1 << 21);
        Ok(())
    }
}
