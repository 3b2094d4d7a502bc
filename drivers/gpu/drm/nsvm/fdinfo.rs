// SPDX-License-Identifier: GPL-2.0

//! DRM fdinfo: a file's engine time and memory in
//! `/proc/<pid>/fdinfo/<fd>`, in the format of
//! Documentation/gpu/drm-usage-stats.rst, for gputop and nvtop.
//!
//! DRM prints `drm-driver` and `drm-client-id` (and `drm-client-name`, if
//! set) first; nsvm adds:
//!
//! - `drm-engine-compute`: nanoseconds the GPU's engine ran the file's jobs,
//!   from each job's start to its end, stalls on faults included (a job
//!   holds its channel while its faults are served, as a hardware context
//!   holds its engine), running jobs up to now; EXECs and queued jobs
//!   alike ([`EngineTime`]).
//! - `drm-engine-capacity-compute`: how many channels the engine runs at
//!   once (one per CPU), when more than one.
//! - `drm-total-system`, `drm-resident-system`: the system memory the
//!   file's GPU page table maps (the process's own pages: all of it is
//!   resident).
//! - `drm-total-vram`, `drm-resident-vram`: the device memory it maps.
//!
//! A file not bound by `SVM_INIT` yet shows zeros. The values are read
//! without stopping the GPU: a snapshot, as every fdinfo is.

use core::fmt::Write;

use kernel::{
    drm, new_spinlock,
    prelude::*,
    sync::SpinLock,
    time::{
        Instant,
        Monotonic, //
    },
};

use crate::{
    file::NsvmFile,
    gpu::{
        Entries,
        GpuVm,
        PAGE_SIZE_4K, //
    },
};

/// How long the GPU's engine has run a file's jobs: `drm-engine-compute`,
/// which grows while a job runs (gputop samples it) and never goes back.
#[pin_data]
pub(crate) struct EngineTime {
    /// What the times under `busy` count from.
    epoch: Instant<Monotonic>,
    #[pin]
    busy: SpinLock<Busy>,
}

/// The jobs' times in nanoseconds since [`EngineTime::epoch`], under
/// [`EngineTime::busy`], with the time read under the lock: the busy time
/// at `t` is `ended + running * t - started`, which only grows.
#[derive(Default)]
struct Busy {
    /// The time the jobs that ended ran.
    ended: u64,
    /// Jobs running.
    running: u64,
    /// The sum of their start times, each at most any later time.
    started: u64,
}

impl EngineTime {
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            epoch: Instant::now(),
            busy <- new_spinlock!(Busy::default(), "EngineTime::busy"),
        })
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos().max(0) as u64
    }

    /// A job starts running; returns its start, for [`Self::end`].
    pub(crate) fn start(&self) -> u64 {
        let mut b = self.busy.lock();
        let t = self.now();
        b.running += 1;
        b.started += t;
        t
    }

    /// The job that started at `started` ends.
    pub(crate) fn end(&self, started: u64) {
        let mut b = self.busy.lock();
        let t = self.now();
        b.running -= 1;
        b.started -= started;
        b.ended += t - started;
    }

    /// The busy time so far, running jobs included.
    pub(crate) fn ns(&self) -> u64 {
        let b = self.busy.lock();
        let t = self.now();
        b.ended + b.running * t - b.started
    }
}

/// Prints `file`'s keys to `p`.
pub(crate) fn show(file: &NsvmFile, p: &mut drm::Printer) {
    let (engine_ns, entries) = match file.mirror() {
        Ok(mirror) => {
            let vm = mirror.vm();
            let entries = vm.vm.lock().entries();
            (vm.engine_time.ns(), entries)
        }
        Err(_) => (0, Entries::default()),
    };
    // A printer's writes cannot fail: fdinfo that does not fit is retried
    // by seq_file with more room.
    let _ = print(p, engine_ns, entries, kernel::cpu::nr_cpu_ids());
}

fn print(p: &mut impl Write, engine_ns: u64, e: Entries, capacity: u32) -> core::fmt::Result {
    let kib = |pages: usize| pages * (PAGE_SIZE_4K / 1024);
    writeln!(p, "drm-engine-compute:\t{engine_ns} ns")?;
    if capacity > 1 {
        writeln!(p, "drm-engine-capacity-compute:\t{capacity}")?;
    }
    for (region, pages) in [("system", e.system), ("vram", e.vram)] {
        writeln!(p, "drm-total-{region}:\t{} KiB", kib(pages))?;
        writeln!(p, "drm-resident-{region}:\t{} KiB", kib(pages))?;
    }
    Ok(())
}

#[kunit_tests(nsvm_fdinfo)]
mod tests {
    use super::*;
    use kernel::time::{
        delay::fsleep,
        Delta, //
    };

    /// A `Write` into a fixed buffer.
    struct Buf {
        bytes: [u8; 512],
        len: usize,
    }

    impl Write for Buf {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            let end = self.len + s.len();
            self.bytes
                .get_mut(self.len..end)
                .ok_or(core::fmt::Error)?
                .copy_from_slice(s.as_bytes());
            self.len = end;
            Ok(())
        }
    }

    /// The busy time grows while a job runs, keeps what it ran once it
    /// ended, and stands still with no job.
    #[test]
    fn engine_time_grows_while_running() -> Result {
        let t = KBox::pin_init(EngineTime::new(), GFP_KERNEL)?;
        assert_eq!(t.ns(), 0);
        let started = t.start();
        fsleep(Delta::from_millis(2));
        let running = t.ns();
        assert!(running >= 2_000_000);
        t.end(started);
        let ended = t.ns();
        assert!(ended >= running);
        fsleep(Delta::from_millis(1));
        assert_eq!(t.ns(), ended);
        Ok(())
    }

    #[test]
    fn keys_follow_drm_usage_stats() {
        let mut b = Buf {
            bytes: [0; 512],
            len: 0,
        };
        let e = Entries {
            system: 3,
            vram: 512,
        };
        assert!(print(&mut b, 1234, e, 2).is_ok());
        let want = "drm-engine-compute:\t1234 ns\n\
                    drm-engine-capacity-compute:\t2\n\
                    drm-total-system:\t12 KiB\n\
                    drm-resident-system:\t12 KiB\n\
                    drm-total-vram:\t2048 KiB\n\
                    drm-resident-vram:\t2048 KiB\n";
        assert_eq!(&b.bytes[..b.len], want.as_bytes());
        // One engine: no capacity key.
        b.len = 0;
        assert!(print(&mut b, 0, Entries::default(), 1).is_ok());
        assert!(!core::str::from_utf8(&b.bytes[..b.len])
            .unwrap_or("")
            .contains("capacity"));
    }
}
