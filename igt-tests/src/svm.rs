// SPDX-License-Identifier: MIT

//! Helpers shared by the SVM test binaries: devices, memory, GPU commands.

use std::{io::Write, ptr};

use nsvm_uapi::{self as nsvm, sys, Cmd, Device};

use crate::{skip, Outcome};

/// Page size.
pub const PAGE: usize = 4096;
/// 2 MiB.
pub const MB2: usize = 2 << 20;

/// An nsvm error with errno `e`.
pub fn errno(e: i32) -> nsvm::Error {
    nsvm::Error { errno: e }
}

/// Opens render node `index`; skips when there is none.
pub fn open(index: u32) -> Result<Device, Outcome> {
    match Device::open_render(index) {
        Ok(d) => Ok(d),
        Err(e) if e.errno == libc::ENOENT => skip!("no nsvm device {index}"),
        Err(e) => Err(e.into()),
    }
}

/// Opens render node `index` and binds its mirror.
pub fn bound(index: u32) -> Result<Device, Outcome> {
    let dev = open(index)?;
    dev.svm_init(0)?;
    Ok(dev)
}

/// Anonymous private memory, unmapped on drop.
pub struct Map {
    /// Start.
    pub ptr: *mut u8,
    /// Length in bytes.
    pub len: usize,
}

impl Map {
    pub fn new(len: usize, prot: i32) -> Self {
        Self::with_flags(len, prot, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS)
    }

    pub fn with_flags(len: usize, prot: i32, flags: i32) -> Self {
        // SAFETY: A fresh anonymous mapping.
        let ptr = unsafe { libc::mmap(ptr::null_mut(), len, prot, flags, -1, 0) };
        assert_ne!(ptr, libc::MAP_FAILED, "mmap");
        Self {
            ptr: ptr.cast(),
            len,
        }
    }

    /// Anonymous private memory at exactly `addr`, replacing nothing
    /// (`MAP_FIXED_NOREPLACE`); `None` if something is there or the address
    /// is not a user address.
    pub fn at(addr: u64, len: usize, prot: i32) -> Option<Self> {
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE;
        // SAFETY: A fixed mapping that may not replace anything.
        let ptr = unsafe { libc::mmap(addr as *mut _, len, prot, flags, -1, 0) };
        if ptr == libc::MAP_FAILED {
            return None;
        }
        // An older kernel takes the address as a hint only.
        let m = Self {
            ptr: ptr.cast(),
            len,
        };
        (m.addr() == addr).then_some(m)
    }

    pub fn addr(&self) -> u64 {
        self.ptr as u64
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: The mapping is readable when this is used; the GPU writes
        // it only inside EXEC calls, which this borrow cannot span.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: As above, and writable when this is used.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    pub fn protect(&self, prot: i32) {
        // SAFETY: Our own mapping.
        assert_eq!(
            unsafe { libc::mprotect(self.ptr.cast(), self.len, prot) },
            0
        );
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: Our own mapping (munmap of an unmapped range is harmless).
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Readable and writable.
pub const RW: i32 = libc::PROT_READ | libc::PROT_WRITE;

/// EXEC of `cmds`; a failure fails the subtest. Through an exec queue in
/// the queue mode ([`crate::queued`]).
pub fn exec(dev: &Device, cmds: &mut [Cmd]) -> Result<(), Outcome> {
    if crate::queued::enabled() {
        if let Some(r) = crate::queued::exec(dev, cmds) {
            return r;
        }
    }
    exec_ioctl(dev, cmds)
}

/// EXEC of `cmds` also in the queue mode: for subtests that count the faults
/// and mappings of exactly their commands (the queue mode's fence and
/// bounce pages are the mirror's too).
pub fn exec_ioctl(dev: &Device, cmds: &mut [Cmd]) -> Result<(), Outcome> {
    dev.exec(cmds)
        .map_err(|e| Outcome::Fail(format!("EXEC failed: {e}")))
}

/// GPU-reads `len` bytes at `src`. Through an exec queue in the queue mode
/// ([`crate::queued`]).
pub fn gpu_read(dev: &Device, src: u64, len: usize) -> Result<Vec<u8>, Outcome> {
    if crate::queued::enabled() {
        return crate::queued::read(dev, src, len);
    }
    gpu_read_ioctl(dev, src, len)
}

/// GPU-reads `len` bytes at `src` with a READ EXEC also in the queue mode
/// (see [`exec_ioctl`]).
pub fn gpu_read_ioctl(dev: &Device, src: u64, len: usize) -> Result<Vec<u8>, Outcome> {
    let mut out = vec![0u8; len];
    exec_ioctl(
        dev,
        &mut [Cmd::read(out.as_mut_ptr() as u64, src, len as u64)],
    )?;
    Ok(out)
}

/// `len` bytes of a pattern that differs with `seed`.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seed.wrapping_mul(31).wrapping_add(i as u64 * 7) >> 3) as u8)
        .collect()
}

/// Runs `f` in a forked child and returns its exit status (0: it passed).
pub fn in_child(f: impl FnOnce() -> i32) -> i32 {
    let _ = std::io::stdout().flush();
    // SAFETY: The child runs `f` and exits.
    match unsafe { libc::fork() } {
        0 => {
            let code = f();
            let _ = std::io::stdout().flush();
            // SAFETY: Ends the child.
            unsafe { libc::_exit(code) }
        }
        pid => {
            let mut st = 0;
            // SAFETY: Our child.
            unsafe { libc::waitpid(pid, &mut st, 0) };
            if libc::WIFEXITED(st) {
                libc::WEXITSTATUS(st)
            } else {
                128 + libc::WTERMSIG(st)
            }
        }
    }
}

/// A new, empty file at `path`.
pub fn temp_file(path: &str) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
}

/// The GPU page-table states of `n` pages from `start`.
pub fn states(dev: &Device, start: u64, n: usize) -> Result<Vec<u8>, Outcome> {
    let mut s = vec![0u8; n];
    dev.snapshot(start, &mut s)?;
    Ok(s)
}

/// CPU-side states (`DRM_NSVM_SNAPSHOT_CPU`) of `n` pages from `start`.
pub fn cpu_states(dev: &Device, start: u64, n: usize) -> Result<Vec<u8>, Outcome> {
    let mut s = vec![0u8; n];
    dev.snapshot_cpu(start, &mut s)?;
    Ok(s)
}

/// How many of `states` have `bit` set.
pub fn count(states: &[u8], bit: u32) -> usize {
    states.iter().filter(|s| u32::from(**s) & bit != 0).count()
}

/// Pages of the `n` from `start` whose CPU page-table entry is a swap
/// entry (`/proc/self/pagemap` bit 62): in any device's memory (a
/// device-private entry), migrating, or swapped out, which the test guest
/// never does. Tells device memory from holes without touching a page,
/// also once the device's debugfs is gone.
pub fn swapped(start: u64, n: usize) -> Result<usize, Outcome> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open("/proc/self/pagemap")?;
    let mut buf = vec![0u8; n * 8];
    f.read_exact_at(&mut buf, start / PAGE as u64 * 8)?;
    Ok(buf
        .chunks_exact(8)
        .filter(|e| u64::from_le_bytes((*e).try_into().unwrap_or_default()) & (1 << 62) != 0)
        .count())
}

/// A value of `<debugfs>/nsvm/nsvm.<index>/vram`.
pub fn vram_stat(index: u32, key: &str) -> Result<u64, Outcome> {
    debugfs_stat(index, "vram", key)
}

/// The value of `key` in the device's debugfs file `file`
/// (`<debugfs>/nsvm/nsvm.<index>/<file>`, lines of `key: value`); a skip
/// without debugfs.
pub fn debugfs_stat(index: u32, file: &str, key: &str) -> Result<u64, Outcome> {
    let path = format!("/sys/kernel/debug/nsvm/nsvm.{index}/{file}");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(_) => skip!("no {path}"),
    };
    for line in text.lines() {
        if let Some(v) = line.strip_prefix(key).and_then(|r| r.strip_prefix(": ")) {
            return v
                .trim()
                .parse()
                .map_err(|_| Outcome::Fail(format!("bad {key}")));
        }
    }
    Err(Outcome::Fail(format!("no {key} in {path}")))
}

/// Device pages in use on device `index` once the count holds still (the
/// same over 100 ms, for at most 5 s): the baseline of a leak check, taken
/// after whatever an earlier subtest set going has finished.
pub fn vram_used_settled(index: u32) -> Result<u64, Outcome> {
    let mut last = vram_stat(index, "pages_used")?;
    for _ in 0..50 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let now = vram_stat(index, "pages_used")?;
        if now == last {
            break;
        }
        last = now;
    }
    Ok(last)
}

/// Fills `m` with `pattern(seed)` from the CPU.
pub fn cpu_fill(m: &mut Map, seed: u64) {
    let p = pattern(seed, m.len);
    m.bytes_mut().copy_from_slice(&p);
}

/// EXEC of one command as a plain ioctl on `fd`: no restart on EINTR (as
/// nsvm_uapi and drmIoctl do), and `fd` may be closed under it.
pub fn raw_exec(fd: i32, cmd: Cmd) -> Result<(), i32> {
    let mut cmd = [cmd];
    let mut arg = sys::drm_nsvm_exec {
        size: nsvm::size_of_u32::<sys::drm_nsvm_exec>(),
        num_cmds: 1,
        cmds: cmd.as_mut_ptr() as u64,
        cmd_size: nsvm::size_of_u32::<Cmd>(),
        ..Default::default()
    };
    // SAFETY: `arg` and the command outlive the call; a closed or reused fd
    // number is the kernel's to refuse.
    match unsafe { libc::ioctl(fd, nsvm::DRM_IOCTL_NSVM_EXEC as _, &raw mut arg) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0)),
    }
}

/// Anonymous memory of `len` bytes aligned to `align` (a power of two).
pub fn aligned_to(len: usize, align: usize) -> Map {
    let big = Map::new(len + align, RW);
    let start = (big.addr() as usize).next_multiple_of(align);
    // SAFETY: Trims our own mapping to the aligned part.
    unsafe {
        if start > big.addr() as usize {
            libc::munmap(big.ptr.cast(), start - big.addr() as usize);
        }
        let end = big.addr() as usize + big.len;
        if end > start + len {
            libc::munmap((start + len) as *mut _, end - start - len);
        }
    }
    std::mem::forget(big);
    Map {
        ptr: start as *mut u8,
        len,
    }
}

/// 2 MiB-aligned anonymous memory of `len` bytes (THP-able).
pub fn aligned(len: usize) -> Map {
    aligned_to(len, MB2)
}

/// `madvise(advice)` over all of `m`.
pub fn madvise(m: &Map, advice: i32) {
    // SAFETY: Our own mapping.
    assert_eq!(unsafe { libc::madvise(m.ptr.cast(), m.len, advice) }, 0);
}

/// Forks a child that runs `f(wfd)` and exits with what it returns; `f`
/// calls [`ready`] on `wfd` once it is ready. Returns the child's pid once
/// it is ready or has exited, and whether it said it was ready.
pub fn fork_ready(f: impl FnOnce(i32) -> i32) -> Result<(i32, bool), Outcome> {
    let mut fds = [0i32; 2];
    // SAFETY: A pipe for "ready".
    crate::check_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let (rfd, wfd) = (fds[0], fds[1]);
    let _ = std::io::stdout().flush();
    // SAFETY: The child only uses its own state and exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: The child's copy of the read end.
        unsafe { libc::close(rfd) };
        let code = f(wfd);
        let _ = std::io::stdout().flush();
        // SAFETY: Ends the child.
        unsafe { libc::_exit(code) };
    }
    let mut b = [0u8; 1];
    // SAFETY: Our pipe.
    let n = unsafe {
        libc::close(wfd);
        let n = libc::read(rfd, b.as_mut_ptr().cast(), 1);
        libc::close(rfd);
        n
    };
    Ok((pid, n == 1))
}

/// Tells the parent of [`fork_ready`] that the child is ready.
pub fn ready(wfd: i32) {
    // SAFETY: Our pipe's write end.
    unsafe {
        libc::write(wfd, b"x".as_ptr().cast(), 1);
        libc::close(wfd);
    }
}
