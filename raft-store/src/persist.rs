//! The persistence thread: writes and fsyncs the raft loop's staged `Ready`s off the loop,
//! so the loop keeps taking proposals, stepping messages and applying entries while the
//! disk works (raft-rs's asynchronous ready; the raft thesis, 10.2.1).
//!
//! The loop stages a ready's entries and hard state in the store (raft can read them at
//! once), hands the write here and tells raft `advance_append_async`. This thread takes every
//! write queued since its last one and appends them to the write-ahead log in one write;
//! [`SYNC_THREADS`] flushing threads `fdatasync` the log, several at once, each making
//! durable every write that finished before its flush began. As readies become durable, in
//! order, the messages that had to wait for them (a follower's append and vote responses)
//! are sent and the newest ready number is reported back, for `on_persist_ready`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;

use raft::eraftpb::Message;
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::storage::{RocksLogStore, Staged, SyncHandle};
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
        let sync = Arc::new(Flushing {
            id,
            state: parking_lot::Mutex::new(SyncState {
                handle: None,
                written: 0,
                need: 0,
                started: 0,
                durable: 0,
                pending: Default::default(),
                stop: false,
                failed: false,
            }),
            cond: parking_lot::Condvar::new(),
            transport,
            done,
            failure: failure.clone(),
        });
        let spawn_err =
            |e: std::io::Error| Error::Config(format!("starting the persistence thread: {e}"));
        let mut flushers = Vec::with_capacity(SYNC_THREADS);
        for k in 0..SYNC_THREADS {
            let (flushing, runtime) = (sync.clone(), runtime.clone());
            let t = std::thread::Builder::new()
                .name(format!("raft-sync-{id:x}-{k}"))
                .spawn(move || {
                    // Transports may spawn tasks when sending (delayed delivery in tests).
                    let _guard = runtime.as_ref().map(|h| h.enter());
                    flushing.flusher();
                });
            match t {
                Ok(t) => flushers.push(t),
                Err(e) => {
                    sync.state.lock().stop = true;
                    sync.cond.notify_all();
                    for t in flushers {
                        let _ = t.join();
                    }
                    return Err(spawn_err(e));
                }
            }
        }
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("raft-persist-{id:x}"))
                .spawn(move || {
                    let _guard = runtime.as_ref().map(|h| h.enter());
                    if let Err(e) = run(&sync, &store, &rx, &stop) {
                        sync.fail(e);
                    }
                    // Flushes in progress finish; nothing new starts.
                    sync.state.lock().stop = true;
                    sync.cond.notify_all();
                    for t in flushers {
                        let _ = t.join();
                    }
                })
                .map_err(spawn_err)?
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

/// Flushing threads per member. Four overlapping `fdatasync`s got most of what the disks
/// here give (docs/benchmarks.md: concurrent fdatasync figures); more add threads and little
/// else.
const SYNC_THREADS: usize = 4;

/// What the writing thread and the flushing threads share.
struct SyncState {
    /// The segment the newest write went to.
    handle: Option<SyncHandle>,
    /// The newest ready number written.
    written: u64,
    /// The newest written ready number that must be flushed to count.
    need: u64,
    /// The newest ready number a flush already started covers.
    started: u64,
    /// The newest ready number known durable (and reported).
    durable: u64,
    /// Written jobs not yet durable, oldest first: their number and held-back messages.
    pending: std::collections::VecDeque<(u64, Vec<Message>)>,
    stop: bool,
    failed: bool,
}

struct Flushing {
    id: u64,
    state: parking_lot::Mutex<SyncState>,
    cond: parking_lot::Condvar,
    transport: Arc<dyn Transport>,
    done: mpsc::UnboundedSender<Done>,
    failure: Arc<parking_lot::Mutex<Option<Error>>>,
}

impl Flushing {
    /// Everything up to `upto` is durable: sends the messages that waited for it and
    /// reports it, in order (called with the state locked, so reports never go backwards).
    fn release(&self, s: &mut SyncState, upto: u64) {
        let mut jobs = 0;
        while s.pending.front().is_some_and(|&(n, _)| n <= upto) {
            if let Some((_, messages)) = s.pending.pop_front()
                && !messages.is_empty()
            {
                self.transport.send(messages);
            }
            jobs += 1;
        }
        s.durable = s.durable.max(upto);
        if jobs > 0 {
            let _ = self.done.send(Done::Persisted {
                number: s.durable,
                jobs,
            });
        }
    }

    /// Once nothing written waits for a flush, what was written without needing one
    /// counts as durable too.
    fn release_unsynced(&self, s: &mut SyncState) {
        if s.need <= s.durable && s.written > s.durable {
            let written = s.written;
            self.release(s, written);
        }
    }

    fn fail(&self, e: Error) {
        let mut s = self.state.lock();
        if !s.failed {
            s.failed = true;
            self.failure.lock().get_or_insert(e);
            let _ = self.done.send(Done::Failed);
        }
        self.cond.notify_all();
    }

    /// A flushing thread: whenever something written needs a flush no started flush covers,
    /// flush; several run at once, each covering every write before it started.
    fn flusher(&self) {
        loop {
            let (target, handle) = {
                let mut s = self.state.lock();
                while !(s.stop || s.failed || s.need > s.started) {
                    self.cond.wait(&mut s);
                }
                if s.stop || s.failed {
                    return;
                }
                s.started = s.written;
                (s.written, s.handle.clone())
            };
            let result = match handle {
                Some(h) => h.sync().map_err(Error::from),
                None => Ok(()),
            };
            let result = result.and_then(|()| failpoint(self.id, "raft_store::after_persist"));
            if let Err(e) = result {
                self.fail(e);
                return;
            }
            let mut s = self.state.lock();
            if s.failed {
                return;
            }
            if target > s.durable {
                self.release(&mut s, target);
            }
            self.release_unsynced(&mut s);
            self.cond.notify_all();
        }
    }
}

fn run(
    sync: &Arc<Flushing>,
    store: &RocksLogStore,
    rx: &std_mpsc::Receiver<Cmd>,
    stop: &AtomicBool,
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
        if stop.load(Ordering::SeqCst) || sync.state.lock().failed {
            return Ok(());
        }
        if let Some(last) = jobs.last().map(|j| j.number) {
            failpoint(sync.id, "raft_store::before_persist")?;
            let handle = store.write(jobs.iter().map(|j| &j.staged))?;
            let needs_sync = jobs.iter().any(|j| j.sync);
            let mut s = sync.state.lock();
            s.handle = Some(handle);
            s.written = last;
            if needs_sync {
                s.need = last;
            }
            for j in jobs.drain(..) {
                s.pending.push_back((j.number, j.messages));
            }
            if !needs_sync && s.need <= s.durable {
                // Nothing to flush (a commit index, or messages alone): the crash point
                // after persisting is here for such writes.
                drop(s);
                failpoint(sync.id, "raft_store::after_persist")?;
                s = sync.state.lock();
            }
            sync.release_unsynced(&mut s);
            sync.cond.notify_all();
        }
        for f in flushes.drain(..) {
            let mut s = sync.state.lock();
            while !(s.failed || s.durable >= s.written) {
                sync.cond.wait(&mut s);
            }
            if s.failed {
                return Ok(());
            }
            let _ = f.send(());
        }
    }
    Ok(())
}

/// See `Loop::failpoint`: the same crash points, evaluated on this thread.
fn failpoint(id: u64, name: &'static str) -> Result<()> {
    #[cfg(feature = "failpoints")]
    {
        let hit = fail::eval(name, |arg| arg.is_none_or(|a| a == id.to_string()));
        if hit == Some(true) {
            return Err(Error::Injected(name));
        }
    }
    let _ = (id, name);
    Ok(())
}
