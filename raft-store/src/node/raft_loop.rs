//! The raft loop: the one task per member that owns `RawNode`, steps messages and proposals
//! into it, and handles each `Ready` (persisting, applying, answering callers).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use protobuf::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType, Message, MessageType,
    Snapshot, SnapshotMetadata,
};
use raft::{RawNode, SnapshotStatus, StateRole};
use tokio::sync::{mpsc, oneshot};

use super::snapshot_format::decode_snapshot;
use super::snapshotter::Snapshotter;
use super::{MAX_MSG_BYTES, Request, Role, Shared, single};
use crate::config::{Config, Member};
use crate::error::{Error, Result};
use crate::persist::{Done, Job, Persister};
use crate::state_machine::StateMachine;
use crate::storage::{DataDir, LogStore, RocksLogStore};
use crate::transport::{Inbox, NetEvent, Transport};

static BOOT_NONCE: AtomicU64 = AtomicU64::new(0);

/// A request id that no earlier run of this member used: replayed log entries from a previous
/// run must never be taken as the answer to a new request (the class of etcd #20418).
fn fresh_nonce() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.write_u64(BOOT_NONCE.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    h.finish() & !0xffff_ffff
}

fn encode_ctx(origin: u64, req: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(16);
    v.extend_from_slice(&origin.to_be_bytes());
    v.extend_from_slice(&req.to_be_bytes());
    v
}

fn decode_ctx(ctx: &[u8]) -> Option<(u64, u64)> {
    if ctx.len() != 16 {
        return None;
    }
    let a = u64::from_be_bytes(ctx[..8].try_into().ok()?);
    let b = u64::from_be_bytes(ctx[8..].try_into().ok()?);
    Some((a, b))
}

/// A caller waiting for the outcome of one of this member's proposals.
struct Pending<T> {
    tx: oneshot::Sender<Result<T>>,
    /// The term it was proposed in.
    term: u64,
    /// Its index in this member's log, once it got there.
    at: Option<u64>,
}

impl<T> Pending<T> {
    fn new(tx: oneshot::Sender<Result<T>>, term: u64) -> Self {
        Pending { tx, term, at: None }
    }

    fn fail(self, e: Error) {
        let _ = self.tx.send(Err(e));
    }

    /// Proposed before `term` and never seen in this member's log: lost with the old leader.
    fn lost_before(&self, term: u64) -> bool {
        self.term < term && self.at.is_none()
    }
}

type ProposeOutcome<S> = (u64, Arc<<S as StateMachine>::Output>);

/// The raft loop's state. Only the loop task touches it.
struct Loop<S: StateMachine> {
    // First, so it is dropped first: its thread holds the database open.
    persister: Persister,
    /// The snapshot being taken off the loop, if any (dropped, and so waited for, before
    /// the directory lock is released).
    snapshotter: Option<Snapshotter>,
    /// Wakes the loop when the snapshot thread has encoded or finished.
    snap_wake: mpsc::UnboundedSender<()>,
    /// Committed entries not yet applied because the snapshot thread still reads the state
    /// machine (applied, in order, once it has let go).
    deferred: Vec<Entry>,
    shared: Arc<Shared<S>>,
    raw: RawNode<RocksLogStore>,
    store: RocksLogStore,
    // Held for the directory lock; released when the loop ends.
    _dir: DataDir,
    transport: Arc<dyn Transport>,
    config: Config,
    /// The configuration as of `applied` (what a snapshot taken now must record).
    conf_state: ConfState,
    applied: u64,
    snapshot_index: u64,
    nonce: u64,
    next_req: u64,
    /// Proposals of this member awaiting their outcome, by request id.
    pending: HashMap<u64, Pending<ProposeOutcome<S>>>,
    pending_conf: HashMap<u64, Pending<u64>>,
    /// Log index -> request id of the pending proposals that reached this member's log.
    placed: BTreeMap<u64, u64>,
    /// The term the pending proposals were last checked against.
    term_seen: u64,
    /// Proposals taken this turn, not yet stepped into raft (see `Loop::propose_batch`).
    batch: Vec<Entry>,
    /// The size of their commands.
    batch_bytes: usize,
    /// Their callers, in the same order, with their request ids.
    batch_waiters: Vec<(u64, oneshot::Sender<Result<ProposeOutcome<S>>>)>,
    read_queue: Vec<oneshot::Sender<Result<u64>>>,
    reads: HashMap<Vec<u8>, (ReadWaiters, Instant)>,
    removed: bool,
}

/// The same error for each caller of a refused batch (`raft::Error` is not `Clone`).
fn copy_raft_error(e: &raft::Error) -> raft::Error {
    use raft::Error as E;
    match e {
        E::StepLocalMsg => E::StepLocalMsg,
        E::StepPeerNotFound => E::StepPeerNotFound,
        E::ProposalDropped => E::ProposalDropped,
        E::RequestSnapshotDropped => E::RequestSnapshotDropped,
        E::ConfigInvalid(s) => E::ConfigInvalid(s.clone()),
        E::ConfChangeError(s) => E::ConfChangeError(s.clone()),
        other => E::Io(std::io::Error::other(other.to_string())),
    }
}

/// Callers waiting on one ReadIndex request.
type ReadWaiters = Vec<oneshot::Sender<Result<u64>>>;

/// The crash point `name` for member `id` (see `Loop::failpoint`), also evaluated on the
/// member's persistence thread.
pub(crate) fn failpoint(id: u64, name: &'static str) -> Result<()> {
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

/// Runs `f`, which blocks on disk I/O, without stalling other tasks of a multi-threaded
/// runtime.
pub(crate) fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Starts member `shared.id`'s raft loop on `raw`, opened at `applied` with `conf_state`: its
/// persistence thread, its inbox on `transport`, and the task that serves `requests` until
/// shutdown, removal or failure.
#[allow(clippy::too_many_arguments)]
pub(super) fn spawn<S: StateMachine>(
    shared: Arc<Shared<S>>,
    raw: RawNode<RocksLogStore>,
    store: RocksLogStore,
    dir: DataDir,
    transport: Arc<dyn Transport>,
    config: Config,
    conf_state: ConfState,
    applied: u64,
    requests: mpsc::UnboundedReceiver<Request<S>>,
) -> Result<tokio::task::JoinHandle<()>> {
    let id = shared.id;
    let (net_tx, net_rx) = mpsc::unbounded_channel();
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let (snap_tx, snap_rx) = mpsc::unbounded_channel();
    let persister = Persister::start(id, store.clone(), transport.clone(), done_tx)?;
    transport.attach(id, Inbox { tx: net_tx });
    let mut lp = Loop {
        persister,
        snapshotter: None,
        snap_wake: snap_tx,
        deferred: Vec::new(),
        shared,
        raw,
        store,
        _dir: dir,
        transport,
        config,
        conf_state,
        applied,
        snapshot_index: applied,
        nonce: fresh_nonce(),
        next_req: 0,
        pending: HashMap::new(),
        pending_conf: HashMap::new(),
        placed: BTreeMap::new(),
        term_seen: 0,
        batch: Vec::new(),
        batch_bytes: 0,
        batch_waiters: Vec::new(),
        read_queue: Vec::new(),
        reads: HashMap::new(),
        removed: false,
    };
    Ok(tokio::spawn(async move {
        let result = lp.run(requests, net_rx, done_rx, snap_rx).await;
        if let Err(e) = &result {
            tracing::error!(member = lp.shared.id, error = %e, "raft loop failed");
            *lp.shared.failure.lock() = Some(e.to_string());
        }
        lp.stop();
    }))
}

impl<S: StateMachine> Loop<S> {
    async fn run(
        &mut self,
        mut requests: mpsc::UnboundedReceiver<Request<S>>,
        mut net: mpsc::UnboundedReceiver<NetEvent>,
        mut persisted: mpsc::UnboundedReceiver<Done>,
        mut snap_wake: mpsc::UnboundedReceiver<()>,
    ) -> Result<()> {
        // Members started together would otherwise tick in step, and two followers that
        // lose their leader together (`leader_lost`) then time out on the same tick one
        // time in ten and split the vote, which costs another randomized election timeout.
        // A random phase spreads the members' ticks over the interval.
        let phase = self.config.tick_interval.mul_f64(random_fraction());
        let mut ticker = tokio::time::interval_at(
            tokio::time::Instant::now() + phase,
            self.config.tick_interval,
        );
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    self.raw.tick();
                    self.expire();
                }
                r = requests.recv() => {
                    let Some(r) = r else { return Ok(()) };
                    if self.handle_request(r)? {
                        return Ok(());
                    }
                    // Group commit: take whatever else is queued so it shares this fsync.
                    for _ in 1..self.config.max_batch {
                        match requests.try_recv() {
                            Ok(r) => if self.handle_request(r)? { return Ok(()) },
                            Err(_) => break,
                        }
                    }
                    self.propose_batch();
                }
                Some(e) = net.recv() => {
                    self.handle_net(e);
                    for _ in 1..self.config.max_batch {
                        match net.try_recv() {
                            Ok(e) => self.handle_net(e),
                            Err(_) => break,
                        }
                    }
                }
                Some(d) = persisted.recv() => {
                    let mut newest = None;
                    let mut next = Some(d);
                    while let Some(d) = next.take() {
                        match d {
                            Done::Persisted { number, jobs } => {
                                self.persister.completed(jobs);
                                newest = Some(number);
                            }
                            Done::Failed => return Err(self.persister.failure()),
                        }
                        next = persisted.try_recv().ok();
                    }
                    if let Some(number) = newest {
                        self.raw.on_persist_ready(number);
                    }
                }
                Some(()) = snap_wake.recv() => {
                    while snap_wake.try_recv().is_ok() {}
                    self.poll_snapshotter()?;
                }
            }
            self.start_reads();
            if self.raw.has_ready() {
                self.on_ready()?;
            }
            self.fail_stale_proposals();
            self.publish_status();
            if self.removed {
                tracing::info!(
                    member = self.shared.id,
                    "removed from the cluster; stopping"
                );
                return Ok(());
            }
        }
    }

    /// A crash point for the `failpoints` feature: configure `raft_store::<name>` with
    /// `return` (every member) or `return(<id>)` (one member) to make the member stop right
    /// there, as if the process died, with nothing after it written.
    fn failpoint(&self, name: &'static str) -> Result<()> {
        failpoint(self.shared.id, name)
    }

    fn stop(&mut self) {
        // What was staged is written before the member lets go of its directory (a crash,
        // by contrast, drops it). After a failure this returns at once.
        let _ = self.persister.flush();
        // A snapshot still being taken is given up: the log behind it is only compacted
        // once it is saved, so nothing is lost, and a large one would hold the stop up.
        self.snapshotter = None;
        self.transport.detach(self.shared.id);
        for (_, p) in self.pending.drain() {
            p.fail(Error::Stopped);
        }
        for (_, p) in self.pending_conf.drain() {
            p.fail(Error::Stopped);
        }
        for tx in self.read_queue.drain(..) {
            let _ = tx.send(Err(Error::Stopped));
        }
        for (_, (txs, _)) in self.reads.drain() {
            for tx in txs {
                let _ = tx.send(Err(Error::Stopped));
            }
        }
        self.shared.status.lock().stopped = true;
    }

    fn leader(&self) -> Option<u64> {
        Some(self.raw.raft.leader_id).filter(|&l| l != raft::INVALID_ID)
    }

    fn handle_request(&mut self, r: Request<S>) -> Result<bool> {
        if !matches!(r, Request::Propose { .. }) {
            // Requests take effect in the order they came.
            self.propose_batch();
        }
        match r {
            Request::Propose { data, tx } => {
                if self.leader().is_none() {
                    let _ = tx.send(Err(Error::NoLeader));
                    return Ok(false);
                }
                self.next_req += 1;
                let req = self.nonce | self.next_req;
                let e = Entry {
                    data: data.into(),
                    context: encode_ctx(self.shared.id, req).into(),
                    ..Default::default()
                };
                self.batch_bytes += e.data.len();
                self.batch.push(e);
                self.batch_waiters.push((req, tx));
                if self.batch_bytes >= MAX_MSG_BYTES {
                    self.propose_batch();
                }
            }
            Request::ReadIndex { tx } => {
                if self.leader().is_none() {
                    let _ = tx.send(Err(Error::NoLeader));
                } else {
                    self.read_queue.push(tx);
                }
            }
            Request::ConfChange { cc, tx } => {
                if self.leader().is_none() {
                    let _ = tx.send(Err(Error::NoLeader));
                    return Ok(false);
                }
                if self.raw.raft.state == StateRole::Leader && self.raw.raft.has_pending_conf() {
                    let _ = tx.send(Err(Error::Membership(
                        "another membership change is still being applied".into(),
                    )));
                    return Ok(false);
                }
                self.next_req += 1;
                let req = self.nonce | self.next_req;
                match self
                    .raw
                    .propose_conf_change(encode_ctx(self.shared.id, req), cc)
                {
                    Ok(()) => {
                        self.pending_conf
                            .insert(req, Pending::new(tx, self.raw.raft.term));
                    }
                    Err(raft::Error::ProposalDropped) => {
                        let _ = tx.send(Err(Error::NoLeader));
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.into()));
                    }
                }
            }
            Request::TransferLeader { to } => self.raw.transfer_leader(to),
            Request::Shutdown => return Ok(true),
        }
        Ok(false)
    }

    /// Steps the proposals taken since the last call into raft as one `MsgPropose`, which
    /// is what `RawNode::propose` steps for a single entry. A leader broadcasts one append
    /// per proposal message, so batching turns a turn's N proposals into one append per
    /// follower (and one acknowledgement back) instead of N, and a follower forwards them to
    /// the leader in one message.
    fn propose_batch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgPropose);
        m.from = self.shared.id;
        m.set_entries(std::mem::take(&mut self.batch).into());
        self.batch_bytes = 0;
        let term = self.raw.raft.term;
        let result = self.raw.raft.step(m);
        for (req, tx) in self.batch_waiters.drain(..) {
            match &result {
                Ok(()) => {
                    self.pending.insert(req, Pending::new(tx, term));
                }
                Err(raft::Error::ProposalDropped) => {
                    let _ = tx.send(Err(Error::NoLeader));
                }
                Err(e) => {
                    let _ = tx.send(Err(Error::Raft(copy_raft_error(e))));
                }
            }
        }
    }

    fn handle_net(&mut self, e: NetEvent) {
        match e {
            NetEvent::Message(m) => {
                // Messages from unknown or removed peers, or stale ones, are refused by raft;
                // a bad message must never stop the member.
                if let Err(err) = self.raw.step(m) {
                    tracing::debug!(member = self.shared.id, error = %err, "dropped raft message");
                }
            }
            NetEvent::Unreachable(id) => self.raw.report_unreachable(id),
            NetEvent::Disconnected(id) => {
                self.raw.report_unreachable(id);
                self.leader_lost(id);
            }
            NetEvent::Snapshot { to, ok } => {
                let status = if ok {
                    SnapshotStatus::Finish
                } else {
                    SnapshotStatus::Failure
                };
                self.raw.report_snapshot(to, status);
            }
        }
    }

    /// The connection to `peer` broke. If `peer` is the leader this follower follows, the
    /// leader's process most likely died: stop honouring its lease, so this member grants
    /// votes and campaigns after the rest of its randomized election timeout (0 to 1x
    /// `election_ticks` from now) instead of a whole one (1x to 2x).
    ///
    /// Safe because pre-vote and check-quorum still decide: a member that still hears from
    /// a live leader refuses the pre-vote, so a connection lost on one side only costs a
    /// refused pre-vote round, never a leader.
    fn leader_lost(&mut self, peer: u64) {
        let r = &mut self.raw.raft;
        if r.state == StateRole::Follower && r.leader_id == peer {
            let lease = r.election_timeout();
            if r.election_elapsed < lease {
                tracing::debug!(
                    member = self.shared.id,
                    leader = peer,
                    "lost the leader's connection; its lease ends now"
                );
                r.election_elapsed = lease;
            }
        }
    }

    /// Fails the proposals made in an earlier term that never reached this member's log,
    /// once the term moves on. A proposal a follower forwarded to a leader that then died
    /// is lost, and its caller would otherwise wait for the whole request timeout. The
    /// caller is told at once that the outcome is unknown (as with a timeout) and can retry
    /// with the new leader. Proposals already in the log wait for their entry to apply:
    /// they commit, or [`Loop::apply`] finds another entry in their place.
    fn fail_stale_proposals(&mut self) {
        let term = self.raw.raft.term;
        if term == self.term_seen {
            return;
        }
        self.term_seen = term;
        for (_, p) in self.pending.extract_if(|_, p| p.lost_before(term)) {
            p.fail(Error::LeaderChanged { term });
        }
        for (_, p) in self.pending_conf.extract_if(|_, p| p.lost_before(term)) {
            p.fail(Error::LeaderChanged { term });
        }
    }

    /// Notes where this member's pending proposals landed in its log.
    fn note_placed(&mut self, entries: &[Entry]) {
        for e in entries {
            let Some((origin, req)) = decode_ctx(&e.context) else {
                continue;
            };
            if origin != self.shared.id {
                continue;
            }
            let at = if let Some(p) = self.pending.get_mut(&req) {
                &mut p.at
            } else if let Some(p) = self.pending_conf.get_mut(&req) {
                &mut p.at
            } else {
                continue;
            };
            // A proposal re-appended at another index (the log was rewritten) moves there.
            if let Some(old) = at.replace(e.index) {
                self.placed.remove(&old);
            }
            self.placed.insert(e.index, req);
        }
    }

    /// The proposal placed at `index` was replaced by another entry (a new leader rewrote
    /// the log) or skipped by a snapshot: its outcome is unknown to this member.
    fn displaced(&mut self, index: u64, by: Option<u64>) {
        let Some(req) = self.placed.remove(&index) else {
            return;
        };
        if by == Some(req) {
            return;
        }
        let term = self.raw.raft.term;
        if let Some(p) = self.pending.remove(&req) {
            p.fail(Error::LeaderChanged { term });
        } else if let Some(p) = self.pending_conf.remove(&req) {
            p.fail(Error::LeaderChanged { term });
        }
    }

    /// Issues one ReadIndex round for every read queued since the last one.
    fn start_reads(&mut self) {
        if self.read_queue.is_empty() {
            return;
        }
        self.next_req += 1;
        let ctx = encode_ctx(self.shared.id, self.nonce | self.next_req);
        self.raw.read_index(ctx.clone());
        let batch = std::mem::take(&mut self.read_queue);
        self.reads.insert(ctx, (batch, Instant::now()));
    }

    /// Fails reads whose round got no answer within an election timeout (the leader changed
    /// or the message was lost), and forgets proposals whose callers gave up.
    fn expire(&mut self) {
        let limit = self.config.tick_interval * self.config.election_ticks as u32 * 2;
        let now = Instant::now();
        self.reads.retain(|_, (txs, at)| {
            if now.duration_since(*at) < limit {
                return true;
            }
            for tx in txs.drain(..) {
                let _ = tx.send(Err(Error::Timeout(limit)));
            }
            false
        });
        self.pending.retain(|_, p| !p.tx.is_closed());
        self.pending_conf.retain(|_, p| !p.tx.is_closed());
        // Forget where abandoned proposals were placed.
        let (pending, conf) = (&self.pending, &self.pending_conf);
        self.placed
            .retain(|_, req| pending.contains_key(req) || conf.contains_key(req));
    }

    fn send(&self, msgs: Vec<Message>) {
        if !msgs.is_empty() {
            self.transport.send(msgs);
        }
    }

    /// Handles a `Ready` asynchronously: messages a leader may send before its own write go
    /// out, committed entries are applied, and the entries and hard state are staged and
    /// handed to the persistence thread, which sends the messages that must wait for them
    /// (a follower's acknowledgements) once they are durable.
    fn on_ready(&mut self) -> Result<()> {
        let mut rd = self.raw.ready();
        if !rd.snapshot().is_empty() {
            return self.on_snapshot_ready(rd);
        }
        self.send(rd.take_messages());
        self.apply_or_defer(rd.take_committed_entries())?;
        self.answer_reads(rd.take_read_states());
        let entries = rd.take_entries();
        let hs = rd.hs().cloned();
        let messages = rd.take_persisted_messages();
        let number = rd.number();
        if entries.is_empty() && hs.is_none() && messages.is_empty() {
            self.raw.advance_append_async(rd);
            // Nothing to write: durable as soon as everything before it is.
            if self.persister.idle() {
                self.raw.on_persist_ready(number);
            }
        } else {
            self.note_placed(&entries);
            let staged = self.store.stage(entries, hs)?;
            let sync = rd.must_sync();
            self.raw.advance_append_async(rd);
            self.persister.submit(Job {
                number,
                staged,
                sync,
                messages,
            })?;
        }
        self.raw.advance_apply_to(self.applied);
        self.maybe_snapshot()?;
        Ok(())
    }

    /// Handles a `Ready` carrying a snapshot from the leader, synchronously: the writes
    /// before it are flushed first, since installing it replaces the whole log.
    fn on_snapshot_ready(&mut self, mut rd: raft::Ready) -> Result<()> {
        // Our own snapshot must not be saved over the leader's, and the state machine must
        // be ours to replace.
        self.finish_snapshot()?;
        self.persister.flush()?;
        self.send(rd.take_messages());
        let snap = rd.snapshot().clone();
        self.install_snapshot(&snap)?;
        self.apply(rd.take_committed_entries())?;
        if !rd.entries().is_empty() || rd.hs().is_some() {
            self.note_placed(rd.entries());
            self.failpoint("raft_store::before_persist")?;
            let (store, entries, hs, sync) = (&self.store, rd.entries(), rd.hs(), rd.must_sync());
            blocking(|| store.append(entries, hs, sync))?;
            self.failpoint("raft_store::after_persist")?;
        }
        self.send(rd.take_persisted_messages());
        self.answer_reads(rd.take_read_states());
        let mut light = self.raw.advance(rd);
        if let Some(commit) = light.commit_index() {
            let mut hs = self.store.hard_state();
            hs.commit = commit;
            // The commit index can be relearned from the leader: no fsync needed.
            self.store.append(&[], Some(&hs), false)?;
        }
        self.send(light.take_messages());
        self.apply_or_defer(light.take_committed_entries())?;
        self.raw.advance_apply_to(self.applied);
        self.maybe_snapshot()?;
        Ok(())
    }

    fn answer_reads(&mut self, states: Vec<raft::ReadState>) {
        for rs in states {
            if let Some((txs, _)) = self.reads.remove(&rs.request_ctx[..]) {
                for tx in txs {
                    let _ = tx.send(Ok(rs.index));
                }
            }
        }
    }

    fn install_snapshot(&mut self, snap: &Snapshot) -> Result<()> {
        let (members, sm_bytes) = decode_snapshot(&snap.data)?;
        {
            let mut sm = self.shared.sm.write();
            sm.restore(&mut &sm_bytes[..]).map_err(Error::Snapshot)?;
        }
        self.failpoint("raft_store::snapshot_restored")?;
        blocking(|| self.store.apply_snapshot(snap))?;
        let md = snap.get_metadata();
        let skipped: Vec<u64> = self.placed.range(..=md.index).map(|(&i, _)| i).collect();
        for i in skipped {
            self.displaced(i, None);
        }
        self.conf_state = md.get_conf_state().clone();
        self.applied = md.index;
        self.snapshot_index = md.index;
        for m in members.values() {
            self.transport.set_peer(m.id, &m.peer_urls);
        }
        *self.shared.members.write() = members;
        let _ = self.shared.applied.send_replace(md.index);
        Ok(())
    }

    fn apply(&mut self, entries: Vec<Entry>) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let shared = self.shared.clone();
        let mut sm = shared.sm.write();
        for e in entries {
            self.failpoint("raft_store::before_apply")?;
            self.applied = e.index;
            let origin = decode_ctx(&e.context).filter(|(o, _)| *o == self.shared.id);
            self.displaced(e.index, origin.map(|(_, req)| req));
            match e.get_entry_type() {
                EntryType::EntryNormal => {
                    if e.data.is_empty() {
                        continue;
                    }
                    let out = match serde_json::from_slice::<S::Command>(&e.data) {
                        Ok(cmd) => {
                            let out = Arc::new(sm.apply(e.index, cmd));
                            let _ = self.shared.events.send(out.clone());
                            Ok((e.index, out))
                        }
                        Err(err) => Err(Error::Codec(format!("entry {}: {err}", e.index))),
                    };
                    if let Some((_, req)) = origin
                        && let Some(p) = self.pending.remove(&req)
                    {
                        let _ = p.tx.send(out);
                    }
                }
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    let cc = if e.get_entry_type() == EntryType::EntryConfChange {
                        ConfChange::parse_from_bytes(&e.data).map(|v1| {
                            let mut cc = ConfChangeV2::default();
                            cc.mut_changes()
                                .push(single(v1.node_id, v1.get_change_type()));
                            cc.context = v1.context;
                            cc
                        })
                    } else {
                        ConfChangeV2::parse_from_bytes(&e.data)
                    };
                    let result = match cc {
                        Ok(cc) => self.apply_conf_change(&cc),
                        Err(err) => Err(Error::Codec(format!("conf change {}: {err}", e.index))),
                    };
                    if let Err(err) = &result {
                        tracing::warn!(member = self.shared.id, index = e.index, error = %err, "conf change not applied");
                    }
                    if let Some((_, req)) = origin
                        && let Some(p) = self.pending_conf.remove(&req)
                    {
                        let _ = p.tx.send(result.map(|()| e.index));
                    }
                }
            }
        }
        drop(sm);
        self.failpoint("raft_store::after_apply")?;
        let _ = self.shared.applied.send_replace(self.applied);
        Ok(())
    }

    fn apply_conf_change(&mut self, cc: &ConfChangeV2) -> Result<()> {
        let cs = self.raw.apply_conf_change(cc)?;
        let member: Option<Member> = if cc.context.is_empty() {
            None
        } else {
            Some(serde_json::from_slice(&cc.context).map_err(|e| Error::Codec(e.to_string()))?)
        };
        let mut members = self.shared.members.write();
        for ch in cc.get_changes() {
            match ch.get_change_type() {
                ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                    let mut m = member
                        .clone()
                        .filter(|m| m.id == ch.node_id)
                        .unwrap_or_else(|| Member::new(ch.node_id, ""));
                    m.is_learner = ch.get_change_type() == ConfChangeType::AddLearnerNode;
                    self.transport.set_peer(m.id, &m.peer_urls);
                    members.insert(m.id, m);
                }
                ConfChangeType::RemoveNode => {
                    members.remove(&ch.node_id);
                    if ch.node_id == self.shared.id {
                        self.removed = true;
                    } else {
                        self.transport.remove_peer(ch.node_id);
                    }
                }
            }
        }
        self.conf_state = cs;
        Ok(())
    }

    /// Starts a snapshot once enough entries were applied since the last (or raft asked for
    /// a newer one), unless one is being taken. The state machine is encoded and saved on a
    /// thread of its own ([`Snapshotter`]); the log is compacted once it is saved.
    fn maybe_snapshot(&mut self) -> Result<()> {
        if self.snapshotter.is_some() {
            return Ok(());
        }
        // Raft may need a newer snapshot than the threshold would give (for a member added
        // after the newest one): take one now if anything was applied since.
        let wanted = self.store.take_snapshot_request() && self.applied > self.snapshot_index;
        if !wanted && self.applied < self.snapshot_index + self.config.snapshot_entries {
            return Ok(());
        }
        let mut md = SnapshotMetadata {
            index: self.applied,
            term: self.raw.raft.raft_log.term(self.applied)?,
            ..Default::default()
        };
        md.set_conf_state(self.conf_state.clone());
        // Conf changes are applied in log order like any entry, so the member list matches
        // the state machine as of `applied`, which stays put until the thread has encoded it.
        let members = self.shared.members.read().clone();
        self.snapshotter = Some(Snapshotter::start(
            self.shared.clone(),
            self.store.clone(),
            md,
            members,
            self.snap_wake.clone(),
        )?);
        Ok(())
    }

    /// Applies committed entries, or keeps them while the snapshot thread still reads the
    /// state machine (it must see the state as of the snapshot's index). Entries kept
    /// earlier go first.
    fn apply_or_defer(&mut self, entries: Vec<Entry>) -> Result<()> {
        if self.snapshotter.as_ref().is_some_and(|s| !s.encoded()) {
            self.deferred.extend(entries);
            return Ok(());
        }
        if self.deferred.is_empty() {
            return self.apply(entries);
        }
        let mut all = std::mem::take(&mut self.deferred);
        all.extend(entries);
        self.apply(all)
    }

    /// Called when the snapshot thread reports: applies what waited for its encoding, and
    /// finishes the snapshot once it is saved.
    fn poll_snapshotter(&mut self) -> Result<()> {
        let Some(s) = &self.snapshotter else {
            return Ok(());
        };
        let finished = s.finished();
        if s.encoded() && !self.deferred.is_empty() {
            self.apply_or_defer(Vec::new())?;
            self.raw.advance_apply_to(self.applied);
        }
        if finished {
            self.finish_snapshot()?;
        }
        Ok(())
    }

    /// Waits for the snapshot thread, applies what waited for it (the caller tells raft, with
    /// `advance_apply_to`), and compacts the log behind the saved snapshot.
    fn finish_snapshot(&mut self) -> Result<()> {
        let Some(mut s) = self.snapshotter.take() else {
            return Ok(());
        };
        let result = blocking(|| s.join());
        self.apply_or_defer(Vec::new())?;
        let saved = result?;
        self.snapshot_index = s.index;
        let compact_to = s.index.saturating_sub(self.config.catchup_entries) + 1;
        let store = &self.store;
        blocking(|| store.compact(compact_to))?;
        tracing::info!(
            member = self.shared.id,
            index = s.index,
            bytes = saved.bytes,
            encode_ms = saved.encode.as_millis() as u64,
            total_ms = s.started.elapsed().as_millis() as u64,
            compact_to,
            "snapshot saved"
        );
        Ok(())
    }

    fn publish_status(&self) {
        let r = &self.raw.raft;
        let mut s = self.shared.status.lock();
        let leader = self.leader();
        if leader != s.leader || (leader.is_some() && r.term != s.term) {
            s.leader_since = leader.map(|_| std::time::SystemTime::now());
        }
        s.leader = leader;
        s.term = r.term;
        s.role = match r.state {
            StateRole::Leader => Role::Leader,
            StateRole::Candidate => Role::Candidate,
            StateRole::PreCandidate => Role::PreCandidate,
            StateRole::Follower => Role::Follower,
        };
        s.commit = r.raft_log.committed;
        s.applied = self.applied;
        s.snapshot_index = self.snapshot_index;
        let (t, _) = self.store.truncated();
        s.first_index = t + 1;
        s.last_index = r.raft_log.last_index();
    }
}

/// A random number in [0, 1): the hash of nothing under std's random keys (a fresh
/// `RandomState` per call), as `fresh_nonce` does without a random-number dependency.
fn random_fraction() -> f64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let h = std::collections::hash_map::RandomState::new().build_hasher();
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_contexts_round_trip() {
        assert_eq!(decode_ctx(&encode_ctx(7, 9)), Some((7, 9)));
        assert_eq!(decode_ctx(b"short"), None);
        assert_ne!(fresh_nonce(), fresh_nonce());
    }
}
