// SPDX-License-Identifier: GPL-2.0

//! The nsvm uapi, as generated from `uapi/drm/nsvm_drm.h`.
//!
//! The bindings are produced by `scripts/gen-bindings.sh` and shared with the
//! userspace crate, so the driver and its users agree on every layout; the
//! header is the source of truth and nothing here restates a field.

#[allow(
    dead_code,
    non_camel_case_types,
    non_upper_case_globals,
    unreachable_pub,
    clippy::all,
    clippy::undocumented_unsafe_blocks,
    reason = "generated bindgen code"
)]
mod generated {
    include!("../../../../uapi/rust/src/bindings.rs");
}

pub(crate) use generated::*;

use kernel::transmute::{
    AsBytes,
    FromBytes, //
};

/// Marks uapi structs as plain bytes.
macro_rules! plain {
    ($($t:ty),* $(,)?) => {$(
        // SAFETY: A generated uapi struct: `repr(C)`, integers only, and no
        // implicit padding (the header pads explicitly), so any bit pattern
        // is valid and every byte is initialized.
        unsafe impl FromBytes for $t {}
        // SAFETY: See above.
        unsafe impl AsBytes for $t {}
    )*};
}

plain!(
    drm_nsvm_get_param,
    drm_nsvm_svm_init,
    drm_nsvm_cmd,
    drm_nsvm_exec,
    drm_nsvm_counters,
    drm_nsvm_snapshot,
    drm_nsvm_migrate,
    drm_nsvm_set_attr,
    drm_nsvm_queue_create,
    drm_nsvm_queue_destroy,
    drm_nsvm_sync,
    drm_nsvm_submit,
    drm_nsvm_wait,
    drm_nsvm_queue_query,
);

/// An ioctl argument of the nsvm uapi: starts with the `size` userspace was
/// compiled with (see "nsvm uapi conventions" in the header).
pub(crate) trait SizedArg: FromBytes + AsBytes {
    /// The `size` field as userspace set it.
    fn user_size(&self) -> u32;
}

macro_rules! sized {
    ($($t:ty),* $(,)?) => {$(
        impl SizedArg for $t {
            fn user_size(&self) -> u32 {
                self.size
            }
        }
    )*};
}

sized!(
    drm_nsvm_get_param,
    drm_nsvm_svm_init,
    drm_nsvm_exec,
    drm_nsvm_snapshot,
    drm_nsvm_migrate,
    drm_nsvm_set_attr,
    drm_nsvm_queue_create,
    drm_nsvm_queue_destroy,
    drm_nsvm_submit,
    drm_nsvm_wait,
    drm_nsvm_queue_query,
);
