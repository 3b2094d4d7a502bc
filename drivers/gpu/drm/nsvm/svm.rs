// SPDX-License-Identifier: GPL-2.0

//! The SVM mirror: one per DRM file, binding the file to a process's
//! address space and keeping the GPU page table a subset of the CPU's.
//!
//! # Lifetime rules
//!
//! - `SVM_INIT` creates the [`Mirror`] of the file from `current->mm`. The
//!   mirror holds an `mmgrab` reference ([`Mirror::mm`], an `ARef<Mm>`) until
//!   the DRM file is released, so the `mm_struct` memory outlives its
//!   notifier even when the file is closed long after the process exited,
//!   by another process, or late in `do_exit()`.
//! - Every ioctl that inspects or migrates calls [`Mirror::enter`], which
//!   takes `mmget_not_zero()` ([`ARef<MmWithUser>`]) for the ioctl's
//!   duration: `ESRCH` when the address space is gone, `EPERM` when the
//!   caller is another process (fork, `SCM_RIGHTS`). Ioctls that queue GPU
//!   work (EXEC, SUBMIT) check the caller the same way
//!   ([`Mirror::check_owner`]) and keep no reference: jobs hold none.
//! - The device's fault handler, in no process's context, takes its own
//!   `mmget_not_zero()` per batch ([`Mirror::mmget_not_zero`]) and fails
//!   the faulting channels with `ESRCH` when there is none. [`Mirror::serve`]
//!   takes the [`MmWithUser`]: nothing reaches the address space without
//!   one, so no flag says it is "dead" and no back pointer is ever cleared.
//! - Releasing the file stops its channels and makes the handler forget
//!   the mirror; dropping the last reference to the mirror then unmaps the
//!   GPU entries and flushes the TLB, removes the notifier (waiting for
//!   running callbacks) and drops the `mmgrab` last.
//!
//! # Lock order
//!
//! As the code takes them (an arrow: "is held while taking"):
//!
//! 1. `"Vram::evict"`: one eviction at a time (see `vram.rs`); taken with
//!    none of the others held.
//! 2. `mmap_lock`: read by the range faults (inside
//!    [`IntervalNotifier::snapshot`] and [`IntervalNotifier::fault`]), a
//!    migration step and [`Mirror::exclusive`]; written by munmap, mprotect
//!    and friends, whose invalidations take 4.
//! 3. folio locks: a migration's collected pages, the page of an
//!    [`ExclusivePage`], and those reclaim and the core's migrations hold
//!    when they invalidate.
//! 4. [`MirrorVm::vm`] (`"Mirror::vm"`): the GPU page table, the driver
//!    lock of the notifier. Taken by every invalidation (with 2 held by
//!    munmap, 3 by reclaim and migration, and from reclaim itself), by
//!    [`Mirror::exclusive`] with 2 and 3 held (2 -> 3 -> 4), and by the
//!    fault path's commit, the GPU's lock runs and SNAPSHOT with neither.
//!    Under it nothing allocates in a way that may reclaim (lockdep knows it
//!    is taken in reclaim from the mirror's creation on, see
//!    `mm/notifier.rs`), nothing touches user memory through the address
//!    space, and neither 2 nor 3 is taken; page-table memory is reserved
//!    before.
//! 5. `"Vram::alloc"`: the device-memory allocator, a leaf (see `vram.rs`).
//!
//! [`MirrorVm::attrs`] (`"Mirror::attrs"`) is a leaf, held only to read or
//! change the attributes.

use core::fmt;

use kernel::{
    alloc::flags::__GFP_NOWARN,
    debugfs,
    mm::{
        Mm,
        MmWithUser, //
    },
    new_mutex,
    prelude::*,
    str::CString,
    sync::{
        aref::ARef,
        atomic::{
            Atomic,
            Relaxed, //
        },
        Arc, Mutex,
    },
    time::{
        Instant,
        Monotonic, //
    },
};

use crate::{
    addr,
    attr::{
        AtomicMode,
        Attr,
        Attrs, //
    },
    exec::Queues,
    fdinfo::EngineTime,
    gpu::{
        Fault,
        GpuVm,
        Mapping,
        Pte,
        PteAddr,
        PAGE_SIZE_2M,
        PAGE_SIZE_4K, //
    },
    mm::{
        migrate::{
            Direction,
            ExclusivePage,
            MmapRead, //
        },
        notifier::RangeFault,
        IntervalNotifier,
        Invalidate,
        Invalidation,
        PageState, //
    },
    ptdump::PtDump,
    trace, uapi,
    vram::{
        Moved,
        Vram, //
    },
};

/// Default fault window: the GPU maps this much around a faulting address.
pub(crate) const DEFAULT_WINDOW: usize = PAGE_SIZE_2M;
/// Largest fault window userspace may ask for.
pub(crate) const MAX_WINDOW: usize = 1 << 30;

/// GPU entries a SNAPSHOT reads per hold of the VM lock: one directory.
const SNAPSHOT_RUN: usize = PAGE_SIZE_2M / PAGE_SIZE_4K;

/// How far around a GPU fault missing pages are faulted in. The rest of
/// the fault window is mapped only where the CPU has pages already: a
/// sparse access does not populate 2 MiB of memory nobody touched, and a
/// sequential one still faults whole windows (its batch covers them).
const FAULT_AROUND: usize = 64 << 10;

/// Per-file SVM counters.
pub(crate) struct Counters {
    pub(crate) faults: Atomic<u64>,
    pub(crate) batches: Atomic<u64>,
    pub(crate) retries: Atomic<u64>,
    pub(crate) invalidations: Atomic<u64>,
    pub(crate) pages_mapped: Atomic<u64>,
    pub(crate) pages_unmapped: Atomic<u64>,
}

impl Counters {
    fn new() -> Self {
        Self {
            faults: Atomic::new(0),
            batches: Atomic::new(0),
            retries: Atomic::new(0),
            invalidations: Atomic::new(0),
            pages_mapped: Atomic::new(0),
            pages_unmapped: Atomic::new(0),
        }
    }

    pub(crate) fn add(c: &Atomic<u64>, n: u64) {
        c.fetch_add(n, Relaxed);
    }

    pub(crate) fn to_uapi(&self) -> uapi::drm_nsvm_counters {
        uapi::drm_nsvm_counters {
            faults: self.faults.load(Relaxed),
            batches: self.batches.load(Relaxed),
            retries: self.retries.load(Relaxed),
            invalidations: self.invalidations.load(Relaxed),
            pages_mapped: self.pages_mapped.load(Relaxed),
            pages_unmapped: self.pages_unmapped.load(Relaxed),
        }
    }
}

/// The GPU side of a mirror: what invalidation callbacks reach.
#[pin_data]
pub(crate) struct MirrorVm<V: GpuVm> {
    /// The GPU address space; see the lock order.
    #[pin]
    pub(crate) vm: Mutex<V>,
    /// The memory policy of address ranges; see the lock order.
    #[pin]
    pub(crate) attrs: Mutex<Attrs>,
    /// The GPU's memory.
    pub(crate) vram: Arc<Vram>,
    pub(crate) counters: Counters,
    /// How long the GPU's engine ran the file's jobs (fdinfo).
    #[pin]
    pub(crate) engine_time: EngineTime,
    /// The file's client id (debugfs `client-<id>`, tracepoints).
    pub(crate) client: u64,
    /// The user address limit of the address space (`TASK_SIZE`, page
    /// aligned): the ioctls let no address at or above it in, and windows
    /// end at it.
    pub(crate) limit: usize,
}

impl<V: GpuVm> Invalidate for MirrorVm<V> {
    type Mappings = V;

    fn lock(&self) -> &Mutex<V> {
        &self.vm
    }

    fn invalidate(&self, inv: &Invalidation<'_>, vm: &mut V) {
        // Only a write-protect event leaves the pages where they are; for
        // anything else (mprotect included: the notifier does not say what
        // the new protection is) the entries go.
        if inv.write_protect() {
            let protected = vm.protect(inv.start(), inv.end());
            if protected > 0 {
                vm.flush_tlb(inv.start(), inv.end());
                Counters::add(&self.counters.invalidations, 1);
                trace::invalidate(self.client, inv.start(), inv.end(), true, protected);
            }
            return;
        }
        let dropped = vm.unmap(inv.start(), inv.end());
        if dropped > 0 {
            vm.flush_tlb(inv.start(), inv.end());
            Counters::add(&self.counters.invalidations, 1);
            Counters::add(&self.counters.pages_unmapped, dropped as u64);
            trace::invalidate(self.client, inv.start(), inv.end(), false, dropped);
        }
    }
}

/// A part of a fault window whose missing pages a fault has faulted in,
/// writable with `write`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    start: usize,
    end: usize,
    write: bool,
}

/// The spans of a window's faults (sorted by address): the
/// [`FAULT_AROUND`] block of each, within the window, writable where a
/// write or atomic fault lies; adjacent blocks of one kind merged.
fn spans(faults: &[Fault], (win_start, win_end): (usize, usize)) -> Result<KVec<Span>> {
    // One allocation: the fault path runs this for every window.
    let mut spans: KVec<Span> = KVec::with_capacity(faults.len(), GFP_KERNEL)?;
    // The block being gathered: whether it is writable is known once its
    // last fault is seen.
    let mut cur: Option<Span> = None;
    let mut flush = |b: Span| match spans.last_mut() {
        Some(s) if s.end == b.start && s.write == b.write => {
            s.end = b.end;
            Ok(())
        }
        // At most a span per fault: room was made above.
        _ => spans.push_within_capacity(b).map_err(|_| ENOMEM),
    };
    for f in faults {
        let block = f.addr & !(FAULT_AROUND - 1);
        let start = block.max(win_start);
        let write = f.write || f.atomic;
        match cur.as_mut() {
            Some(b) if b.start == start => b.write |= write,
            _ => {
                if let Some(b) = cur.take() {
                    flush(b)?;
                }
                let end = addr::window_end(block, FAULT_AROUND, win_end);
                cur = Some(Span { start, end, write });
            }
        }
    }
    if let Some(b) = cur {
        flush(b)?;
    }
    Ok(spans)
}

/// How long serving one GPU fault may take while invalidations keep undoing
/// it: then `EBUSY`.
const FAULT_PATIENCE_MS: i64 = 1000;

/// Whether a fault is still worth serving: `Err` with the reason once it is
/// not (its channels all failed, its process exited). The device fault
/// handler runs in no process's context, so no signal tells it.
pub(crate) type Abort<'a> = &'a dyn Fn() -> Result;

/// The bound of a fault path's retry loop: `EINTR` once a signal is
/// pending (in an ioctl), the abort hook's error once nobody wants the
/// fault any more, `EBUSY` past [`FAULT_PATIENCE_MS`].
struct Patience<'a> {
    start: Instant<Monotonic>,
    abort: Abort<'a>,
}

impl<'a> Patience<'a> {
    fn new(abort: Abort<'a>) -> Self {
        Self {
            start: Instant::now(),
            abort,
        }
    }

    fn check(&self) -> Result {
        if kernel::current!().signal_pending() {
            return Err(EINTR);
        }
        (self.abort)()?;
        if self.start.elapsed().as_millis() > FAULT_PATIENCE_MS {
            return Err(EBUSY);
        }
        Ok(())
    }
}

/// Whether `pte` maps device memory.
fn is_vram(pte: &Pte) -> bool {
    matches!(pte.addr, PteAddr::Vram(_))
}

/// A GPU fault the mirror could not serve.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Unserved {
    pub(crate) addr: usize,
    pub(crate) write: bool,
    pub(crate) err: Error,
}

/// What `<debugfs>/nsvm/nsvm.<index>/client-<id>` shows of a mirror.
struct Stats<V: GpuVm> {
    vm: Arc<MirrorVm<V>>,
    window: usize,
}

impl<V: GpuVm> fmt::Debug for Stats<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.vm.counters.to_uapi();
        writeln!(f, "fault_window: {}", self.window)?;
        writeln!(
            f,
            "gpu_ptes: {}",
            c.pages_mapped.saturating_sub(c.pages_unmapped)
        )?;
        writeln!(f, "faults: {}", c.faults)?;
        writeln!(f, "batches: {}", c.batches)?;
        writeln!(f, "retries: {}", c.retries)?;
        writeln!(f, "invalidations: {}", c.invalidations)?;
        writeln!(f, "pages_mapped: {}", c.pages_mapped)?;
        write!(f, "pages_unmapped: {}", c.pages_unmapped)
    }
}

/// The debugfs files of a mirror.
struct MirrorDebugfs<V: GpuVm> {
    /// `client-<id>`: the mirror's counters.
    _stats: Pin<KBox<debugfs::File<Stats<V>>>>,
    /// `client-<id>-pt`: the page-table dump.
    _ptdump: Pin<KBox<debugfs::File<PtDump<V>>>>,
}

/// The SVM mirror of one DRM file.
///
/// Shared by the file and the device's fault handler (which finds it by its
/// client id, and holds it for the batch it serves); the file's release
/// stops its queues (no job runs any more) and makes the handler forget it.
/// Dropping the last reference then unmaps every GPU entry and flushes the
/// TLB, then removes the notifier, then drops the `mmgrab`.
#[pin_data(PinnedDrop)]
pub(crate) struct Mirror<V: GpuVm> {
    /// The debugfs files; removed first, while everything they show lives,
    /// or with the device ([`Mirror::remove_debugfs`]).
    #[pin]
    debugfs: Mutex<Option<MirrorDebugfs<V>>>,
    /// Subscribed to every invalidation of the address space. Declared
    /// before `mm`: it is removed before `mm` is dropped.
    notifier: IntervalNotifier<MirrorVm<V>>,
    /// `mmgrab` on the mirrored address space, until the file is released.
    mm: ARef<Mm>,
    /// Bytes mapped around a faulting address (a power of two).
    window: usize,
    /// The file's exec queues, and the channels of running EXECs.
    #[pin]
    pub(crate) queues: Queues<V>,
    /// Held by the fault handler while it serves a batch of the mirror;
    /// see [`Mirror::wait_for_handler`].
    #[pin]
    serving: Mutex<()>,
}

#[pinned_drop]
impl<V: GpuVm> PinnedDrop for Mirror<V> {
    fn drop(self: Pin<&mut Self>) {
        // No job runs and the fault handler is done with the mirror (the
        // file's release saw to both): nothing maps any more. The GPU
        // gives up the address space before the notifier goes.
        let vm = self.vm();
        let mut guard = vm.vm.lock();
        let dropped = guard.unmap(0, vm.limit);
        if dropped > 0 {
            guard.flush_tlb(0, vm.limit);
            Counters::add(&vm.counters.pages_unmapped, dropped as u64);
        }
    }
}

impl<V: GpuVm> Mirror<V> {
    /// Binds a new mirror with GPU address space `vm` to `mm`; its stats
    /// appear as `client-<id>` in `debugfs`.
    pub(crate) fn new(
        mm: &MmWithUser,
        vm: V,
        vram: Arc<Vram>,
        window: usize,
        debugfs: &debugfs::Dir,
        id: u64,
    ) -> Result<Arc<Self>> {
        let owner = vram.owner();
        let data = Arc::pin_init(
            try_pin_init!(MirrorVm {
                vm <- new_mutex!(vm, "Mirror::vm"),
                attrs <- new_mutex!(Attrs::new(), "Mirror::attrs"),
                vram,
                counters: Counters::new(),
                engine_time <- EngineTime::new(),
                client: id,
                limit: crate::mm::task_size(mm),
            }),
            GFP_KERNEL,
        )?;
        let stats = Stats {
            vm: data.clone(),
            window,
        };
        let name = CString::try_from_fmt(fmt!("client-{id}"))?;
        let pt_name = CString::try_from_fmt(fmt!("client-{id}-pt"))?;
        let ptdump = KBox::pin_init(
            debugfs.read_write_file(&pt_name, PtDump::new(data.clone())),
            GFP_KERNEL,
        )?;
        let debugfs = KBox::pin_init(debugfs.read_only_file(&name, stats), GFP_KERNEL)?;
        // The whole user address space, as one subscription.
        let limit = data.limit;
        let notifier = IntervalNotifier::new(mm, 0, limit, Some(owner), data)?;
        let grab: &Mm = mm;
        Arc::pin_init(
            try_pin_init!(Self {
                debugfs <- new_mutex!(
                    Some(MirrorDebugfs {
                        _stats: debugfs,
                        _ptdump: ptdump,
                    }),
                    "Mirror::debugfs"
                ),
                notifier,
                mm: grab.into(),
                window,
                queues <- Queues::new(),
                serving <- new_mutex!((), "Mirror::serving"),
            }),
            GFP_KERNEL,
        )
    }

    /// Runs `f` as the fault handler's service of a batch of the mirror.
    pub(crate) fn serving<R>(&self, f: impl FnOnce() -> R) -> R {
        let _serving = self.serving.lock();
        f()
    }

    /// Removes the mirror's debugfs files: its device is going, and its
    /// directory with it.
    pub(crate) fn remove_debugfs(&self) {
        let files = self.debugfs.lock().take();
        // Not under the lock: removing a file waits for its readers.
        drop(files);
    }

    /// For the file's release: if the OOM killer killed the address
    /// space's process, waits until the fault handler no longer serves a
    /// batch of it.
    ///
    /// The handler's user reference keeps the victim's memory from being
    /// freed, and while it lasts a victim that has exited is no longer
    /// one the killer waits for: it would kill other processes. A victim
    /// that waits here, in its own exit, is still one. The handler ends
    /// its batch once it sees the process gone (or, if it waits for memory
    /// meanwhile, once the OOM reaper freed the victim's). Other releases
    /// do not wait: a fault whose service cannot end soon must not hold up
    /// a process's exit.
    pub(crate) fn wait_for_handler(&self) {
        if crate::mm::is_oom_victim(&self.mm) {
            drop(self.serving.lock());
        }
    }

    /// The client id: the GPU address space's id in fault buffer entries.
    pub(crate) fn asid(&self) -> u64 {
        self.vm().client
    }

    /// A user reference to the address space for the device's fault
    /// handler, which runs in no process's context: `None` once the
    /// process exited. The only way the handler reaches the address space.
    pub(crate) fn mmget_not_zero(&self) -> Option<ARef<MmWithUser>> {
        self.mm.mmget_not_zero()
    }

    /// The GPU side, shared with the channels.
    pub(crate) fn vm_arc(&self) -> Arc<MirrorVm<V>> {
        self.notifier.data().clone()
    }

    /// Enters the mirrored address space for an ioctl: `mmget` for as long
    /// as the returned reference lives.
    ///
    /// `ESRCH` when the address space has no users left (its process
    /// exited); `EPERM` when the caller runs in another address space.
    pub(crate) fn enter(&self) -> Result<ARef<MmWithUser>> {
        let mm = self.mm.mmget_not_zero().ok_or(ESRCH)?;
        let ours = kernel::current!()
            .mm()
            .is_some_and(|cur| core::ptr::eq(cur.as_raw(), mm.as_raw()));
        if !ours {
            return Err(EPERM);
        }
        Ok(mm)
    }

    /// `Ok` if the caller is the mirror's process (see [`Mirror::enter`]),
    /// for ioctls that queue work but touch no memory: they keep no
    /// reference to the address space.
    pub(crate) fn check_owner(&self) -> Result {
        self.enter().map(drop)
    }

    /// The GPU side.
    pub(crate) fn vm(&self) -> &MirrorVm<V> {
        self.notifier.data()
    }

    /// Serves a batch of GPU faults, window by window: each window maps
    /// what the CPU has there and faults in the missing pages of its
    /// faults' spans (each fault's [`FAULT_AROUND`] block), writable only
    /// in the blocks of write faults.
    ///
    /// Each window serves its first atomic fault, or else its first write
    /// fault, or else its first fault: only that fault's own page failing
    /// fails the window, which `unserved` is told of with the window's
    /// bounds. Fault-around is best effort, and whatever of the other
    /// faults is still missing is raised again after the replay.
    ///
    /// `mm` is the address space, with a user reference the caller took
    /// (`mmget_not_zero()`) for the batch: nothing here reaches the
    /// address space without it. `abort` is checked before every retry:
    /// its error ends the window's service.
    pub(crate) fn serve(
        &self,
        mm: &MmWithUser,
        faults: &mut [Fault],
        abort: Abort<'_>,
        mut unserved: impl FnMut(Unserved, (usize, usize)),
    ) {
        faults.sort_unstable_by_key(|f| f.addr);
        let mut rest: &[Fault] = faults;
        while let Some(first) = rest.first() {
            // Sorted: the window's faults are those up to its end. It holds
            // `first`, so the run is never empty.
            let (attr, start, end) = self.window_of(first.addr);
            let (run, tail) = rest.split_at(rest.partition_point(|f| f.addr < end));
            rest = tail;
            let f = run
                .iter()
                .find(|f| f.atomic)
                .or_else(|| run.iter().find(|f| f.write))
                .unwrap_or(first);
            if let Err(err) = self.fault(mm, f, run, (&attr, start, end), abort) {
                unserved(
                    Unserved {
                        addr: f.addr,
                        write: f.write,
                        err,
                    },
                    (start, end),
                );
            }
        }
    }

    /// The policy at `addr` and the fault window around it: the window of
    /// the mirror's size that holds `addr`, clipped to the range that has
    /// `addr`'s policy. A fault never maps (or migrates) pages of another
    /// policy: their own faults must see theirs, migrate-on-fault included.
    /// The window always holds `addr`.
    fn window_of(&self, addr: usize) -> (Attr, usize, usize) {
        let (attr, start, end) = self.vm().attrs.lock().span(addr);
        let win = addr & !(self.window - 1);
        let win_end = addr::window_end(win, self.window, usize::MAX);
        (attr, win.max(start), win_end.min(end))
    }

    /// Serves GPU fault `f` of `faults` (sorted, those of the window
    /// `[win_start, win_end)` that [`Mirror::window_of`] gave with the
    /// policy `attr`), as that policy says: migrates the window first if
    /// asked to, maps the window (faulting in what the faults' spans miss)
    /// and for an atomic on system memory takes exclusive access to the
    /// page.
    ///
    /// A fault at or above the user address limit is `EFAULT`: no user
    /// memory is there (the ioctls let no such address in).
    fn fault(
        &self,
        mm: &MmWithUser,
        f: &Fault,
        faults: &[Fault],
        (attr, win_start, win_end): (&Attr, usize, usize),
        abort: Abort<'_>,
    ) -> Result {
        let vm = self.vm();
        if f.addr >= vm.limit {
            return Err(EFAULT);
        }
        // Below the limit, which `win_start <= f.addr` is too.
        let win_end = win_end.min(vm.limit);
        if attr.fault_to_device() || (f.atomic && attr.atomic == AtomicMode::Device) {
            // Best effort: what cannot move is mapped where it is.
            match vm.vram.migrate(mm, win_start, win_end, Direction::ToDevice) {
                Err(e) if e == EINTR => return Err(e),
                _ => {}
            }
        }
        let patience = Patience::new(abort);
        self.map_window(mm, f, faults, (win_start, win_end), attr, &patience)?;
        if f.atomic && !vm.vm.lock().lookup(f.addr).is_some_and(|p| p.atomic) {
            self.exclusive(mm, f.addr, &Patience::new(abort))?;
        }
        Ok(())
    }

    /// Maps the fault window `[win_start, win_end)` around `f` (one of the
    /// window's `faults`) from the CPU page tables, after faulting in the
    /// pages of the faults' spans ([`spans`]) that neither the CPU nor the
    /// GPU has as the span asks, in the spans where a fault needs a CPU
    /// fault (see [`Self::missing`]).
    ///
    /// Each round snapshots the window and faults in the runs of missing
    /// pages, taking what the faults read into the snapshot; it maps the
    /// result if the snapshot is still current under the VM lock (so
    /// nothing read since changed either), else it starts again. A run
    /// that fails is tried again without `f`'s own page, whose failure is
    /// the fault's; the other pages of failed runs are left out from then
    /// on. Bounded by [`Patience`].
    fn map_window(
        &self,
        mm: &MmWithUser,
        f: &Fault,
        faults: &[Fault],
        (win_start, win_end): (usize, usize),
        attr: &Attr,
        patience: &Patience<'_>,
    ) -> Result {
        let vm = self.vm();
        let own = f.addr & !(PAGE_SIZE_4K - 1);
        let mut device = !attr.fault_to_system();
        let mut failed = KVec::new();
        loop {
            patience.check()?;
            let mut rf = self.notifier.snapshot(mm, win_start, win_end, device)?;
            let runs = self.missing(&rf, faults, (win_start, win_end), &failed)?;
            for r in runs.iter() {
                // Each run faults memory in: not for a process that is gone.
                (patience.abort)()?;
                match self.notifier.fault(mm, r.start, r.end, r.write, device) {
                    Ok(faulted) => rf.merge(&faulted),
                    Err(e) if e == EINTR => return Err(e),
                    // Best effort, but for `f`'s own page: try it alone.
                    Err(_) if (r.start..r.end).contains(&own) => {
                        let faulted =
                            self.notifier
                                .fault(mm, own, own + PAGE_SIZE_4K, r.write, device)?;
                        rf.merge(&faulted);
                        failed.push((r.start, r.end), GFP_KERNEL)?;
                    }
                    Err(_) => failed.push((r.start, r.end), GFP_KERNEL)?,
                }
            }
            let (maps, vram_page) = self.mappings(&rf, attr)?;
            // A write to a read-only device page (it was read-only when it
            // migrated): the CPU must break COW, so it comes back first.
            let own_pte = Mapping::covering(&maps, own).map(|m| m.pte);
            if device && f.write && own_pte.is_some_and(|p| !p.writable && is_vram(&p)) {
                device = false;
                continue;
            }
            let res = V::reserve(maps.iter().map(|m| (m.va, m.pte.huge)))?;
            let Some(mut guard) = self.notifier.lock_if_current(rf.seq()) else {
                Counters::add(&vm.counters.retries, 1);
                continue;
            };
            let mapped = guard.map(res, &maps);
            drop(guard);
            Counters::add(&vm.counters.pages_mapped, mapped as u64);
            if let Some(index) = vram_page {
                vm.vram.touch(index);
            }
            return Ok(());
        }
    }

    /// The GPU entries that map what snapshot `rf` has, and a device page
    /// of them if there is one. From the first page the CPU maps to the
    /// last: the holes around them (most of a fresh window) cost nothing.
    /// A 2 MiB CPU mapping of system memory that `rf` holds whole is one
    /// big-page entry.
    fn mappings(
        &self,
        rf: &RangeFault<'_>,
        attr: &Attr,
    ) -> Result<(KVVec<Mapping>, Option<usize>)> {
        let vm = self.vm();
        let (lo, hi) = rf.span().unwrap_or((0, 0));
        let mut maps = KVVec::with_capacity(hi - lo, GFP_KERNEL | __GFP_NOWARN)?;
        let mut vram_page = None;
        let mut i = lo;
        while i < hi {
            let va = rf.start() + i * PAGE_SIZE_4K;
            let huge = (va % PAGE_SIZE_2M == 0).then(|| rf.huge_at(i)).flatten();
            if let Some(PageState::Present {
                page,
                writable,
                device_private: false,
                ..
            }) = huge
            {
                let pte = Pte {
                    addr: PteAddr::System(page),
                    writable,
                    huge: true,
                    atomic: attr.atomic == AtomicMode::System,
                };
                maps.push_within_capacity(Mapping { va, pte })
                    .map_err(|_| ENOMEM)?;
                i += PAGE_SIZE_2M / PAGE_SIZE_4K;
                continue;
            }
            // The rest of this 2 MiB, a page at a time.
            let next = hi.min(i + (PAGE_SIZE_2M - va % PAGE_SIZE_2M) / PAGE_SIZE_4K);
            for (j, state) in (i..next).zip(rf.iter_range(i, next)) {
                // Not mapped by the CPU, or the device's own exclusive
                // entry: an entry the GPU has stays as it is.
                let PageState::Present {
                    page,
                    pfn,
                    writable,
                    device_private,
                    ..
                } = state
                else {
                    continue;
                };
                let index = device_private.then(|| vm.vram.index(pfn)).flatten();
                vram_page = vram_page.or(index);
                let pte = Pte {
                    addr: index.map_or(PteAddr::System(page), PteAddr::Vram),
                    writable,
                    huge: false,
                    atomic: index.is_some() || attr.atomic == AtomicMode::System,
                };
                let va = rf.start() + j * PAGE_SIZE_4K;
                maps.push_within_capacity(Mapping { va, pte })
                    .map_err(|_| ENOMEM)?;
            }
            i = next;
        }
        Ok((maps, vram_page))
    }

    /// The runs of pages of the spans of `faults` (those of the window
    /// `window`, see [`spans`]) that need a fault: neither the CPU
    /// (snapshot `rf`) nor the GPU maps them as the span asks (the GPU's
    /// own exclusive entries read as absent to the CPU: they are done), and
    /// they are not in a run that `failed` before. The owner's device pages
    /// are done as they are.
    ///
    /// Fault-around extends a CPU fault, it does not stand in for one: a
    /// span none of whose `faults` needs a fault (the CPU maps their
    /// pages) gets no run, and the window maps what the CPU has there
    /// without allocating memory for the neighbours.
    fn missing(
        &self,
        rf: &RangeFault<'_>,
        faults: &[Fault],
        window: (usize, usize),
        failed: &[(usize, usize)],
    ) -> Result<KVec<Span>> {
        // Whether the CPU maps the page at `va` as an access writing with
        // `write` needs.
        let cpu = |va: usize, write: bool| match rf.get((va - rf.start()) / PAGE_SIZE_4K) {
            Some(PageState::Present {
                writable,
                device_private,
                ..
            }) => writable || !write || device_private,
            _ => false,
        };
        let page = |f: &Fault| f.addr & !(PAGE_SIZE_4K - 1);
        // The CPU has every faulting page (most faults of a mirror do):
        // no span is asked for, and nothing is allocated or locked.
        if faults.iter().all(|f| cpu(page(f), f.write || f.atomic)) {
            return Ok(KVec::new());
        }
        let spans = spans(faults, window)?;
        // At most a run per page: room is made before taking the lock.
        let pages = spans.iter().map(|s| (s.end - s.start) / PAGE_SIZE_4K).sum();
        let mut runs: KVec<Span> = KVec::with_capacity(pages, GFP_KERNEL)?;
        let vm = self.vm().vm.lock();
        // Whether the page at `va` needs a fault for an access writing
        // with `write`.
        let needs = |va: usize, write: bool| {
            !(cpu(va, write)
                || vm.lookup(va).is_some_and(|p| p.writable || !write)
                || failed.iter().any(|&(a, b)| a <= va && va < b))
        };
        for s in &spans {
            let asked = faults
                .iter()
                .filter(|f| (s.start..s.end).contains(&f.addr))
                .any(|f| needs(page(f), f.write || f.atomic));
            if !asked {
                continue;
            }
            let mut va = s.start;
            while va < s.end {
                if needs(va, s.write) {
                    match runs.last_mut() {
                        Some(r) if r.end == va && r.write == s.write => r.end += PAGE_SIZE_4K,
                        _ => runs
                            .push_within_capacity(Span {
                                start: va,
                                end: va + PAGE_SIZE_4K,
                                write: s.write,
                            })
                            .map_err(|_| ENOMEM)?,
                    }
                }
                va += PAGE_SIZE_4K;
            }
        }
        Ok(runs)
    }

    /// Takes exclusive access to the page at `addr` and maps it for GPU
    /// atomics: the CPU faults on it until the GPU entry is invalidated.
    /// `EOPNOTSUPP` for memory that allows no exclusive access. Bounded by
    /// [`Patience`].
    fn exclusive(&self, mm: &MmWithUser, addr: usize, patience: &Patience<'_>) -> Result {
        let vm = self.vm();
        let va = addr & !(PAGE_SIZE_4K - 1);
        loop {
            patience.check()?;
            let res = V::reserve([(va, false)])?;
            // Splits a THP mapping and ends an exclusive access left by a
            // previous attempt here, before the sequence is read: neither
            // can then fail the check below.
            ExclusivePage::prepare(&MmapRead::lock(mm)?, va)?;
            let seq = self.notifier.read_begin();
            let lock = MmapRead::lock(mm)?;
            let page = ExclusivePage::new(&lock, va, vm.vram.owner())?;
            let pte = Pte {
                addr: PteAddr::System(page.page()),
                writable: true,
                huge: false,
                atomic: true,
            };
            // Anything that changed the page since (a concurrent
            // MADV_DONTNEED under mmap_read_lock) shows here.
            let Some(mut guard) = self.notifier.lock_if_current(seq) else {
                Counters::add(&vm.counters.retries, 1);
                continue;
            };
            let mapped = guard.map(res, &[Mapping { va, pte }]);
            drop(guard);
            Counters::add(&vm.counters.pages_mapped, mapped as u64);
            return Ok(());
        }
    }

    /// Migrates `[start, end)` to `target` (`MIGRATE`).
    pub(crate) fn migrate(
        &self,
        mm: &MmWithUser,
        start: usize,
        end: usize,
        target: Direction,
    ) -> Result<Moved> {
        self.vm().vram.migrate(mm, start, end, target)
    }

    /// Sets the attributes of `[start, end)` (`SET_ATTR`).
    pub(crate) fn set_attr(&self, start: usize, end: usize, attr: Attr) -> Result {
        self.vm().attrs.lock().set(start, end, attr)
    }

    /// The CPU-side state of the pages from `start`, one `DRM_NSVM_PTE_*`
    /// byte each, into `out` (`SNAPSHOT` with `DRM_NSVM_SNAPSHOT_CPU`).
    /// `EINVAL` unless `start` is page aligned and the pages lie below the
    /// user address limit.
    pub(crate) fn snapshot_cpu(&self, mm: &MmWithUser, start: usize, out: &mut [u8]) -> Result {
        // Large windows: a snapshot walks holes quickly, and each window
        // costs an allocation, the mmap lock and a notifier sequence.
        const WINDOW: usize = 32 * PAGE_SIZE_2M;
        let len = out.len().checked_mul(PAGE_SIZE_4K).ok_or(EINVAL)?;
        let end = addr::range_end(start as u64, len as u64, self.vm().limit)?;
        if start % PAGE_SIZE_4K != 0 {
            return Err(EINVAL);
        }
        let mut va = start;
        while va < end {
            let wend = addr::window_end(va & !(WINDOW - 1), WINDOW, end);
            let rf = self.notifier.snapshot(mm, va, wend, true)?;
            let first = (rf.start() - start) / PAGE_SIZE_4K;
            for (state, byte) in rf.iter().zip(out[first..].iter_mut()) {
                *byte = match state {
                    PageState::Present {
                        writable,
                        order,
                        device_private,
                        ..
                    } => {
                        let mut s = uapi::DRM_NSVM_PTE_VALID;
                        if writable {
                            s |= uapi::DRM_NSVM_PTE_WRITE;
                        }
                        if order >= 9 {
                            s |= uapi::DRM_NSVM_PTE_HUGE;
                        }
                        if device_private {
                            s |= uapi::DRM_NSVM_PTE_DEVICE;
                        }
                        s as u8
                    }
                    PageState::Absent | PageState::Error => 0,
                };
            }
            va = wend;
        }
        Ok(())
    }

    /// The GPU page-table state of `npages` pages from `start`, one
    /// `DRM_NSVM_PTE_*` byte each, into `out` (not present past the end of
    /// the address space).
    ///
    /// The VM lock is held for [`SNAPSHOT_RUN`] entries at a time: an
    /// invalidation, a non-blockable one of the OOM reaper included, never
    /// waits for a whole snapshot of up to 2^20 pages.
    pub(crate) fn snapshot(&self, start: usize, out: &mut [u8]) {
        for (n, run) in out.chunks_mut(SNAPSHOT_RUN).enumerate() {
            let first = start.checked_add(n * SNAPSHOT_RUN * PAGE_SIZE_4K);
            let vm = self.vm().vm.lock();
            for (i, state) in run.iter_mut().enumerate() {
                let va = first.and_then(|f| f.checked_add(i * PAGE_SIZE_4K));
                *state = Self::pte_state(va.and_then(|va| vm.lookup(va)));
            }
        }
    }

    /// The `DRM_NSVM_PTE_*` byte of a GPU entry.
    fn pte_state(pte: Option<Pte>) -> u8 {
        match pte {
            None => 0,
            Some(pte) => {
                let mut s = uapi::DRM_NSVM_PTE_VALID;
                if pte.writable {
                    s |= uapi::DRM_NSVM_PTE_WRITE;
                }
                if pte.huge {
                    s |= uapi::DRM_NSVM_PTE_HUGE;
                }
                if is_vram(&pte) {
                    s |= uapi::DRM_NSVM_PTE_DEVICE;
                }
                if pte.atomic {
                    s |= uapi::DRM_NSVM_PTE_ATOMIC;
                }
                s as u8
            }
        }
    }
}

#[kunit_tests(nsvm_svm)]
mod tests {
    use super::*;

    const BLOCK: usize = FAULT_AROUND;
    const WINDOW: (usize, usize) = (16 * BLOCK, 32 * BLOCK);

    fn fault(addr: usize, write: bool, atomic: bool) -> Fault {
        Fault {
            addr,
            write,
            atomic,
        }
    }

    fn span(start: usize, end: usize, write: bool) -> Span {
        Span { start, end, write }
    }

    #[test]
    fn spans_merge_blocks_of_one_kind() -> Result {
        let (w, _) = WINDOW;
        assert!(spans(&[], WINDOW)?.is_empty());
        // Faults of one block: one span, writable if one of them writes.
        let f = [
            fault(w + 0x1000, false, false),
            fault(w + 0x3000, true, false),
        ];
        assert_eq!(&spans(&f, WINDOW)?[..], &[span(w, w + BLOCK, true)]);
        // An atomic access writes.
        let f = [fault(w, false, true)];
        assert_eq!(&spans(&f, WINDOW)?[..], &[span(w, w + BLOCK, true)]);
        // Adjacent blocks of one kind merge; a block is of the kind of its
        // faults together, whichever comes first.
        let f = [
            fault(w, false, false),
            fault(w + BLOCK, false, false),
            fault(w + 2 * BLOCK, false, false),
        ];
        assert_eq!(&spans(&f, WINDOW)?[..], &[span(w, w + 3 * BLOCK, false)]);
        let f = [
            fault(w, true, false),
            fault(w + BLOCK, false, false),
            fault(w + BLOCK + 0x1000, true, false),
        ];
        assert_eq!(&spans(&f, WINDOW)?[..], &[span(w, w + 2 * BLOCK, true)]);
        // Adjacent blocks of two kinds, and blocks with a gap, do not.
        let f = [
            fault(w, false, false),
            fault(w + BLOCK, true, false),
            fault(w + 3 * BLOCK, true, false),
            fault(w + 4 * BLOCK, true, false),
        ];
        assert_eq!(
            &spans(&f, WINDOW)?[..],
            &[
                span(w, w + BLOCK, false),
                span(w + BLOCK, w + 2 * BLOCK, true),
                span(w + 3 * BLOCK, w + 5 * BLOCK, true),
            ]
        );
        Ok(())
    }

    #[test]
    fn spans_stay_in_their_window() -> Result {
        // A window narrower than a block, starting and ending inside one:
        // the span is the window's part of the block.
        let (ws, we) = (BLOCK + 0x3000, BLOCK + 0x5000);
        let f = [fault(ws, false, false), fault(we - 0x1000, false, false)];
        assert_eq!(&spans(&f, (ws, we))?[..], &[span(ws, we, false)]);
        // The last block below the top of the address space ends at the
        // window's end, not past it or wrapped.
        let top = usize::MAX & !(PAGE_SIZE_4K - 1);
        let ws = top & !(BLOCK - 1);
        let f = [fault(top - PAGE_SIZE_4K, true, false)];
        assert_eq!(&spans(&f, (ws, top))?[..], &[span(ws, top, true)]);
        Ok(())
    }
}
