//! What an operation did: [`Event`] with its [`Action`], node and previous node.

use serde::{Deserialize, Serialize};

use crate::node::NodeView;

/// etcd's action names (`"compareAndSwap"` etc. in JSON), plus [`Action::Txn`] for the
/// multi-key transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum Action {
    /// A read.
    Get,
    /// A new node (`prevExist=false`, or POST).
    Create,
    /// An unconditional write.
    Set,
    /// A write to an existing node (`prevExist=true`).
    Update,
    /// A removal.
    Delete,
    /// A conditional write.
    CompareAndSwap,
    /// A conditional removal.
    CompareAndDelete,
    /// A node removed because its TTL ran out; also the summary of [`crate::Op::Expire`].
    Expire,
    /// The summary of a [`crate::Op::Txn`].
    Txn,
}

impl Action {
    /// etcd's name for the action.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Get => "get",
            Action::Create => "create",
            Action::Set => "set",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::CompareAndSwap => "compareAndSwap",
            Action::CompareAndDelete => "compareAndDelete",
            Action::Expire => "expire",
            Action::Txn => "txn",
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of one operation (etcd's `Event`).
///
/// `index` is the store index right after the event (what etcd sends as `X-Etcd-Index`
/// with it); for a read it is the current index. Events of single-key operations have no
/// `batch`. The summary events of [`crate::Op::Expire`] and [`crate::Op::Txn`] carry the
/// individual events in `batch`; their own `node` is the root, and they are never stored
/// in the history or sent to watchers (the events inside are).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// What happened.
    pub action: Action,
    /// The node after the operation (for delete/expire: its key and indexes only).
    pub node: NodeView,
    /// The node before the operation, without children, if there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_node: Option<NodeView>,
    /// Store index after the event.
    pub index: u64,
    /// The events of a batch (expiry sweep or transaction).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<Batch>,
}

/// The individual events of an expiry sweep or a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// For a transaction: whether every comparison held (so the `success` operations
    /// ran, not the `failure` ones). Always true for an expiry sweep.
    pub succeeded: bool,
    /// The events in the order they happened.
    pub events: Vec<Event>,
}

impl Event {
    /// Whether this is the summary of an expiry sweep or a transaction.
    pub fn is_batch(&self) -> bool {
        self.batch.is_some()
    }

    /// The HTTP status etcd answers a successful write with: 201 for `create` and for a
    /// `set` that created a node, 200 otherwise.
    pub fn http_status(&self) -> u16 {
        match self.action {
            Action::Create => 201,
            Action::Set if self.prev_node.is_none() => 201,
            _ => 200,
        }
    }

    pub(crate) fn new(
        action: Action,
        node: NodeView,
        prev_node: Option<NodeView>,
        index: u64,
    ) -> Event {
        Event {
            action,
            node,
            prev_node,
            index,
            batch: None,
        }
    }

    /// Makes `self` equal to `src`, reusing `self`'s buffers where it can.
    pub(crate) fn copy_from(&mut self, src: &Event) {
        self.action = src.action;
        self.node.copy_from(&src.node);
        match (&mut self.prev_node, &src.prev_node) {
            (Some(d), Some(s)) => d.copy_from(s),
            (d, s) => *d = s.clone(),
        }
        self.index = src.index;
        self.batch.clone_from(&src.batch);
    }

    /// Whether this event is a removal of a directory (which also notifies watchers of
    /// everything below it).
    pub(crate) fn removes_dir(&self) -> bool {
        matches!(self.action, Action::Delete | Action::Expire)
            && self.prev_node.as_ref().is_some_and(|p| p.dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_names_and_json() {
        assert_eq!(
            serde_json::to_string(&Action::CompareAndSwap).unwrap(),
            r#""compareAndSwap""#
        );
        assert_eq!(Action::CompareAndDelete.to_string(), "compareAndDelete");
        let node = NodeView {
            key: "/a".into(),
            value: Some("1".into()),
            modified_index: 5,
            created_index: 5,
            ..Default::default()
        };
        let e = Event::new(Action::Set, node, None, 5);
        assert_eq!(e.http_status(), 201);
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(
            json,
            r#"{"action":"set","node":{"key":"/a","value":"1","modifiedIndex":5,"createdIndex":5},"index":5}"#
        );
        assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), e);
    }
}
