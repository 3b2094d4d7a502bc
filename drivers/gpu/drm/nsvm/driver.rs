// SPDX-License-Identifier: GPL-2.0

//! The DRM driver: what the DRM core knows of nsvm.

use kernel::{
    debugfs,
    device::DeviceContext,
    drm::{
        self,
        gem, //
    },
    new_mutex, platform,
    prelude::*,
    sync::{
        atomic::{
            Atomic,
            Relaxed, //
        },
        Arc, Mutex,
    },
    time::Delta,
};

use crate::{
    file::NsvmFile,
    gem::NsvmObject,
    gpu::{
        engine::Engine,
        soft::SoftVm,
        GpuFaults,
        GpuVm, //
    },
    handler::{
        FaultHandler,
        HandlerThread, //
    },
    ioctl,
    vram::Vram, //
};

/// The nsvm DRM driver.
pub(crate) struct NsvmDriver;

/// An nsvm DRM device.
pub(crate) type NsvmDevice<Ctx = drm::Normal> = drm::Device<NsvmDriver, Ctx>;

const INFO: drm::DriverInfo = drm::DriverInfo {
    major: 0,
    minor: 2,
    patchlevel: 0,
    name: c"nsvm",
    desc: c"Shared virtual memory for Nouveau-style GPUs",
};

/// The device's debugfs directory and its own files in it.
struct DeviceDebugfs {
    /// `<debugfs>/nsvm/nsvm.<index>`: one `client-<id>` file per mirror.
    dir: debugfs::Dir,
    /// `vram`: the device memory's state.
    _vram: Pin<KBox<debugfs::File<Arc<Vram>>>>,
    /// `faults`: the fault handler's state.
    _faults: Pin<KBox<debugfs::File<Arc<FaultHandler<SoftVm>>>>>,
}

/// Per-device state, reachable from every file and ioctl of the device.
#[pin_data]
pub(crate) struct DeviceData {
    /// Index among the devices of this module instance (`nsvm.<index>`).
    pub(crate) index: u32,
    /// `<debugfs>/nsvm/nsvm.<index>` with the device's files, until the
    /// device is removed ([`DeviceData::remove_debugfs`]): then the name is
    /// free for the next binding, even while files of this one are open.
    #[pin]
    debugfs: Mutex<Option<DeviceDebugfs>>,
    /// The device memory. Every mirror holds a reference, so it goes (and
    /// with it, everything still in it goes back to system memory) after
    /// the last file.
    pub(crate) vram: Arc<Vram>,
    /// The id of the next mirror bound on this device.
    next_client: Atomic<u64>,
    /// The device fault handler. Declared before `engine`: its worker stops
    /// first, and nothing waits for it any more (every file is gone).
    pub(crate) faults: HandlerThread<SoftVm>,
    /// The GPU's command processor. Dropping it waits for the last
    /// channel's worker; no job holds a reference to the device, so none
    /// drops it.
    pub(crate) engine: Engine,
    /// How long a job may go without progress, unless its queue says.
    pub(crate) job_timeout: Delta,
}

impl DeviceData {
    pub(crate) fn new(
        index: u32,
        debugfs: debugfs::Dir,
        vram: Arc<Vram>,
        job_timeout: Delta,
    ) -> Result<impl PinInit<Self, Error>> {
        let file = KBox::pin_init(debugfs.read_only_file(c"vram", vram.clone()), GFP_KERNEL)?;
        let engine = Engine::new()?;
        let faults = HandlerThread::new(SoftVm::faults(&engine))?;
        let faults_file = KBox::pin_init(
            debugfs.read_only_file(c"faults", faults.handler().clone()),
            GFP_KERNEL,
        )?;
        let debugfs = DeviceDebugfs {
            dir: debugfs,
            _vram: file,
            _faults: faults_file,
        };
        Ok(try_pin_init!(Self {
            index,
            debugfs <- new_mutex!(Some(debugfs), "DeviceData::debugfs"),
            vram,
            next_client: Atomic::new(0),
            faults,
            engine,
            job_timeout,
        }))
    }

    /// The first step of the device's removal (its platform device is
    /// being unbound), before the DRM device is unplugged: no job is
    /// accepted any more, every channel of every file fails with `ENODEV`
    /// (EXECs return it, waits too), and the fault handler stops. The
    /// ioctls still running end, so `drm_dev_unplug()` does not wait long
    /// for them; from then on every ioctl fails with `ENODEV`, and the
    /// files close as usual.
    pub(crate) fn unplug(&self) {
        self.faults.handler().faults().shutdown();
        self.faults.handler().fail_all(ENODEV);
        self.faults.wait_stopped();
    }

    /// The device's debugfs directory, for a new mirror's files; `ENODEV`
    /// once the device was removed.
    pub(crate) fn debugfs_dir(&self) -> Result<debugfs::Dir> {
        let d = self.debugfs.lock();
        Ok(d.as_ref().ok_or(ENODEV)?.dir.clone())
    }

    /// The last step of the device's removal, once no ioctl runs
    /// (`drm_dev_unplug()`), so that no mirror is bound any more: removes
    /// the debugfs files of every mirror, then the device's directory.
    pub(crate) fn remove_debugfs(&self) {
        let d = self.debugfs.lock().take();
        self.faults
            .handler()
            .for_each_mirror(|m| m.remove_debugfs());
        // The directory goes with its last file.
        drop(d);
    }

    /// A new client id, unique on this device.
    pub(crate) fn client_id(&self) -> u64 {
        self.next_client.fetch_add(1, Relaxed)
    }
}

#[vtable]
impl drm::Driver for NsvmDriver {
    type Data = DeviceData;
    type RegistrationData<'a> = ();
    type File = NsvmFile;
    type Object = gem::Object<NsvmObject>;
    type ParentDevice<Ctx: DeviceContext> = platform::Device<Ctx>;

    const INFO: drm::DriverInfo = INFO;
    const FEAT_RENDER: bool = true;
    const FEAT_SYNCOBJ: bool = true;
    const FEAT_SYNCOBJ_TIMELINE: bool = true;
    const IOCTLS: &'static [drm::ioctl::DrmIoctlDescriptor] = ioctl::IOCTLS;

    fn show_fdinfo(file: &drm::File<NsvmFile>, p: &mut drm::Printer) {
        crate::fdinfo::show(&file.inner(), p);
    }
}
