//! What control holds of the workers: their rings and shared state, a
//! handler per queue, and the threads that run them.
use std::{
    sync::{Arc, atomic::AtomicBool},
    thread::JoinHandle,
};

use anyhow::{Context, Result};
use tracing::error;
use xdpsec_afxdp::XskQueue;
use xdpsec_datapath::WorkerState;

use crate::{
    handler::{DatapathHandler, InsideIo, Published, WorkerCtx},
    handoff::HandoffQueue,
    punt::PuntHub,
    stats::IoStats,
    taps::Taps,
};

/// The workers' rings and shared state, as control sees them: every
/// worker's handoff queue, the punt and inject rings, the taps, and each
/// worker's I/O counters.
pub struct Workers {
    handoff: Arc<Vec<Arc<HandoffQueue>>>,
    punt: Arc<PuntHub>,
    taps: Arc<Taps>,
}

impl Workers {
    /// Preallocated rings for `n` workers, the taps all off.
    pub fn new(n: usize) -> Result<Workers> {
        let handoff: Arc<Vec<Arc<HandoffQueue>>> = Arc::new(
            (0..n)
                .map(|_| HandoffQueue::new().map(Arc::new))
                .collect::<std::io::Result<_>>()
                .context("creating the workers' handoff queues")?,
        );
        let punt = Arc::new(
            PuntHub::new(Arc::clone(&handoff)).context("creating the workers' punt rings")?,
        );
        Ok(Workers {
            handoff,
            punt,
            taps: Arc::new(Taps::new(n)),
        })
    }

    /// Worker `w`'s handoff queue (the kernel-socket thread hands frames to
    /// worker 0's).
    pub fn handoff(&self, w: usize) -> Arc<HandoffQueue> {
        Arc::clone(&self.handoff[w])
    }

    /// The punt rings' owner end and the inject path.
    pub fn punt(&self) -> Arc<PuntHub> {
        Arc::clone(&self.punt)
    }

    /// The packet trace and drop capture.
    pub fn taps(&self) -> Arc<Taps> {
        Arc::clone(&self.taps)
    }

    /// Worker `w`'s I/O counters.
    pub fn io(&self, w: usize) -> Arc<IoStats> {
        self.punt.io(w)
    }

    /// The handler of worker `ws`, delivering decrypted packets to `inside`.
    pub fn handler(&self, ws: WorkerState, p: &Published, inside: InsideIo) -> DatapathHandler {
        let io = self.io(usize::from(ws.id()));
        let ctx = WorkerCtx {
            published: p.clone(),
            handoff: Arc::clone(&self.handoff),
            punt: Arc::clone(&self.punt),
            taps: Arc::clone(&self.taps),
        };
        DatapathHandler::new(ws, ctx, inside, io)
    }

    /// Run each queue's loop with its handler on a thread of its own
    /// (`xdpsec-qN`) until `stop`; the socket closes in its thread when
    /// the loop ends.
    pub fn spawn(
        queues: Vec<(XskQueue, DatapathHandler)>,
        stop: &Arc<AtomicBool>,
    ) -> Result<Vec<JoinHandle<()>>> {
        let mut workers = Vec::new();
        for (mut xsk, mut handler) in queues {
            let stop = Arc::clone(stop);
            let q = xsk.queue();
            let h = std::thread::Builder::new()
                .name(format!("xdpsec-q{q}"))
                .spawn(move || {
                    if let Err(e) = xsk.run(&mut handler, &stop) {
                        error!(queue = q, error = %e, "AF_XDP worker failed");
                    }
                    // The socket closes here, in its own thread, once the loop ends.
                })
                .context("spawning a worker thread")?;
            workers.push(h);
        }
        Ok(workers)
    }
}
