// SPDX-License-Identifier: GPL-2.0

//! One emulated GPU: a platform device and the DRM device registered on
//! it.
//!
//! No firmware describes the GPUs: the module creates a platform device
//! `nsvm.<index>` per GPU ([`register`]) and registers the platform driver
//! [`CardDriver`], which binds them as a bus driver binds its devices. The
//! index is part of the device's name, not an instance id, and the driver
//! binds by override: a device without firmware data has the `MODALIAS`
//! `platform:<name>`, which is all libdrm's `drmGetDevices2()` knows of its
//! bus address, so devices `nsvm.0` and `nsvm.1` of one name `nsvm` would be
//! one device to it. The probe registers the DRM device ([`Card`]); unbinding
//! the device (sysfs `unbind`, or the module's exit) drops it. Unlike the
//! faux bus, the platform bus lets userspace unbind and bind the device
//! again, and the libdrm of stable distributions knows it.
//!
//! What a probe needs beyond the device (the module parameters, the
//! debugfs root) is the module's, in [`CONFIG`], set before the driver is
//! registered and cleared after it is gone.

use kernel::{
    debugfs,
    device::Core,
    drm,
    platform,
    prelude::*,
    str::CString,
    sync::{
        aref::ARef,
        atomic::{
            Atomic,
            Relaxed, //
        },
        Arc, //
    },
    time::Delta, //
};

use crate::driver::{
    DeviceData,
    NsvmDevice,
    NsvmDriver, //
};
use crate::vram::Vram;

/// What every card of the module is made with.
pub(crate) struct Config {
    /// Bytes of device memory.
    pub(crate) vram_size: usize,
    /// Copy channels of the device memory.
    pub(crate) copy_channels: u32,
    /// How long a job may go without progress, unless its queue says.
    pub(crate) job_timeout: Delta,
    /// `<debugfs>/nsvm`: each card has `nsvm.<index>` in it.
    pub(crate) debugfs: debugfs::Dir,
}

kernel::sync::global_lock! {
    // SAFETY: Initialized in the module's init, before the driver is
    // registered.
    pub(crate) unsafe(uninit) static CONFIG: Mutex<Option<Config>> = None;
}

/// Sets [`CONFIG`] for the module's life and clears it when dropped (the
/// module's last field: after its devices and driver are gone).
pub(crate) struct ConfigGuard(());

impl ConfigGuard {
    /// Sets [`CONFIG`] to `config`.
    ///
    /// # Safety
    ///
    /// Called once, at module init, before anything else uses [`CONFIG`].
    pub(crate) unsafe fn new(config: Config) -> Self {
        // SAFETY: Once, before any other use of the lock (the function's
        // safety requirements).
        unsafe { CONFIG.init() };
        *CONFIG.lock() = Some(config);
        Self(())
    }
}

impl Drop for ConfigGuard {
    fn drop(&mut self) {
        // The debugfs root goes with it.
        drop(CONFIG.lock().take());
    }
}

/// Creates platform device `nsvm.<index>`, which [`CardDriver`] binds.
pub(crate) fn register(index: u32) -> Result<platform::Registration> {
    let name = CString::try_from_fmt(fmt!("nsvm.{index}"))?;
    platform::Registration::new(&name, None, Some(c"nsvm"))
}

/// The index of card device `name` (`nsvm.<index>`).
fn index_of(name: &CStr) -> Option<u32> {
    name.to_str().ok()?.strip_prefix("nsvm.")?.parse().ok()
}

/// Cards bound now, for the module's init to see that every probe worked.
pub(crate) static BOUND: Atomic<u32> = Atomic::new(0);

/// The platform driver of the module's GPUs.
pub(crate) struct CardDriver;

impl platform::Driver for CardDriver {
    type IdInfo = ();
    type Data<'bound> = Card<'bound>;

    fn probe<'bound>(
        pdev: &'bound platform::Device<Core<'_>>,
        _info: Option<&'bound ()>,
    ) -> impl PinInit<Card<'bound>, Error> + 'bound {
        Card::new(pdev)
    }

    /// Stops the GPU's work; dropping the card then unplugs the DRM device
    /// and moves what is in device memory back to system memory.
    fn unbind<'bound>(_pdev: &'bound platform::Device<Core<'_>>, card: Pin<&Card<'bound>>) {
        card.drm.device().unplug();
    }
}

/// An nsvm GPU registered with the DRM core, for as long as its platform
/// device is bound.
///
/// Its platform device's unbind ([`CardDriver::unbind`]) stops the GPU's
/// work; dropping the card then unplugs the DRM device (`drm_dev_unplug()`,
/// which waits for the ioctls in progress), and only then, with no ioctl
/// able to migrate anything to the device, moves every device page back
/// to system memory. The files still open keep the DRM device and its data
/// (the device memory's pagemap included) until they close; their ioctls
/// fail with `ENODEV`.
pub(crate) struct Card<'bound> {
    /// Declared first: unplugged before the debugfs directory goes and the
    /// device memory is evacuated.
    drm: drm::Registration<'bound, NsvmDriver>,
    _debugfs: RemoveDebugfs,
    _vram: Evacuate,
}

impl<'bound> Card<'bound> {
    /// Registers the DRM device of platform device `nsvm.<index>`, with its
    /// device memory, its debugfs directory `nsvm.<index>` and the module's
    /// [`CONFIG`].
    fn new(pdev: &'bound platform::Device<Core<'_>>) -> Result<Self> {
        // The module's devices are `nsvm.<index>`; another is not a card.
        // The debugfs directory has the device's name.
        let name = pdev.as_ref().name();
        let index = index_of(name).ok_or(ENODEV)?;
        let (vram_size, copy_channels, job_timeout, dir) = {
            let config = CONFIG.lock();
            let c = config.as_ref().ok_or(ENODEV)?;
            (
                c.vram_size,
                c.copy_channels,
                c.job_timeout,
                c.debugfs.subdir(name),
            )
        };
        let vram = Vram::new(index, vram_size, copy_channels)?;
        let unregistered = drm::UnregisteredDevice::<NsvmDriver>::new(
            pdev,
            DeviceData::new(index, dir, vram.clone(), job_timeout)?,
        )?;
        // SAFETY: The registration is stored in the returned `Card`, the
        // device's driver data, and dropped with it at unbind; it is never
        // forgotten.
        let drm = unsafe { drm::Registration::new(pdev.as_ref(), unregistered, (), 0)? };
        let debugfs = RemoveDebugfs(drm.device().into());
        BOUND.fetch_add(1, Relaxed);
        Ok(Self {
            drm,
            _debugfs: debugfs,
            _vram: Evacuate(vram),
        })
    }
}

impl Drop for Card<'_> {
    fn drop(&mut self) {
        BOUND.fetch_sub(1, Relaxed);
    }
}

/// Removes the device's debugfs directory when dropped, after the DRM
/// device is unplugged: no ioctl binds a mirror any more, and the next
/// binding of the platform device gets `nsvm.<index>` while files of this
/// one are still open.
struct RemoveDebugfs(ARef<NsvmDevice>);

impl Drop for RemoveDebugfs {
    fn drop(&mut self) {
        self.0.remove_debugfs();
    }
}

/// Evacuates its device memory when dropped: the card's last field, after
/// the DRM device is unplugged.
struct Evacuate(Arc<Vram>);

impl Drop for Evacuate {
    fn drop(&mut self) {
        self.0.evacuate();
    }
}

#[kunit_tests(nsvm_card)]
mod tests {
    use super::*;

    /// Creates and removes a card beside the module's own, twice, under
    /// lockdep: the device binds at once, and the name is free again once
    /// it is gone.
    #[test]
    fn register_unregister() -> Result {
        for _ in 0..2 {
            let before = BOUND.load(Relaxed);
            let dev = register(1000)?;
            assert_eq!(BOUND.load(Relaxed), before + 1);
            drop(dev);
            assert_eq!(BOUND.load(Relaxed), before);
        }
        Ok(())
    }

    #[test]
    fn index_of_names() {
        assert_eq!(index_of(c"nsvm.0"), Some(0));
        assert_eq!(index_of(c"nsvm.15"), Some(15));
        assert_eq!(index_of(c"nsvm"), None);
        assert_eq!(index_of(c"nsvm.x"), None);
        assert_eq!(index_of(c"other.1"), None);
    }
}
