// SPDX-License-Identifier: MIT

//! DRM sync objects on an nsvm file: the DRM core's ioctls, and their use
//! as in-fences of SUBMIT (uapi 0.6, `DRM_NSVM_FEATURE_SYNCOBJ`).

use std::os::fd::AsRawFd;

use crate::{drm_iowr, sys, Cmd, Device, Result};

/// `DRM_IOCTL_GET_CAP`.
pub const DRM_IOCTL_GET_CAP: u64 = drm_iowr::<sys::drm_get_cap>(0x0c);
/// `DRM_IOCTL_SYNCOBJ_CREATE`.
pub const DRM_IOCTL_SYNCOBJ_CREATE: u64 = drm_iowr::<sys::drm_syncobj_create>(0xbf);
/// `DRM_IOCTL_SYNCOBJ_DESTROY`.
pub const DRM_IOCTL_SYNCOBJ_DESTROY: u64 = drm_iowr::<sys::drm_syncobj_destroy>(0xc0);
/// `DRM_IOCTL_SYNCOBJ_FD_TO_HANDLE`.
pub const DRM_IOCTL_SYNCOBJ_FD_TO_HANDLE: u64 = drm_iowr::<sys::drm_syncobj_handle>(0xc2);
/// `DRM_IOCTL_SYNCOBJ_WAIT`.
pub const DRM_IOCTL_SYNCOBJ_WAIT: u64 = drm_iowr::<sys::drm_syncobj_wait>(0xc3);
/// `DRM_IOCTL_SYNCOBJ_SIGNAL`.
pub const DRM_IOCTL_SYNCOBJ_SIGNAL: u64 = drm_iowr::<sys::drm_syncobj_array>(0xc5);
/// `DRM_IOCTL_SYNCOBJ_TIMELINE_WAIT`.
pub const DRM_IOCTL_SYNCOBJ_TIMELINE_WAIT: u64 = drm_iowr::<sys::drm_syncobj_timeline_wait>(0xca);
/// `DRM_IOCTL_SYNCOBJ_QUERY`.
pub const DRM_IOCTL_SYNCOBJ_QUERY: u64 = drm_iowr::<sys::drm_syncobj_timeline_array>(0xcb);
/// `DRM_IOCTL_SYNCOBJ_TRANSFER`.
pub const DRM_IOCTL_SYNCOBJ_TRANSFER: u64 = drm_iowr::<sys::drm_syncobj_transfer>(0xcc);
/// `DRM_IOCTL_SYNCOBJ_TIMELINE_SIGNAL`.
pub const DRM_IOCTL_SYNCOBJ_TIMELINE_SIGNAL: u64 =
    drm_iowr::<sys::drm_syncobj_timeline_array>(0xcd);

impl Device {
    /// `DRM_IOCTL_GET_CAP`: the value of capability `cap` (`DRM_CAP_*`).
    pub fn get_cap(&self, cap: u32) -> Result<u64> {
        let mut arg = sys::drm_get_cap {
            capability: cap.into(),
            value: 0,
        };
        self.ioctl(DRM_IOCTL_GET_CAP, &mut arg)?;
        Ok(arg.value)
    }

    /// Creates a sync object, signaled if `signaled`; returns its handle.
    pub fn syncobj_create(&self, signaled: bool) -> Result<u32> {
        let mut arg = sys::drm_syncobj_create {
            handle: 0,
            flags: if signaled {
                sys::DRM_SYNCOBJ_CREATE_SIGNALED
            } else {
                0
            },
        };
        self.ioctl(DRM_IOCTL_SYNCOBJ_CREATE, &mut arg)?;
        Ok(arg.handle)
    }

    /// Destroys sync object `handle`.
    pub fn syncobj_destroy(&self, handle: u32) -> Result<()> {
        let mut arg = sys::drm_syncobj_destroy { handle, pad: 0 };
        self.ioctl(DRM_IOCTL_SYNCOBJ_DESTROY, &mut arg)
    }

    /// Imports the fence of sync file `fd` into a new sync object; returns
    /// its handle.
    pub fn syncobj_import_sync_file(&self, fd: &impl AsRawFd) -> Result<u32> {
        let mut arg = sys::drm_syncobj_handle {
            fd: fd.as_raw_fd(),
            flags: sys::DRM_SYNCOBJ_FD_TO_HANDLE_FLAGS_IMPORT_SYNC_FILE,
            ..Default::default()
        };
        // A sync file goes into an existing sync object: make one.
        arg.handle = self.syncobj_create(false)?;
        let handle = arg.handle;
        if let Err(e) = self.ioctl(DRM_IOCTL_SYNCOBJ_FD_TO_HANDLE, &mut arg) {
            let _ = self.syncobj_destroy(handle);
            return Err(e);
        }
        Ok(handle)
    }

    /// Signals the binary sync objects `handles` (`DRM_IOCTL_SYNCOBJ_SIGNAL`).
    pub fn syncobj_signal(&self, handles: &[u32]) -> Result<()> {
        let mut arg = sys::drm_syncobj_array {
            handles: handles.as_ptr() as u64,
            count_handles: handles.len() as u32,
            pad: 0,
        };
        self.ioctl(DRM_IOCTL_SYNCOBJ_SIGNAL, &mut arg)
    }

    /// Signals point `point` of timeline `handle`.
    pub fn syncobj_timeline_signal(&self, handle: u32, point: u64) -> Result<()> {
        let mut arg = sys::drm_syncobj_timeline_array {
            handles: (&raw const handle) as u64,
            points: (&raw const point) as u64,
            count_handles: 1,
            flags: 0,
        };
        self.ioctl(DRM_IOCTL_SYNCOBJ_TIMELINE_SIGNAL, &mut arg)
    }

    /// The last signaled point of timeline `handle`.
    pub fn syncobj_query(&self, handle: u32) -> Result<u64> {
        let mut point = 0u64;
        let mut arg = sys::drm_syncobj_timeline_array {
            handles: (&raw const handle) as u64,
            points: (&raw mut point) as u64,
            count_handles: 1,
            flags: 0,
        };
        self.ioctl(DRM_IOCTL_SYNCOBJ_QUERY, &mut arg)?;
        Ok(point)
    }

    /// Sets point `dst_point` of `dst` (0: `dst` is binary) to the fence of
    /// `src` at `src_point`.
    pub fn syncobj_transfer(
        &self,
        src: u32,
        src_point: u64,
        dst: u32,
        dst_point: u64,
    ) -> Result<()> {
        let mut arg = sys::drm_syncobj_transfer {
            src_handle: src,
            dst_handle: dst,
            src_point,
            dst_point,
            flags: 0,
            pad: 0,
        };
        self.ioctl(DRM_IOCTL_SYNCOBJ_TRANSFER, &mut arg)
    }

    /// Waits until every binary sync object of `handles` signaled, or the
    /// absolute `CLOCK_MONOTONIC` time `deadline_ns` (`ETIME`).
    pub fn syncobj_wait(&self, handles: &[u32], deadline_ns: i64, flags: u32) -> Result<()> {
        let mut arg = sys::drm_syncobj_wait {
            handles: handles.as_ptr() as u64,
            timeout_nsec: deadline_ns,
            count_handles: handles.len() as u32,
            flags,
            ..Default::default()
        };
        self.ioctl(DRM_IOCTL_SYNCOBJ_WAIT, &mut arg)
    }

    /// Waits until point `point` of timeline `handle` signaled, or the
    /// absolute `CLOCK_MONOTONIC` time `deadline_ns` (`ETIME`).
    pub fn syncobj_timeline_wait(
        &self,
        handle: u32,
        point: u64,
        deadline_ns: i64,
        flags: u32,
    ) -> Result<()> {
        let mut arg = sys::drm_syncobj_timeline_wait {
            handles: (&raw const handle) as u64,
            points: (&raw const point) as u64,
            timeout_nsec: deadline_ns,
            count_handles: 1,
            flags,
            ..Default::default()
        };
        self.ioctl(DRM_IOCTL_SYNCOBJ_TIMELINE_WAIT, &mut arg)
    }

    /// As [`Device::submit`], with the job waiting for the in-fences `syncs`
    /// before it starts.
    pub fn submit_after(
        &self,
        queue: u32,
        cmds: &[Cmd],
        fence: Option<(u64, u64)>,
        syncs: &[sys::drm_nsvm_sync],
    ) -> Result<u64> {
        let (fence_addr, fence_value) = fence.unwrap_or((0, 0));
        let mut arg = sys::drm_nsvm_submit {
            size: crate::size_of_u32::<sys::drm_nsvm_submit>(),
            queue_id: queue,
            cmds: cmds.as_ptr() as u64,
            num_cmds: cmds.len() as u32,
            cmd_size: crate::size_of_u32::<Cmd>(),
            fence_addr,
            fence_value,
            syncs: syncs.as_ptr() as u64,
            num_syncs: syncs.len() as u32,
            sync_size: crate::size_of_u32::<sys::drm_nsvm_sync>(),
            ..Default::default()
        };
        self.submit_raw(&mut arg)?;
        Ok(arg.seqno)
    }
}

/// An in-fence of SUBMIT: sync object `handle` at timeline point `point`
/// (0 for a binary sync object).
pub fn sync(handle: u32, point: u64) -> sys::drm_nsvm_sync {
    sys::drm_nsvm_sync {
        handle,
        flags: 0,
        point,
    }
}
