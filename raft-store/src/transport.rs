//! The [`Transport`] seam: how raft messages travel between members.

use raft::eraftpb::Message;
use tokio::sync::mpsc;

/// Something that happened on the network that the node must hear about.
#[derive(Debug)]
pub(crate) enum NetEvent {
    Message(Message),
    Unreachable(u64),
    Disconnected(u64),
    Snapshot { to: u64, ok: bool },
}

/// The receiving end a transport delivers into: one per member.
#[derive(Debug, Clone)]
pub struct Inbox {
    pub(crate) tx: mpsc::UnboundedSender<NetEvent>,
}

impl Inbox {
    /// Delivers a raft message addressed to this member. Returns false once the member has
    /// stopped.
    pub fn deliver(&self, m: Message) -> bool {
        self.tx.send(NetEvent::Message(m)).is_ok()
    }

    /// Whether the member behind this inbox has stopped (or crashed).
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Tells the member that messages to `peer` could not be delivered.
    pub fn report_unreachable(&self, peer: u64) {
        let _ = self.tx.send(NetEvent::Unreachable(peer));
    }

    /// Tells the member that its connection to `peer` broke or could not be made (the
    /// peer's process is gone, or its host refuses connections). Stronger than
    /// [`Inbox::report_unreachable`]: when `peer` is the leader, the member stops trusting
    /// its lease and may campaign at once instead of waiting a whole election timeout.
    /// Transports that cannot tell a lost connection from a lost message do not call it.
    pub fn report_disconnected(&self, peer: u64) {
        let _ = self.tx.send(NetEvent::Disconnected(peer));
    }

    /// Tells the member whether the snapshot it sent to `peer` arrived.
    pub fn report_snapshot(&self, peer: u64, ok: bool) {
        let _ = self.tx.send(NetEvent::Snapshot { to: peer, ok });
    }
}

/// Carries raft messages between members.
///
/// Delivery is best effort: raft retries what is lost. Implementations must not block in
/// [`Transport::send`]; they queue and deliver from their own tasks.
pub trait Transport: Send + Sync + 'static {
    /// Starts delivering messages addressed to member `id` into `inbox`.
    fn attach(&self, id: u64, inbox: Inbox);

    /// Stops delivering to member `id` (it is shutting down).
    fn detach(&self, id: u64);

    /// Sends `messages` (each names its sender and recipient).
    fn send(&self, messages: Vec<Message>);

    /// Learns (or updates) the peer URLs of member `id`. Transports that route by id alone
    /// ignore it.
    fn set_peer(&self, id: u64, peer_urls: &[String]) {
        let _ = (id, peer_urls);
    }

    /// Forgets member `id`.
    fn remove_peer(&self, id: u64) {
        let _ = id;
    }
}

impl<T: Transport + ?Sized> Transport for std::sync::Arc<T> {
    fn attach(&self, id: u64, inbox: Inbox) {
        (**self).attach(id, inbox)
    }
    fn detach(&self, id: u64) {
        (**self).detach(id)
    }
    fn send(&self, messages: Vec<Message>) {
        (**self).send(messages)
    }
    fn set_peer(&self, id: u64, peer_urls: &[String]) {
        (**self).set_peer(id, peer_urls)
    }
    fn remove_peer(&self, id: u64) {
        (**self).remove_peer(id)
    }
}
