// SPDX-License-Identifier: GPL-2.0

//! One emulated GPU: a faux device and the DRM device registered on it.
//!
//! There is no bus to probe: the module creates a faux device per GPU and
//! registers a DRM device on it. `drm::Registration<'a>` borrows the bound
//! parent device for `'a`; for a bus driver that borrow is the probe scope.
//! Here the module owns both the faux device and the registration, so
//! [`Card`] keeps them side by side and orders their destruction itself.

use kernel::{
    debugfs,
    device::Bound,
    drm,
    faux,
    prelude::*,
    str::CString,
    time::Delta, //
};

use crate::driver::{
    DeviceData,
    NsvmDriver, //
};
use crate::vram::Vram;

/// An nsvm GPU registered with the DRM core.
///
/// # Invariants
///
/// `drm` is registered on the device of `faux`, and is dropped first: field
/// order puts `drm_dev_unplug()` before `faux_device_destroy()`, so the
/// parent device stays bound for as long as `drm` exists.
pub(crate) struct Card {
    /// The DRM registration. Declared before `faux`: see the invariants.
    drm: drm::Registration<'static, NsvmDriver>,
    _faux: faux::Registration,
}

impl Card {
    /// Creates faux device `nsvm.<index>` with `vram_size` bytes of device
    /// memory and `copy_channels` copy channels, and registers a DRM device
    /// on it, with its debugfs directory `nsvm.<index>` under `debugfs`.
    pub(crate) fn new(
        index: u32,
        vram_size: usize,
        copy_channels: u32,
        job_timeout: Delta,
        debugfs: &debugfs::Dir,
    ) -> Result<Self> {
        let vram = Vram::new(index, vram_size, copy_channels)?;
        let name = CString::try_from_fmt(fmt!("nsvm.{index}"))?;
        let dir = debugfs.subdir(&name);
        let faux = faux::Registration::new(&name, None)?;

        let fdev: *const faux::Device<Bound> = faux.as_ref();
        // SAFETY: The faux device stays registered and bound until `faux` is
        // dropped, which happens only after `drm` is dropped (type
        // invariants). Nothing keeps the `'static` reference itself:
        // `UnregisteredDevice::new()` and `Registration::new()` only read the
        // parent device, and `RegistrationData` is `()`, so no borrow with
        // this lifetime can escape.
        let fdev: &'static faux::Device<Bound> = unsafe { &*fdev };

        let unregistered = drm::UnregisteredDevice::<NsvmDriver>::new(
            fdev,
            DeviceData::new(index, dir, vram, job_timeout)?,
        )?;
        // SAFETY: The registration is stored in the returned `Card` and
        // dropped with it; it is never forgotten.
        let drm = unsafe { drm::Registration::new(fdev.as_ref(), unregistered, (), 0)? };

        // INVARIANT: `drm` was just registered on `faux`'s device and the
        // field order of `Card` drops it first.
        Ok(Self { drm, _faux: faux })
    }

    /// The DRM device of this card.
    #[cfg_attr(not(CONFIG_KUNIT = "y"), expect(dead_code))]
    pub(crate) fn device(&self) -> &drm::Device<NsvmDriver> {
        self.drm.device()
    }
}

#[kunit_tests(nsvm_card)]
mod tests {
    use super::*;

    /// Registers and unregisters a card beside the module's own, under
    /// lockdep: the unplug-before-destroy order of [`Card`] is exercised at
    /// every insmod.
    #[test]
    fn register_unregister() -> Result {
        let root = debugfs::Dir::new(c"nsvm-kunit");
        let card = Card::new(1000, 1 << 21, 1, Delta::from_secs(1), &root)?;
        assert_eq!(card.device().index, 1000);
        drop(card);
        // The name is free again: the faux device is gone.
        let card = Card::new(1000, 1 << 21, 1, Delta::from_secs(1), &root)?;
        assert_eq!(card.device().index, 1000);
        Ok(())
    }
}
