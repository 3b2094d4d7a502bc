// SPDX-License-Identifier: MIT

//! The queue mode of the EXEC helpers (`NSVM_IGT_QUEUES=1`).
//!
//! [`crate::svm::exec`] and [`crate::svm::gpu_read`] then run their commands
//! as asynchronous jobs on an exec queue of the file: one job per command,
//! all queued before the first completes (the jobs overlap in the queue),
//! then a WAIT on the user fence the last one writes. A READ becomes a
//! COPY into a bounce mapping that the CPU copies out after the wait.
//! Commands whose result only EXEC returns (the atomics' old values) still
//! go as an EXEC. `make test` runs the EXEC-based binaries a second time in
//! this mode; a subtest that made no job through it reports SKIP there.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Mutex,
};

use nsvm_uapi::{sys, Cmd, Device};

use crate::{
    svm::{Map, PAGE, RW},
    Outcome,
};

/// Longest wait for the jobs of one helper call.
const WAIT_NS: i64 = 120_000_000_000;

/// Jobs this process submitted through the helpers.
static JOBS: AtomicU64 = AtomicU64::new(0);

/// The helpers' queue of each file, by the file's DRM client id.
static QUEUES: Mutex<Vec<(u64, u32)>> = Mutex::new(Vec::new());

/// Whether the helpers run through queues.
pub fn enabled() -> bool {
    std::env::var_os("NSVM_IGT_QUEUES").is_some_and(|v| v == "1")
}

/// Jobs this process submitted through the helpers.
pub fn jobs() -> u64 {
    JOBS.load(Ordering::Relaxed)
}

fn client_id(dev: &Device) -> Result<u64, Outcome> {
    let keys = dev.fdinfo()?;
    keys.iter()
        .find(|(k, _)| k == "drm-client-id")
        .and_then(|(_, v)| v.parse().ok())
        .ok_or_else(|| Outcome::Fail(format!("no drm-client-id in {keys:?}")))
}

/// The helpers' queue on `dev`'s file, made on first use.
fn queue(dev: &Device) -> Result<(u64, u32), Outcome> {
    let id = client_id(dev)?;
    let mut queues = QUEUES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&(_, q)) = queues.iter().find(|(c, _)| *c == id) {
        return Ok((id, q));
    }
    let q = dev.queue_create(0)?;
    queues.push((id, q));
    Ok((id, q))
}

/// Submits `cmds` as one job each on the file's queue and waits for them.
/// A failed queue is destroyed (the next call makes another) and its error
/// fails the subtest.
fn run(dev: &Device, cmds: &[Cmd]) -> Result<(), Outcome> {
    let (id, q) = queue(dev)?;
    let fence = Map::new(PAGE, RW);
    let done = (|| {
        for (i, c) in cmds.iter().enumerate() {
            dev.submit(
                q,
                std::slice::from_ref(c),
                Some((fence.addr(), i as u64 + 1)),
            )?;
            JOBS.fetch_add(1, Ordering::Relaxed);
        }
        if cmds.is_empty() {
            return Ok(());
        }
        dev.wait_fence(fence.addr(), cmds.len() as u64, q, WAIT_NS)
    })();
    if let Err(e) = done {
        let st = dev.queue_query(q);
        let _ = dev.queue_destroy(q);
        let mut queues = QUEUES.lock().unwrap_or_else(|e| e.into_inner());
        queues.retain(|(c, _)| *c != id);
        return Err(Outcome::Fail(format!(
            "queued EXEC failed: {e}; queue {q}: {st:?}"
        )));
    }
    Ok(())
}

/// Runs `cmds` through the queue, or `None` if one of them needs EXEC.
pub fn exec(dev: &Device, cmds: &[Cmd]) -> Option<Result<(), Outcome>> {
    let exec_only = |c: &Cmd| {
        matches!(
            c.op,
            sys::DRM_NSVM_OP_READ | sys::DRM_NSVM_OP_ATOMIC_ADD32 | sys::DRM_NSVM_OP_ATOMIC_ADD64
        )
    };
    if cmds.iter().any(exec_only) {
        return None;
    }
    Some(run(dev, cmds))
}

/// GPU-reads `len` bytes at `src` through the queue: a COPY into a bounce
/// mapping.
pub fn read(dev: &Device, src: u64, len: usize) -> Result<Vec<u8>, Outcome> {
    if len == 0 {
        return Ok(Vec::new());
    }
    let bounce = Map::new(len.next_multiple_of(PAGE), RW);
    run(dev, &[Cmd::copy(bounce.addr(), src, len as u64)])?;
    Ok(bounce.bytes()[..len].to_vec())
}
