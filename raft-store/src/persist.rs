//! The persistence thread: writes and fsyncs the raft loop's staged `Ready`s off the loop,
//! so the loop keeps taking proposals, stepping messages and applying entries while the
//! disk works (raft-rs's asynchronous ready; the raft thesis, 10.2.1).
//!
//! The loop stages a ready's entries and hard state in the store (raft can read them at
//! once), hands the write here and tells raft `advance_append_async`. This thread takes every
//! write queued since its last one, writes them as one RocksDB batch with one fsync, then
//! sends the messages that had to wait for that durability (a follower's append and vote
//! responses) and reports the newest ready number back, for `on_persist_ready`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;

use raft::eraftpb::Message;
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::node::failpoint;
use crate::storage::{RocksLogStore, Staged};
use crate::transport::Transport;

/// One ready's write.
pub(crate) struct Job {
    /// The ready's number.
    pub(crate) number: u64,
    pub(crate) staged: Staged,
    /// Whether the write must be durable before it counts (entries, term or vote changed).
    pub(crate) sync: bool,
    /// Messages to send once the write is durable.
    pub(crate) messages: Vec<Message>,
}

enum Cmd {
    Job(Job),
    /// Answered once every job queued before it is durable.
    Flush(std_mpsc::SyncSender<()>),
}

/// What the thread reports to the loop.
pub(crate) enum Done {
    /// The readies up to `number` are durable; `jobs` jobs completed.
    Persisted { number: u64, jobs: usize },
    /// Writing failed (or a failpoint fired) and the thread stopped;
    /// [`Persister::failure`] tells why.
    Failed,
}

/// The loop's handle on the persistence thread. Dropping it stops the thread after the
/// write in progress, if any, without writing what is still queued (as a crash would), and
/// waits for it, so the database is closed once the loop is gone.
pub(crate) struct Persister {
    tx: Option<std_mpsc::Sender<Cmd>>,
    thread: Option<std::thread::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    failure: Arc<parking_lot::Mutex<Option<Error>>>,
    in_flight: usize,
}

/// Most jobs written in one batch: bounds one write's size and the wait of its first job.
const MAX_JOBS_PER_WRITE: usize = 4096;

impl Persister {
    /// Starts the thread for member `id`. Reports arrive on `done`.
    pub(crate) fn start(
        id: u64,
        store: RocksLogStore,
        transport: Arc<dyn Transport>,
        done: mpsc::UnboundedSender<Done>,
    ) -> Result<Self> {
        let (tx, rx) = std_mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let failure = Arc::new(parking_lot::Mutex::new(None));
        let runtime = tokio::runtime::Handle::try_current().ok();
        let thread = {
            let stop = stop.clone();
            let failure = failure.clone();
            std::thread::Builder::new()
                .name(format!("raft-persist-{id:x}"))
                .spawn(move || {
                    // Transports may spawn tasks when sending (delayed delivery in tests).
                    let _guard = runtime.as_ref().map(|h| h.enter());
                    if let Err(e) = run(id, &store, &*transport, &rx, &stop, &done) {
                        *failure.lock() = Some(e);
                        let _ = done.send(Done::Failed);
                    }
                })
                .map_err(|e| Error::Config(format!("starting the persistence thread: {e}")))?
        };
        Ok(Persister {
            tx: Some(tx),
            thread: Some(thread),
            stop,
            failure,
            in_flight: 0,
        })
    }

    /// Queues a ready's write.
    pub(crate) fn submit(&mut self, job: Job) -> Result<()> {
        self.in_flight += 1;
        self.send(Cmd::Job(job))
    }

    /// Whether every submitted job has been reported done.
    pub(crate) fn idle(&self) -> bool {
        self.in_flight == 0
    }

    /// Notes a report of `jobs` completed jobs.
    pub(crate) fn completed(&mut self, jobs: usize) {
        self.in_flight = self.in_flight.saturating_sub(jobs);
    }

    /// Waits until every job submitted so far is durable (their reports are still
    /// delivered on the channel as usual).
    pub(crate) fn flush(&mut self) -> Result<()> {
        if self.idle() {
            return Ok(());
        }
        let (tx, rx) = std_mpsc::sync_channel(1);
        self.send(Cmd::Flush(tx))?;
        crate::node::blocking(|| rx.recv()).map_err(|_| self.failure())
    }

    /// Why the thread stopped (taken: a second call gives [`Error::Stopped`]).
    pub(crate) fn failure(&self) -> Error {
        self.failure.lock().take().unwrap_or(Error::Stopped)
    }

    fn send(&self, cmd: Cmd) -> Result<()> {
        // A send fails only once the thread has stopped (the job comes back in the error).
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(cmd).is_ok());
        if sent { Ok(()) } else { Err(self.failure()) }
    }
}

impl Drop for Persister {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(
    id: u64,
    store: &RocksLogStore,
    transport: &dyn Transport,
    rx: &std_mpsc::Receiver<Cmd>,
    stop: &AtomicBool,
    done: &mpsc::UnboundedSender<Done>,
) -> Result<()> {
    let mut jobs: Vec<Job> = Vec::new();
    let mut flushes = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(cmd) = next.take() {
            match cmd {
                Cmd::Job(j) => jobs.push(j),
                Cmd::Flush(f) => flushes.push(f),
            }
            if jobs.len() < MAX_JOBS_PER_WRITE {
                next = rx.try_recv().ok();
            }
        }
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        write(id, store, &jobs)?;
        let number = jobs.last().map(|j| j.number);
        let n = jobs.len();
        for j in jobs.drain(..) {
            if !j.messages.is_empty() {
                transport.send(j.messages);
            }
        }
        if let Some(number) = number {
            let _ = done.send(Done::Persisted { number, jobs: n });
        }
        for f in flushes.drain(..) {
            let _ = f.send(());
        }
    }
    Ok(())
}

fn write(id: u64, store: &RocksLogStore, jobs: &[Job]) -> Result<()> {
    if jobs.is_empty() {
        return Ok(());
    }
    failpoint(id, "raft_store::before_persist")?;
    let sync = jobs.iter().any(|j| j.sync);
    store.persist(jobs.iter().map(|j| &j.staged), sync)?;
    failpoint(id, "raft_store::after_persist")?;
    Ok(())
}
