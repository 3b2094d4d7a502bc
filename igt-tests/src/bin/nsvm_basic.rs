// SPDX-License-Identifier: MIT

//! nsvm_basic: device nodes, DRM_IOCTL_VERSION, GET_PARAM and its input
//! checks, unknown ioctls.

use nsvm_igt_tests::{check, check_eq, igt_main, skip, TestResult};
use nsvm_uapi::{self as nsvm, raw_ioctl, sys, Device};

/// The number of devices the guest loaded nsvm with (`NSVM_NUM_DEVICES`).
fn expected_devices() -> Option<usize> {
    std::env::var("NSVM_NUM_DEVICES").ok()?.parse().ok()
}

fn devices() -> Result<Vec<Device>, nsvm_igt_tests::Outcome> {
    let devs = nsvm::render_devices()?;
    if devs.is_empty() {
        skip!("no nsvm render node");
    }
    Ok(devs)
}

fn valid_arg(param: u32) -> sys::drm_nsvm_get_param {
    sys::drm_nsvm_get_param {
        size: size_of::<sys::drm_nsvm_get_param>() as u32,
        param,
        ..Default::default()
    }
}

/// Every nsvm card and render node opens and closes, repeatedly.
fn open_close() -> TestResult {
    let mut cards = 0;
    let mut renders = 0;
    for prefix in ["card", "renderD"] {
        for path in nsvm::nodes(prefix)? {
            for _ in 0..16 {
                let dev = Device::open(&path)?;
                drop(dev);
            }
            if prefix == "card" {
                cards += 1
            } else {
                renders += 1
            }
        }
    }
    check!(renders > 0, "no render node");
    check_eq!(cards, renders);
    if let Some(n) = expected_devices() {
        check_eq!(renders, n);
    }
    Ok(())
}

/// DRM_IOCTL_VERSION names the driver `nsvm` on every node.
fn version_name() -> TestResult {
    for prefix in ["card", "renderD"] {
        for path in nsvm::nodes(prefix)? {
            let dev = Device::open(&path)?;
            let v = dev.version()?;
            check_eq!(v.name.as_str(), "nsvm");
            check!(!v.desc.is_empty());
        }
    }
    Ok(())
}

/// Every param answers on every device with the values the uapi promises.
fn getparam_values() -> TestResult {
    let devs = devices()?;
    let mut indices = Vec::new();
    for dev in &devs {
        let (major, minor) = dev.uapi_version()?;
        check_eq!(
            (major, minor),
            (sys::DRM_NSVM_UAPI_MAJOR, sys::DRM_NSVM_UAPI_MINOR)
        );
        let sizes = dev.get_param(sys::DRM_NSVM_PARAM_PAGE_SIZES)?;
        check!(sizes & (1 << 12) != 0, "no 4 KiB pages: {sizes:#x}");
        check!(sizes & (1 << 21) != 0, "no 2 MiB pages: {sizes:#x}");
        check!(dev.get_param(sys::DRM_NSVM_PARAM_VA_BITS)? >= 47);
        dev.get_param(sys::DRM_NSVM_PARAM_FEATURES)?;
        dev.get_param(sys::DRM_NSVM_PARAM_VRAM_SIZE)?;
        indices.push(dev.get_param(sys::DRM_NSVM_PARAM_DEVICE_INDEX)?);
    }
    indices.sort_unstable();
    let want: Vec<u64> = (0..devs.len() as u64).collect();
    check_eq!(indices, want);
    Ok(())
}

/// The card node answers GET_PARAM as the render node does.
fn getparam_card_node() -> TestResult {
    for path in nsvm::nodes("card")? {
        let dev = Device::open(&path)?;
        let (major, _) = dev.uapi_version()?;
        check_eq!(major, sys::DRM_NSVM_UAPI_MAJOR);
    }
    Ok(())
}

/// Unknown params fail with EINVAL and leave the value alone.
fn getparam_bad_param() -> TestResult {
    for dev in devices()? {
        for param in [sys::DRM_NSVM_PARAM_COUNT, 0x100, u32::MAX] {
            let mut arg = valid_arg(param);
            arg.value = 0xdead;
            check_eq!(
                dev.get_param_raw(&mut arg),
                Err(nsvm::Error {
                    errno: libc::EINVAL
                })
            );
            check_eq!(arg.value, 0xdead);
        }
    }
    Ok(())
}

/// A non-zero pad fails with EINVAL.
fn getparam_bad_pad() -> TestResult {
    for dev in devices()? {
        for pad in [1, 1 << 63, u64::MAX] {
            let mut arg = valid_arg(sys::DRM_NSVM_PARAM_UAPI_VERSION);
            arg.pad = pad;
            check_eq!(
                dev.get_param_raw(&mut arg),
                Err(nsvm::Error {
                    errno: libc::EINVAL
                })
            );
        }
    }
    Ok(())
}

/// A size field other than the struct's fails with EINVAL.
fn getparam_bad_size() -> TestResult {
    let good = size_of::<sys::drm_nsvm_get_param>() as u32;
    for dev in devices()? {
        for size in [0, 1, good - 8, good - 1, good + 1, good + 8, 4096, u32::MAX] {
            let mut arg = valid_arg(sys::DRM_NSVM_PARAM_UAPI_VERSION);
            arg.size = size;
            check_eq!(
                dev.get_param_raw(&mut arg),
                Err(nsvm::Error {
                    errno: libc::EINVAL
                }),
                "size {size}"
            );
        }
    }
    Ok(())
}

/// Arguments of another length than the uapi struct: the DRM core copies in
/// what the command's size says and zero-fills the rest. An empty argument
/// has a zero size field and fails with EINVAL; a short one is never written
/// past its end; a longer one is read only up to the kernel's struct.
fn getparam_arg_length() -> TestResult {
    let good = size_of::<sys::drm_nsvm_get_param>();
    for dev in devices()? {
        let mut arg = valid_arg(sys::DRM_NSVM_PARAM_UAPI_VERSION);
        let cmd = nsvm::ioc(3, b'd' as u32, nsvm::DRM_COMMAND_BASE, 0);
        // SAFETY: The kernel reads nothing of a zero-length argument.
        let ret = unsafe { raw_ioctl(dev.file(), cmd, (&raw mut arg).cast()) };
        check_eq!(
            ret,
            Err(nsvm::Error {
                errno: libc::EINVAL
            })
        );
        // Value not copied back: it lies past the 8 bytes the command names.
        let mut arg = valid_arg(sys::DRM_NSVM_PARAM_UAPI_VERSION);
        arg.value = 0x5a5a;
        let cmd = nsvm::ioc(3, b'd' as u32, nsvm::DRM_COMMAND_BASE, 8);
        // SAFETY: `arg` is larger than 8 bytes.
        unsafe { raw_ioctl(dev.file(), cmd, (&raw mut arg).cast())? };
        check_eq!(arg.value, 0x5a5a);

        let mut buf = [0xa5u8; 64];
        let arg = valid_arg(sys::DRM_NSVM_PARAM_DEVICE_INDEX);
        buf[..good].copy_from_slice(as_bytes(&arg));
        let cmd = nsvm::ioc(3, b'd' as u32, nsvm::DRM_COMMAND_BASE, buf.len());
        // SAFETY: `buf` holds `buf.len()` bytes.
        unsafe { raw_ioctl(dev.file(), cmd, buf.as_mut_ptr().cast())? };
    }
    Ok(())
}

fn as_bytes(arg: &sys::drm_nsvm_get_param) -> &[u8] {
    // SAFETY: A plain integer struct without implicit padding.
    unsafe {
        std::slice::from_raw_parts(
            (arg as *const sys::drm_nsvm_get_param).cast(),
            size_of_val(arg),
        )
    }
}

/// A bad argument pointer fails with EFAULT.
fn getparam_bad_pointer() -> TestResult {
    for dev in devices()? {
        for ptr in [0usize, 8, usize::MAX - 4095, 0xffff_8000_0000_0000] {
            // SAFETY: The kernel checks the pointer; no memory of ours is
            // touched.
            let ret = unsafe { raw_ioctl(dev.file(), nsvm::DRM_IOCTL_NSVM_GET_PARAM, ptr as _) };
            check_eq!(
                ret,
                Err(nsvm::Error {
                    errno: libc::EFAULT
                }),
                "pointer {ptr:#x}"
            );
        }
    }
    Ok(())
}

/// Driver ioctl numbers nsvm does not define fail with EINVAL, and a
/// non-DRM ioctl type with ENOTTY.
fn unknown_ioctl() -> TestResult {
    for dev in devices()? {
        let mut buf = [0u8; 128];
        for nr in [nsvm::DRM_COMMAND_BASE + 0x20, 0x9f] {
            for len in [0, 24, 128] {
                let cmd = nsvm::ioc(3, b'd' as u32, nr, len);
                // SAFETY: `buf` is larger than any `len` used.
                let ret = unsafe { raw_ioctl(dev.file(), cmd, buf.as_mut_ptr().cast()) };
                check_eq!(
                    ret,
                    Err(nsvm::Error {
                        errno: libc::EINVAL
                    }),
                    "nr {nr:#x} len {len}"
                );
            }
        }
        let cmd = nsvm::ioc(3, b'x' as u32, nsvm::DRM_COMMAND_BASE, 24);
        // SAFETY: As above.
        let ret = unsafe { raw_ioctl(dev.file(), cmd, buf.as_mut_ptr().cast()) };
        check_eq!(
            ret,
            Err(nsvm::Error {
                errno: libc::ENOTTY
            })
        );
    }
    Ok(())
}

igt_main! {
    "open-close" => open_close,
    "version-name" => version_name,
    "getparam-values" => getparam_values,
    "getparam-card-node" => getparam_card_node,
    "getparam-bad-param" => getparam_bad_param,
    "getparam-bad-pad" => getparam_bad_pad,
    "getparam-bad-size" => getparam_bad_size,
    "getparam-arg-length" => getparam_arg_length,
    "getparam-bad-pointer" => getparam_bad_pointer,
    "unknown-ioctl" => unknown_ioctl,
}
