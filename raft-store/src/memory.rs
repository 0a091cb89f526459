//! An in-memory [`Transport`] with drop, partition and delay filters, for tests.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use raft::eraftpb::{Message, MessageType};

use crate::transport::{Inbox, Transport};

/// A simulated network connecting the members of one or more in-process clusters.
///
/// Every member gets its own [`MemTransport`] from [`MemNetwork::transport`]; the filters set
/// on the network apply to all of them.
#[derive(Debug, Clone, Default)]
pub struct MemNetwork {
    state: Arc<Mutex<NetState>>,
}

#[derive(Debug, Default)]
struct NetState {
    inboxes: HashMap<u64, Inbox>,
    /// Directed links that drop everything.
    cut: HashSet<(u64, u64)>,
    /// Probability (0..=1) that any message is lost.
    drop_rate: f64,
    delay: Option<Duration>,
    rng: u64,
    delivered: u64,
    dropped: u64,
}

impl NetState {
    fn next_random(&mut self) -> f64 {
        // xorshift64*: deterministic given the seed, good enough to pick messages to drop.
        let mut x = self.rng.max(1);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl MemNetwork {
    /// A network with no filters.
    pub fn new() -> Self {
        let n = Self::default();
        n.state.lock().rng = 0x9e37_79b9_7f4a_7c15;
        n
    }

    /// A transport handle for members on this network.
    pub fn transport(&self) -> MemTransport {
        MemTransport { net: self.clone() }
    }

    /// Cuts every link between members of different `groups` (both directions). Members not
    /// named keep their links.
    pub fn partition(&self, groups: &[&[u64]]) {
        let mut s = self.state.lock();
        for (i, a) in groups.iter().enumerate() {
            for (j, b) in groups.iter().enumerate() {
                if i != j {
                    for &x in *a {
                        for &y in *b {
                            s.cut.insert((x, y));
                        }
                    }
                }
            }
        }
    }

    /// Cuts `id` off from every other member currently attached (and `others`).
    pub fn isolate(&self, id: u64, others: &[u64]) {
        let mut s = self.state.lock();
        let mut peers: Vec<u64> = s.inboxes.keys().copied().collect();
        peers.extend_from_slice(others);
        for p in peers {
            if p != id {
                s.cut.insert((id, p));
                s.cut.insert((p, id));
            }
        }
    }

    /// Cuts the one-way link `from -> to`.
    pub fn cut(&self, from: u64, to: u64) {
        self.state.lock().cut.insert((from, to));
    }

    /// Restores every link and removes loss and delay.
    pub fn heal(&self) {
        let mut s = self.state.lock();
        s.cut.clear();
        s.drop_rate = 0.0;
        s.delay = None;
    }

    /// Loses each message with probability `rate` (0.0 to 1.0), using a generator seeded
    /// with `seed` so runs can be replayed.
    pub fn set_drop_rate(&self, rate: f64, seed: u64) {
        let mut s = self.state.lock();
        s.drop_rate = rate.clamp(0.0, 1.0);
        s.rng = seed | 1;
    }

    /// Delays every message by `delay` (None: deliver at once).
    pub fn set_delay(&self, delay: Option<Duration>) {
        self.state.lock().delay = delay;
    }

    /// Messages delivered and dropped so far.
    pub fn counters(&self) -> (u64, u64) {
        let s = self.state.lock();
        (s.delivered, s.dropped)
    }
}

/// One member's handle on a [`MemNetwork`].
#[derive(Debug, Clone)]
pub struct MemTransport {
    net: MemNetwork,
}

impl Transport for MemTransport {
    fn attach(&self, id: u64, inbox: Inbox) {
        self.net.state.lock().inboxes.insert(id, inbox);
    }

    fn detach(&self, id: u64) {
        self.net.state.lock().inboxes.remove(&id);
    }

    fn send(&self, messages: Vec<Message>) {
        let mut s = self.net.state.lock();
        for m in messages {
            let (from, to) = (m.from, m.to);
            let snapshot = m.get_msg_type() == MessageType::MsgSnapshot;
            let target = s.inboxes.get(&to).cloned();
            let lost = s.cut.contains(&(from, to)) || {
                let p = s.drop_rate;
                p > 0.0 && s.next_random() < p
            };
            let sender = s.inboxes.get(&from).cloned();
            // A member that stopped or crashed refuses connections, which its peers notice
            // at once; a cut link or a lost message goes unnoticed (but for raft's resends).
            let gone = target.as_ref().is_none_or(Inbox::is_closed);
            match target {
                _ if gone && !lost => {
                    s.dropped += 1;
                    if let Some(sender) = sender {
                        if snapshot {
                            sender.report_snapshot(to, false);
                        }
                        sender.report_disconnected(to);
                    }
                }
                Some(inbox) if !lost => {
                    s.delivered += 1;
                    match (s.delay, tokio::runtime::Handle::try_current()) {
                        (Some(d), Ok(h)) => {
                            h.spawn(async move {
                                tokio::time::sleep(d).await;
                                inbox.deliver(m);
                            });
                        }
                        _ => {
                            inbox.deliver(m);
                        }
                    }
                    if snapshot && let Some(sender) = sender {
                        sender.report_snapshot(to, true);
                    }
                }
                _ => {
                    s.dropped += 1;
                    if let Some(sender) = sender {
                        if snapshot {
                            sender.report_snapshot(to, false);
                        }
                        sender.report_unreachable(to);
                    }
                }
            }
        }
    }
}
