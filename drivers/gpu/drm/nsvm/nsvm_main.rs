// SPDX-License-Identifier: GPL-2.0

//! nsvm: shared virtual memory for a Nouveau-style GPU.
//!
//! A process and its GPU share one address space: the GPU faults on any CPU
//! pointer and the driver mirrors the CPU page tables into the GPU's. Each
//! module instance registers `num_devices` emulated GPUs, each a DRM device
//! with a render node on a faux device; see `Documentation/nsvm/`.

mod card;
mod driver;
mod file;
mod gem;
mod gpu;
mod ioctl;
mod mm;
mod param;
mod svm;
mod uapi;

use kernel::{
    debugfs,
    prelude::*, //
};

use crate::card::Card;

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
    },
}

/// Upper bound of `num_devices`: DRM hands out 64 render minors in all.
const MAX_DEVICES: u32 = 16;

struct NsvmModule {
    /// Declared first: the cards go before their debugfs root.
    _cards: KVec<Card>,
    _debugfs: debugfs::Dir,
}

impl kernel::Module for NsvmModule {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let count = module_parameters::num_devices.value();
        if !(1..=MAX_DEVICES).contains(&count) {
            pr_err!("num_devices={count} is out of range 1..={MAX_DEVICES}\n");
            return Err(EINVAL);
        }

        let debugfs = debugfs::Dir::new(c"nsvm");
        let mut cards = KVec::with_capacity(count as usize, GFP_KERNEL)?;
        for index in 0..count {
            cards.push(Card::new(index, &debugfs)?, GFP_KERNEL)?;
        }
        pr_info!(
            "registered {count} device(s), uapi {}.{}\n",
            uapi::DRM_NSVM_UAPI_MAJOR,
            uapi::DRM_NSVM_UAPI_MINOR
        );

        Ok(Self {
            _cards: cards,
            _debugfs: debugfs,
        })
    }
}
