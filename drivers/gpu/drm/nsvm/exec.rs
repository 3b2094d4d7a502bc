// SPDX-License-Identifier: GPL-2.0

//! The GPU channels of a file.
//!
//! Every EXEC runs its commands on a channel of its own, bound to the
//! file's mirror ([`GpuChannel`]); the mirror keeps them here so that the
//! device's fault handler, which finds the mirror by the address space a
//! fault names, can fail the channel a fault came from. A failed channel
//! records why ([`ChannelError`]) and cancels its jobs.

use kernel::{
    new_mutex,
    prelude::*,
    sync::{
        Arc,
        Mutex, //
    },
};

use crate::gpu::{
    ChannelError,
    GpuChannel,
    GpuVm, //
};

/// Longest job timeout a queue may ask for.
pub(crate) const MAX_TIMEOUT_MS: u32 = 3_600_000;

/// The channel of a running EXEC (id 0).
struct Queue<V: GpuVm> {
    id: u32,
    chan: Arc<V::Channel>,
}

/// The queues of a mirror, under [`Queues::table`].
struct Table<V: GpuVm> {
    queues: KVec<Queue<V>>,
}

/// The channels of one mirror.
///
/// `"Mirror::queues"` is taken before a channel's own lock and held only
/// to look a channel up, add or remove it.
#[pin_data]
pub(crate) struct Queues<V: GpuVm> {
    #[pin]
    table: Mutex<Table<V>>,
}

impl<V: GpuVm> Queues<V> {
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            table <- new_mutex!(
                Table {
                    queues: KVec::new(),
                },
                "Mirror::queues"
            ),
        })
    }

    /// Adds the channel of an EXEC, for the fault handler to find.
    pub(crate) fn add_exec(&self, chan: Arc<V::Channel>) -> Result {
        self.table
            .lock()
            .queues
            .push(Queue { id: 0, chan }, GFP_KERNEL)?;
        Ok(())
    }

    /// Removes the channel `chid`.
    fn take(&self, pred: impl Fn(&Queue<V>) -> bool) -> Option<Arc<V::Channel>> {
        let mut t = self.table.lock();
        let i = t.queues.iter().position(pred)?;
        t.queues.remove(i).ok().map(|q| q.chan)
    }

    /// Removes the channel of an EXEC, which has no job left.
    pub(crate) fn remove_exec(&self, chid: u64) {
        if let Some(chan) = self.take(|q| q.id == 0 && q.chan.id() == chid) {
            stop::<V>(&chan);
        }
    }

    /// Fails channel `chid`, if it is still there: the fault handler's
    /// cancel.
    pub(crate) fn fail(&self, chid: u64, why: ChannelError) {
        let chan = {
            let t = self.table.lock();
            t.queues
                .iter()
                .find(|q| q.chan.id() == chid)
                .map(|q| q.chan.clone())
        };
        if let Some(chan) = chan {
            chan.fail(why);
        }
    }

    /// Whether any of the channels `chids` is still there and has not
    /// failed: whether a fault they raised is still wanted.
    pub(crate) fn any_live(&self, mut chids: impl Iterator<Item = u64>) -> bool {
        let t = self.table.lock();
        chids.any(|chid| {
            t.queues
                .iter()
                .any(|q| q.chan.id() == chid && q.chan.status().error.is_none())
        })
    }

    /// Stops every channel and waits until none runs: the first step of
    /// the file's release.
    pub(crate) fn stop_all(&self) {
        while let Some(chan) = self.take(|_| true) {
            stop::<V>(&chan);
        }
    }
}

/// Cancels what `chan` still has and waits until its worker is idle.
fn stop<V: GpuVm>(chan: &V::Channel) {
    chan.fail(ChannelError {
        err: ECANCELED,
        fault: None,
    });
    chan.wait_idle();
}
