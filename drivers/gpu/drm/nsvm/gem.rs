// SPDX-License-Identifier: GPL-2.0

//! GEM objects.
//!
//! The DRM core wants a GEM type for every driver. nsvm maps process memory,
//! not buffer objects, so it creates none yet; the type exists to satisfy
//! [`drm::Driver::Object`].

use kernel::{
    drm::gem,
    prelude::*, //
};

use crate::driver::{
    NsvmDevice,
    NsvmDriver, //
};

/// Driver data of an nsvm GEM object (none so far).
#[pin_data]
pub(crate) struct NsvmObject {}

impl gem::DriverObject for NsvmObject {
    type Driver = NsvmDriver;
    type Args = ();

    fn new(_dev: &NsvmDevice, _size: usize, _args: Self::Args) -> impl PinInit<Self, Error> {
        try_pin_init!(NsvmObject {})
    }
}
