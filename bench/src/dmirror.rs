// SPDX-License-Identifier: MIT

//! The kernel's C peer, lib/test_hmm.c: its `/dev/hmm_dmirror0` device
//! (device-private memory) and the ioctls of lib/test_hmm_uapi.h.

use std::{fs::File, io, os::fd::AsRawFd};

/// `struct hmm_dmirror_cmd` of lib/test_hmm_uapi.h.
#[repr(C)]
#[derive(Default)]
struct Cmd {
    addr: u64,
    ptr: u64,
    npages: u64,
    cpages: u64,
    faults: u64,
}

const fn iowr(nr: u64) -> u64 {
    // _IOWR('H', nr, struct hmm_dmirror_cmd)
    (3 << 30) | ((std::mem::size_of::<Cmd>() as u64) << 16) | ((b'H' as u64) << 8) | nr
}

const READ: u64 = iowr(0x00);
const WRITE: u64 = iowr(0x01);
const MIGRATE_TO_DEV: u64 = iowr(0x02);
const MIGRATE_TO_SYS: u64 = iowr(0x03);

/// An open dmirror device: one mirror of this process's address space.
pub struct Dmirror(File);

impl Dmirror {
    /// Opens `/dev/hmm_dmirror0`, the first device-private instance.
    pub fn open() -> io::Result<Self> {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/hmm_dmirror0")
            .map(Self)
    }

    fn ioctl(&self, req: u64, addr: u64, ptr: u64, len: usize) -> io::Result<u64> {
        let mut cmd = Cmd {
            addr,
            ptr,
            npages: (len / crate::PAGE) as u64,
            ..Default::default()
        };
        // SAFETY: `cmd` is a `struct hmm_dmirror_cmd`; the driver reads and
        // writes only the user ranges the caller passed.
        let r = unsafe { libc::ioctl(self.0.as_raw_fd(), req as _, &mut cmd) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(cmd.cpages)
    }

    /// Mirrors `[addr, addr + len)` (read faults) and copies it to `dst`.
    pub fn read(&self, addr: u64, dst: u64, len: usize) -> io::Result<u64> {
        self.ioctl(READ, addr, dst, len)
    }

    /// Mirrors `[addr, addr + len)` for writing and copies `src` into it.
    pub fn write(&self, addr: u64, src: u64, len: usize) -> io::Result<u64> {
        self.ioctl(WRITE, addr, src, len)
    }

    /// Migrates `[addr, addr + len)` to the device's memory. The driver
    /// then copies the migrated data to `check` (for its tests to verify;
    /// hmm-tests' own benchmark measures the same call).
    pub fn to_device(&self, addr: u64, check: u64, len: usize) -> io::Result<u64> {
        self.ioctl(MIGRATE_TO_DEV, addr, check, len)
    }

    /// Migrates `[addr, addr + len)` back to system memory.
    pub fn to_system(&self, addr: u64, len: usize) -> io::Result<u64> {
        self.ioctl(MIGRATE_TO_SYS, addr, 0, len)
    }
}
