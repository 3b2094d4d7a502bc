// SPDX-License-Identifier: GPL-2.0

//! nsvm: shared virtual memory for a Nouveau-style GPU.
//!
//! A process and its GPU share one address space: the GPU faults on any CPU
//! pointer and the driver mirrors the CPU page tables into the GPU's. Each
//! module instance registers `num_devices` emulated GPUs, each a DRM device
//! with a render node on a platform device; see `Documentation/nsvm/`.

mod addr;
mod attr;
mod card;
mod driver;
mod exec;
mod fdinfo;
mod file;
mod gem;
mod gpu;
mod handler;
mod ioctl;
mod mm;
mod param;
mod ptdump;
mod svm;
mod trace;
mod uapi;
mod vram;

use kernel::{
    debugfs,
    platform,
    prelude::*,
    sync::atomic::Relaxed,
    time::Delta, //
};

use crate::card::{
    CardDriver,
    Config,
    ConfigGuard, //
};

module! {
    type: NsvmModule,
    name: "nsvm",
    authors: ["The nsvm developers"],
    description: "Shared virtual memory for Nouveau-style GPUs",
    license: "GPL",
    params: {
        num_devices: u32 {
            default: 2,
            description: "Number of emulated nsvm GPUs to register (1..=16)",
        },
        vram_mb: u32 {
            default: 256,
            description: "Device memory per GPU in MiB (an even number, 2..=8192)",
        },
        job_timeout_ms: u32 {
            default: 10000,
            description: "How long a GPU job may go without progress before its queue fails with ETIMEDOUT, in ms (1..=3600000)",
        },
        copy_channels: u32 {
            default: 2,
            description: "Copy engine channels per GPU (1..=8): how many CPUs share a migration's page copies",
        },
    },
}

/// Upper bound of `num_devices`: DRM hands out 64 render minors in all.
const MAX_DEVICES: u32 = 16;
/// Upper bound of `vram_mb`: `gpu::MAX_CHUNKS` chunks of 2 MiB.
const MAX_VRAM_MB: u32 = 8192;

/// Fields are dropped in order: the devices (each card unbound), then the
/// driver, then the configuration the probes read.
struct NsvmModule {
    _devices: KVec<platform::Registration>,
    _driver: Pin<KBox<kernel::driver::Registration<platform::Adapter<CardDriver>>>>,
    _config: ConfigGuard,
}

impl kernel::Module for NsvmModule {
    fn init(module: &'static ThisModule) -> Result<Self> {
        let count = module_parameters::num_devices.value();
        if !(1..=MAX_DEVICES).contains(&count) {
            pr_err!("num_devices={count} is out of range 1..={MAX_DEVICES}\n");
            return Err(EINVAL);
        }

        let vram_mb = module_parameters::vram_mb.value();
        if !(2..=MAX_VRAM_MB).contains(&vram_mb) || vram_mb % 2 != 0 {
            pr_err!("vram_mb={vram_mb} is not an even number in 2..={MAX_VRAM_MB}\n");
            return Err(EINVAL);
        }
        let vram_size = vram_mb as usize * (1 << 20);

        let channels = module_parameters::copy_channels.value();
        if !(1..=gpu::copy::MAX_CHANNELS).contains(&channels) {
            pr_err!(
                "copy_channels={channels} is out of range 1..={}\n",
                gpu::copy::MAX_CHANNELS
            );
            return Err(EINVAL);
        }

        let timeout_ms = module_parameters::job_timeout_ms.value();
        if !(1..=exec::MAX_TIMEOUT_MS).contains(&timeout_ms) {
            pr_err!(
                "job_timeout_ms={timeout_ms} is out of range 1..={}\n",
                exec::MAX_TIMEOUT_MS
            );
            return Err(EINVAL);
        }
        let timeout = Delta::from_millis(i64::from(timeout_ms));

        // SAFETY: Once, here, before the driver (the lock's only other user)
        // is registered.
        let config = unsafe {
            ConfigGuard::new(Config {
                vram_size,
                copy_channels: channels,
                job_timeout: timeout,
                debugfs: debugfs::Dir::new(c"nsvm"),
            })
        };
        let driver = KBox::pin_init(
            kernel::driver::Registration::<platform::Adapter<CardDriver>>::new(c"nsvm", module),
            GFP_KERNEL,
        )?;
        let mut devices = KVec::with_capacity(count as usize, GFP_KERNEL)?;
        for index in 0..count {
            // The driver binds it now, synchronously.
            devices.push(card::register(index)?, GFP_KERNEL)?;
        }
        let bound = card::BOUND.load(Relaxed);
        if bound != count {
            pr_err!("{bound} of {count} device(s) bound (see the messages above)\n");
            return Err(ENODEV);
        }
        pr_info!(
            "registered {count} device(s) with {vram_mb} MiB and {channels} copy channel(s) each, uapi {}.{}\n",
            uapi::DRM_NSVM_UAPI_MAJOR,
            uapi::DRM_NSVM_UAPI_MINOR
        );

        Ok(Self {
            _devices: devices,
            _driver: driver,
            _config: config,
        })
    }
}
