// SPDX-License-Identifier: GPL-2.0

//! Raw declarations of the mm shim (`mm/shim.c`), generated from
//! `mm/shim.h` by `scripts/gen-bindings.sh`. Only [`super`] uses them.

#![allow(
    dead_code,
    improper_ctypes,
    non_camel_case_types,
    non_upper_case_globals,
    unreachable_pub,
    clippy::all,
    clippy::undocumented_unsafe_blocks,
    reason = "generated bindgen code"
)]

use kernel::bindings::{
    mm_struct,
    page,
    vm_fault, //
};

include!("shim_bindings.rs");
