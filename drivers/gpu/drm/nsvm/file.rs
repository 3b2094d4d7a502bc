// SPDX-License-Identifier: GPL-2.0

//! Per-open-file state and the ioctl handlers.
//!
//! Each open of an nsvm node gets an [`NsvmFile`]; the SVM mirror of that
//! file will live here, one per file, created by `SVM_INIT` and torn down
//! when the DRM core releases the file.

use kernel::{
    drm::{
        self,
        ioctl::RENDER_ALLOW,
        Registered, //
    },
    prelude::*, //
};

use crate::{
    driver::NsvmDevice,
    ioctl::Ioctl,
    param,
    uapi, //
};

/// The private data of an open nsvm DRM file.
#[pin_data]
pub(crate) struct NsvmFile {}

impl drm::file::DriverFile for NsvmFile {
    type Driver = crate::driver::NsvmDriver;

    fn open(_dev: &NsvmDevice) -> Result<Pin<KBox<Self>>> {
        KBox::try_pin_init(try_pin_init!(Self {}), GFP_KERNEL)
    }
}

/// `DRM_IOCTL_NSVM_GET_PARAM`.
pub(crate) struct GetParam;

impl Ioctl for GetParam {
    type Arg = uapi::drm_nsvm_get_param;
    const NR: u32 = uapi::DRM_NSVM_GET_PARAM;
    const NAME: &'static CStr = c"NSVM_GET_PARAM";
    const FLAGS: u32 = RENDER_ALLOW;

    fn handle(
        dev: &NsvmDevice<Registered>,
        _file: &drm::File<NsvmFile>,
        arg: &mut Self::Arg,
    ) -> Result<u32> {
        if arg.pad != 0 {
            return Err(EINVAL);
        }
        let facts = param::Facts {
            index: dev.index,
            vram_size: 0,
        };
        arg.value = param::query(&facts, arg.param)?;
        Ok(0)
    }
}
