// SPDX-License-Identifier: GPL-2.0

//! The driver-local DRM ioctl table.
//!
//! `kernel::declare_drm_ioctls!` only knows the structs of the kernel's own
//! uapi crate (`rust/uapi`), and nsvm's uapi lives out of tree. This module
//! does the same job for nsvm's generated uapi: each ioctl is a type
//! implementing [`Ioctl`], one generic trampoline adapts it to the C
//! `drm_ioctl_t`, and [`IOCTLS`] is checked at compile time to be dense and
//! ordered by ioctl number, as the DRM core indexes it.
//!
//! The trampoline also enforces the nsvm convention that every argument
//! starts with the `size` userspace was compiled with: the DRM core would
//! otherwise zero-extend or truncate a mismatched argument without a word.

use core::ffi::{
    c_int,
    c_void, //
};

use kernel::{
    drm::{
        self,
        ioctl::{
            internal::{
                drm_device,
                drm_file,
                drm_ioctl_desc, //
            },
            DrmIoctlDescriptor,
            IOWR, //
        },
        Registered,
    },
    prelude::*,
    str::as_char_ptr_in_const_context,
    transmute::AsBytes,
    uapi::DRM_COMMAND_BASE, //
};

use crate::{
    driver::{
        NsvmDevice,
        NsvmDriver, //
    },
    file::NsvmFile,
    uapi::SizedArg,
};

/// An nsvm ioctl.
pub(crate) trait Ioctl {
    /// The uapi argument, read and written back by the DRM core.
    type Arg: SizedArg;
    /// Number relative to `DRM_COMMAND_BASE`, from the uapi header.
    const NR: u32;
    /// Name for DRM debug messages.
    const NAME: &'static CStr;
    /// `drm::ioctl` flags: `RENDER_ALLOW` and never `AUTH` (every ioctl
    /// acts on the caller's own address space and work; see "Conventions"
    /// in Documentation/nsvm/uapi.rst).
    const FLAGS: u32;
    /// The `size`s of the argument in older uapi minors, each shorter than
    /// `Arg`: such a call is taken with the fields past its `size` zero.
    const OLD_SIZES: &'static [usize] = &[];

    /// Handles the ioctl. `arg` already passed the `size` check.
    fn handle(
        dev: &NsvmDevice<Registered>,
        file: &drm::File<NsvmFile>,
        arg: &mut Self::Arg,
    ) -> Result<u32>;
}

/// The C entry point of ioctl `I`.
///
/// # Safety
///
/// Only the DRM core may call this, through a descriptor of [`IOCTLS`]:
/// `raw_dev` is a registered nsvm DRM device, `raw_file` an nsvm file opened
/// through [`NsvmFile`], and `raw_data` a kernel buffer holding at least
/// `size_of::<I::Arg>()` bytes (`_IOC_SIZE` of the descriptor's command),
/// exclusively ours for the duration of the call.
unsafe extern "C" fn trampoline<I: Ioctl>(
    raw_dev: *mut drm_device,
    raw_data: *mut c_void,
    raw_file: *mut drm_file,
) -> c_int {
    // SAFETY: By the function's safety requirements `raw_dev` is a live nsvm
    // device that has been registered, which is what the `Ioctl` context
    // requires.
    let dev: &NsvmDevice<drm::Ioctl> = unsafe { drm::Device::from_raw(raw_dev) };
    let Some(guard) = dev.registration_guard() else {
        return ENODEV.to_errno();
    };
    // SAFETY: By the function's safety requirements the buffer is large enough
    // and exclusively ours; `I::Arg: FromBytes`, so any content is valid.
    let arg = unsafe { &mut *raw_data.cast::<I::Arg>() };
    // SAFETY: By the function's safety requirements `raw_file` is an open
    // nsvm file.
    let file = unsafe { drm::File::<NsvmFile>::from_raw(raw_file) };

    let size = arg.user_size() as usize;
    let ret = if size == size_of::<I::Arg>() {
        I::handle(&guard, file, arg)
    } else if size < size_of::<I::Arg>() && I::OLD_SIZES.contains(&size) {
        // What an older caller left out, whatever the DRM core copied in.
        arg.as_bytes_mut()[size..].fill(0);
        I::handle(&guard, file, arg)
    } else {
        Err(EINVAL)
    };
    match ret {
        Ok(v) => v.try_into().unwrap_or(ERANGE.to_errno()),
        Err(e) => e.to_errno(),
    }
}

/// The descriptor of ioctl `I`.
const fn desc<I: Ioctl>() -> DrmIoctlDescriptor {
    drm_ioctl_desc {
        cmd: IOWR::<I::Arg>(DRM_COMMAND_BASE + I::NR),
        flags: I::FLAGS,
        func: Some(trampoline::<I>),
        name: as_char_ptr_in_const_context(I::NAME),
    }
}

/// Checks that `table` is indexed by ioctl number, as `drm_ioctl()` assumes.
const fn assert_dense(table: &[DrmIoctlDescriptor]) {
    let mut i = 0;
    while i < table.len() {
        let nr = kernel::ioctl::_IOC_NR(table[i].cmd);
        assert!(
            nr == DRM_COMMAND_BASE + i as u32,
            "nsvm ioctl table is not dense"
        );
        i += 1;
    }
}

/// Every nsvm ioctl, in ioctl number order.
pub(crate) const IOCTLS: &[DrmIoctlDescriptor] = {
    const TABLE: &[DrmIoctlDescriptor] = &[
        desc::<crate::file::GetParam>(),
        desc::<crate::file::SvmInit>(),
        desc::<crate::file::Exec>(),
        desc::<crate::file::Snapshot>(),
        desc::<crate::file::MigrateIoctl>(),
        desc::<crate::file::SetAttr>(),
        desc::<crate::file::QueueCreate>(),
        desc::<crate::file::QueueDestroy>(),
        desc::<crate::file::Submit>(),
        desc::<crate::file::Wait>(),
        desc::<crate::file::QueueQuery>(),
    ];
    assert_dense(TABLE);
    TABLE
};

// The trampoline names the driver's own device type: keep the table bound to it.
const _: fn() = || {
    let _: &[DrmIoctlDescriptor] = <NsvmDriver as drm::Driver>::IOCTLS;
};
