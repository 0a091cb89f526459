//! `kv.v1` <-> kv-core: requests to [`kv_core::Op`]s and [`kv_core::Txn`]s (validated as
//! the v2 HTTP API validates its forms) for servers, and back ([`op_request`],
//! [`txn_request`]) for clients; events and nodes both ways, a transaction's answer as
//! kv-core's summary event ([`txn_event`]), and etcd errors to and from gRPC statuses.

use kv_core::{Action, Batch, Compare, CompareTarget, Error, Event, NodeView, Op, Txn};
use tonic::metadata::{MetadataMap, MetadataValue};

use crate::kv_v1 as w;

/// Metadata key of the etcd error code (decimal) on an error status.
pub const ERROR_CODE_KEY: &str = "kv-error-code";
/// Metadata key of the store index (decimal) on an error status.
pub const ERROR_INDEX_KEY: &str = "kv-error-index";
/// Binary metadata key of etcd's cause (usually the key) on an error status.
pub const ERROR_CAUSE_KEY: &str = "kv-error-cause-bin";
/// Metadata key of a `Watch` response: the store index (decimal) when the watch was
/// registered, what the v2 HTTP API sends as a long poll's `X-Etcd-Index`.
pub const ETCD_INDEX_KEY: &str = "kv-etcd-index";

/// A response that cannot be turned into kv-core's types (a newer server, or a broken one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// An action this client does not know.
    #[error("unknown action {0} in a kv.v1 event")]
    UnknownAction(i32),
    /// An event without its node.
    #[error("kv.v1 event without a node")]
    MissingNode,
}

/// A request error as etcd reports it (index 0: parsing errors happen before the store).
fn invalid(code: u32, cause: &str) -> Error {
    Error::from_code(code, cause, 0).unwrap_or_else(|| Error::InvalidField {
        cause: cause.to_owned(),
        index: 0,
    })
}

/// The TTL of a request: `0` means none. A refresh must keep the value and give a TTL
/// (etcd's 211 and 212).
fn ttl_of(ttl: u64, refresh: bool, value: &str) -> Result<Option<u64>, Error> {
    let ttl = (ttl > 0).then_some(ttl);
    if refresh {
        if !value.is_empty() {
            return Err(invalid(211, "A value was provided on a refresh"));
        }
        if ttl.is_none() {
            return Err(invalid(212, "No TTL value set"));
        }
    }
    Ok(ttl)
}

/// A `prevValue` condition: absent is no condition, empty is etcd's 201.
fn prev_value_of(v: Option<String>) -> Result<Option<String>, Error> {
    match v {
        Some(v) if v.is_empty() => Err(invalid(201, "\"prevValue\" cannot be empty")),
        v => Ok(v),
    }
}

/// The store operation of a put, chosen as the HTTP API chooses between POST, create,
/// update and set.
///
/// # Errors
/// etcd's 211/212 for a refresh with a value or without a TTL.
pub fn put_op(p: w::PutRequest) -> Result<Op, Error> {
    let ttl = ttl_of(p.ttl, p.refresh, &p.value)?;
    let w::PutRequest {
        key,
        value,
        dir,
        refresh,
        prev_exist,
        in_order,
        ..
    } = p;
    Ok(match (in_order, prev_exist) {
        (true, _) => Op::Create {
            key,
            value,
            dir,
            ttl,
            unique: true,
        },
        (false, Some(true)) => Op::Update {
            key,
            value,
            ttl,
            refresh,
        },
        (false, Some(false)) => Op::Create {
            key,
            value,
            dir,
            ttl,
            unique: false,
        },
        (false, None) => Op::Set {
            key,
            value,
            dir,
            ttl,
            refresh,
        },
    })
}

/// The store operation of a delete: compare-and-delete when a condition is given.
///
/// # Errors
/// etcd's 201 for an empty `prev_value`.
pub fn delete_op(d: w::DeleteRequest) -> Result<Op, Error> {
    let prev_value = prev_value_of(d.prev_value)?;
    let prev_index = d.prev_index.filter(|i| *i > 0);
    Ok(if prev_value.is_some() || prev_index.is_some() {
        Op::CompareAndDelete {
            key: d.key,
            prev_value,
            prev_index,
        }
    } else {
        Op::Delete {
            key: d.key,
            dir: d.dir,
            recursive: d.recursive,
        }
    })
}

/// The store operation of a compare-and-swap.
///
/// # Errors
/// etcd's 201 for an empty `prev_value`, 207 when there is no condition at all, 211/212
/// for a bad refresh.
pub fn cas_op(c: w::CompareAndSwapRequest) -> Result<Op, Error> {
    let prev_value = prev_value_of(c.prev_value)?;
    let prev_index = c.prev_index.filter(|i| *i > 0);
    if prev_value.is_none() && prev_index.is_none() {
        return Err(invalid(
            207,
            "compare-and-swap needs prev_value or prev_index",
        ));
    }
    let ttl = ttl_of(c.ttl, c.refresh, &c.value)?;
    Ok(Op::CompareAndSwap {
        key: c.key,
        value: c.value,
        prev_value,
        prev_index,
        ttl,
        refresh: c.refresh,
    })
}

/// The store operation of one transaction operation.
///
/// # Errors
/// As for the single-key requests; 209 for an operation of no kind.
pub fn txn_op(op: w::Op) -> Result<Op, Error> {
    match op.op {
        Some(w::op::Op::Put(p)) => put_op(p),
        Some(w::op::Op::Delete(d)) => delete_op(d),
        Some(w::op::Op::CompareAndSwap(c)) => cas_op(c),
        None => Err(invalid(209, "transaction operation of no kind")),
    }
}

/// A transaction condition.
///
/// # Errors
/// 209 for a comparison without a target.
pub fn compare(c: w::Compare) -> Result<Compare, Error> {
    let target = match c.target {
        Some(w::compare::Target::Value(v)) => CompareTarget::Value(v),
        Some(w::compare::Target::ModifiedIndex(i)) => CompareTarget::ModifiedIndex(i),
        Some(w::compare::Target::CreatedIndex(i)) => CompareTarget::CreatedIndex(i),
        Some(w::compare::Target::Exists(e)) => CompareTarget::Exists(e),
        None => {
            return Err(invalid(
                209,
                &format!("comparison on {} has no target", c.key),
            ));
        }
    };
    Ok(Compare { key: c.key, target })
}

/// The kv-core transaction of a `Txn` request.
///
/// # Errors
/// The first invalid comparison or operation.
pub fn txn(t: w::TxnRequest) -> Result<Txn, Error> {
    Ok(Txn {
        compare: t
            .compare
            .into_iter()
            .map(compare)
            .collect::<Result<_, _>>()?,
        success: t
            .success
            .into_iter()
            .map(txn_op)
            .collect::<Result<_, _>>()?,
        failure: t
            .failure
            .into_iter()
            .map(txn_op)
            .collect::<Result<_, _>>()?,
    })
}

/// A batch of puts as the transaction that applies it: no conditions, every put on success.
///
/// # Errors
/// The first invalid put.
pub fn batch_put(b: w::BatchPutRequest) -> Result<Txn, Error> {
    Ok(Txn {
        compare: Vec::new(),
        success: b.puts.into_iter().map(put_op).collect::<Result<_, _>>()?,
        failure: Vec::new(),
    })
}

/// A kv-core operation that no `kv.v1` request carries. `what` says which, in words that
/// finish "does not support ...".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("kv.v1 has no request for {what}")]
pub struct Unrepresentable {
    /// The operation or option.
    pub what: &'static str,
}

/// A TTL as requests carry it (0 is none). kv-core's `Some(0)`, expiry at the next sweep,
/// has no request form: sending 0 would make the node permanent instead.
fn wire_ttl(ttl: Option<u64>) -> Result<u64, Unrepresentable> {
    match ttl {
        None => Ok(0),
        Some(0) => Err(Unrepresentable {
            what: "a TTL of 0 (expiry at the next sweep)",
        }),
        Some(t) => Ok(t),
    }
}

/// The `kv.v1` request of a single-key operation, the inverse of [`txn_op`] (which
/// [`put_op`], [`delete_op`] and [`cas_op`] serve): what `txn_op` makes of the result equals
/// `op`. Values kv-core ignores (with `refresh`) are not sent, since the server refuses
/// them (211); a compare-and-swap without a condition is sent as it is and refused (207).
///
/// # Errors
/// [`Unrepresentable`] for [`Op::Expire`] (the store runs its own sweeps), for an
/// [`Op::Txn`] (see [`txn_request`]) and for a TTL of 0.
pub fn op_request(op: Op) -> Result<w::op::Op, Unrepresentable> {
    let kept = |value: String, refresh: bool| if refresh { String::new() } else { value };
    Ok(match op {
        Op::Set {
            key,
            value,
            dir,
            ttl,
            refresh,
        } => w::op::Op::Put(w::PutRequest {
            key,
            value: kept(value, refresh),
            dir,
            ttl: wire_ttl(ttl)?,
            refresh,
            prev_exist: None,
            in_order: false,
        }),
        Op::Create {
            key,
            value,
            dir,
            ttl,
            unique,
        } => w::op::Op::Put(w::PutRequest {
            key,
            value,
            dir,
            ttl: wire_ttl(ttl)?,
            refresh: false,
            prev_exist: (!unique).then_some(false),
            in_order: unique,
        }),
        Op::Update {
            key,
            value,
            ttl,
            refresh,
        } => w::op::Op::Put(w::PutRequest {
            key,
            value: kept(value, refresh),
            dir: false,
            ttl: wire_ttl(ttl)?,
            refresh,
            prev_exist: Some(true),
            in_order: false,
        }),
        Op::CompareAndSwap {
            key,
            value,
            prev_value,
            prev_index,
            ttl,
            refresh,
        } => w::op::Op::CompareAndSwap(w::CompareAndSwapRequest {
            key,
            value: kept(value, refresh),
            prev_value,
            prev_index,
            ttl: wire_ttl(ttl)?,
            refresh,
        }),
        Op::Delete {
            key,
            dir,
            recursive,
        } => w::op::Op::Delete(w::DeleteRequest {
            key,
            dir,
            recursive,
            prev_value: None,
            prev_index: None,
        }),
        Op::CompareAndDelete {
            key,
            prev_value,
            prev_index,
        } => w::op::Op::Delete(w::DeleteRequest {
            key,
            dir: false,
            recursive: false,
            prev_value,
            prev_index,
        }),
        Op::Expire => {
            return Err(Unrepresentable {
                what: "expiry sweeps (the store runs its own)",
            });
        }
        Op::Txn(_) => {
            return Err(Unrepresentable {
                what: "a transaction as a single operation",
            });
        }
        _ => {
            return Err(Unrepresentable {
                what: "an operation newer than kv.v1",
            });
        }
    })
}

/// The `kv.v1` condition of a transaction's comparison, the inverse of [`compare`].
///
/// # Errors
/// [`Unrepresentable`] for a kind of comparison newer than `kv.v1`.
pub fn compare_request(c: Compare) -> Result<w::Compare, Unrepresentable> {
    let target = match c.target {
        CompareTarget::Value(v) => w::compare::Target::Value(v),
        CompareTarget::ModifiedIndex(i) => w::compare::Target::ModifiedIndex(i),
        CompareTarget::CreatedIndex(i) => w::compare::Target::CreatedIndex(i),
        CompareTarget::Exists(e) => w::compare::Target::Exists(e),
        _ => {
            return Err(Unrepresentable {
                what: "a comparison newer than kv.v1",
            });
        }
    };
    Ok(w::Compare {
        key: c.key,
        target: Some(target),
    })
}

/// The `kv.v1` request of a transaction, the inverse of [`txn`].
///
/// # Errors
/// [`Unrepresentable`] for an operation of either branch that [`op_request`] refuses
/// (which the store would refuse too: a transaction holds single-key operations only).
pub fn txn_request(t: Txn) -> Result<w::TxnRequest, Unrepresentable> {
    let ops = |ops: Vec<Op>| {
        ops.into_iter()
            .map(|op| match op {
                Op::Txn(_) => Err(Unrepresentable {
                    what: "a transaction inside a transaction",
                }),
                op => op_request(op).map(|op| w::Op { op: Some(op) }),
            })
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(w::TxnRequest {
        compare: t
            .compare
            .into_iter()
            .map(compare_request)
            .collect::<Result<_, _>>()?,
        success: ops(t.success)?,
        failure: ops(t.failure)?,
    })
}

/// The summary event kv-core's store returns for a transaction (what a backend's `apply`
/// answers), from the parts of a `TxnResponse`: whether the comparisons held, the events of
/// the branch that ran, and the store index after it.
pub fn txn_event(succeeded: bool, events: Vec<Event>, index: u64) -> Event {
    Event {
        action: Action::Txn,
        node: NodeView {
            key: "/".into(),
            dir: true,
            ..Default::default()
        },
        prev_node: None,
        index,
        batch: Some(Batch { succeeded, events }),
    }
}

impl From<Action> for w::Action {
    fn from(a: Action) -> Self {
        match a {
            Action::Get => w::Action::Get,
            Action::Set => w::Action::Set,
            Action::Create => w::Action::Create,
            Action::Update => w::Action::Update,
            Action::CompareAndSwap => w::Action::CompareAndSwap,
            Action::Delete => w::Action::Delete,
            Action::CompareAndDelete => w::Action::CompareAndDelete,
            Action::Expire => w::Action::Expire,
            // Summary actions (transactions) never travel as events.
            _ => w::Action::Unspecified,
        }
    }
}

impl TryFrom<w::Action> for Action {
    type Error = WireError;

    fn try_from(a: w::Action) -> Result<Self, WireError> {
        Ok(match a {
            w::Action::Get => Action::Get,
            w::Action::Set => Action::Set,
            w::Action::Create => Action::Create,
            w::Action::Update => Action::Update,
            w::Action::CompareAndSwap => Action::CompareAndSwap,
            w::Action::Delete => Action::Delete,
            w::Action::CompareAndDelete => Action::CompareAndDelete,
            w::Action::Expire => Action::Expire,
            w::Action::Unspecified => return Err(WireError::UnknownAction(0)),
        })
    }
}

impl From<NodeView> for w::Node {
    fn from(n: NodeView) -> Self {
        w::Node {
            key: n.key,
            value: n.value,
            dir: n.dir,
            expiration_ms: n.expiration.unwrap_or(0),
            ttl: n.ttl.unwrap_or(0),
            nodes: n.nodes.into_iter().map(Into::into).collect(),
            created_index: n.created_index,
            modified_index: n.modified_index,
        }
    }
}

impl From<w::Node> for NodeView {
    fn from(n: w::Node) -> Self {
        NodeView {
            key: n.key,
            value: n.value,
            dir: n.dir,
            expiration: (n.expiration_ms > 0).then_some(n.expiration_ms),
            ttl: (n.ttl != 0).then_some(n.ttl),
            nodes: n.nodes.into_iter().map(Into::into).collect(),
            created_index: n.created_index,
            modified_index: n.modified_index,
        }
    }
}

impl From<Event> for w::Event {
    /// The event itself; a summary's `batch` is not carried (a `TxnResponse` lists it).
    fn from(e: Event) -> Self {
        w::Event {
            action: w::Action::from(e.action) as i32,
            node: Some(e.node.into()),
            prev_node: e.prev_node.map(Into::into),
            index: e.index,
        }
    }
}

impl TryFrom<w::Event> for Event {
    type Error = WireError;

    fn try_from(e: w::Event) -> Result<Self, WireError> {
        let action = w::Action::try_from(e.action)
            .map_err(|_| WireError::UnknownAction(e.action))
            .and_then(|a| Action::try_from(a).map_err(|_| WireError::UnknownAction(e.action)))?;
        Ok(Event {
            action,
            node: e.node.ok_or(WireError::MissingNode)?.into(),
            prev_node: e.prev_node.map(Into::into),
            index: e.index,
            batch: None,
        })
    }
}

/// The gRPC code an etcd error code travels with (see the header of `kv.proto`).
pub fn grpc_code(etcd_code: u32) -> tonic::Code {
    use tonic::Code;
    match etcd_code {
        100 => Code::NotFound,
        101..=105 | 107 | 108 => Code::FailedPrecondition,
        109 => Code::AlreadyExists,
        110 => Code::Unauthenticated,
        300 | 301 => Code::Unavailable,
        400 => Code::Aborted,
        401 => Code::OutOfRange,
        106 | 200..=299 => Code::InvalidArgument,
        _ => Code::Unknown,
    }
}

/// The status of an etcd error given by its parts: etcd's message and cause in the text,
/// and code, index and cause in the metadata.
pub fn etcd_status(code: u32, cause: &str, index: u64) -> tonic::Status {
    let message = Error::from_code(code, cause, index)
        .map(|e| e.message())
        .unwrap_or("Unknown error");
    let mut md = MetadataMap::new();
    md.insert(ERROR_CODE_KEY, MetadataValue::from(code));
    md.insert(ERROR_INDEX_KEY, MetadataValue::from(index));
    if !cause.is_empty() {
        md.insert_bin(ERROR_CAUSE_KEY, MetadataValue::from_bytes(cause.as_bytes()));
    }
    let text = if cause.is_empty() {
        format!("{code}: {message} [{index}]")
    } else {
        format!("{code}: {message} ({cause}) [{index}]")
    };
    tonic::Status::with_metadata(grpc_code(code), text, md)
}

/// The status of a kv-core error (see [`etcd_status`]).
pub fn error_status(e: &Error) -> tonic::Status {
    etcd_status(e.code(), e.cause(), e.index())
}

/// The `RESOURCE_EXHAUSTED` status of one of a server's limits (request or key size,
/// watches): its message is `cause` (the cause of the etcd error 300 that the v2 HTTP API
/// answers for the same limit), then `; ` and `detail`, so a client can print what an HTTP
/// client prints ([`limit_cause`] reads it back).
pub fn limit_status(cause: &str, detail: &str) -> tonic::Status {
    tonic::Status::resource_exhausted(format!("{cause}; {detail}"))
}

/// The etcd cause of a [`limit_status`]; `None` for any other status (other codes, and
/// exhaustion that is not one of the server's limits, such as HTTP/2's "too many pings").
pub fn limit_cause(s: &tonic::Status) -> Option<&str> {
    if s.code() != tonic::Code::ResourceExhausted || !s.message().starts_with("etcdserver: ") {
        return None;
    }
    s.message().split("; ").next()
}

/// The etcd error a status carries in its metadata, if any (its code, cause and index).
pub fn status_error(s: &tonic::Status) -> Option<Error> {
    let md = s.metadata();
    let code: u32 = md.get(ERROR_CODE_KEY)?.to_str().ok()?.parse().ok()?;
    let index = md
        .get(ERROR_INDEX_KEY)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let cause = md
        .get_bin(ERROR_CAUSE_KEY)
        .and_then(|v| v.to_bytes().ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    Error::from_code(code, cause, index)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str) -> w::PutRequest {
        w::PutRequest {
            key: key.into(),
            value: "v".into(),
            ..Default::default()
        }
    }

    #[test]
    fn puts_map_like_the_http_api() {
        assert!(matches!(put_op(put("/a")).unwrap(), Op::Set { .. }));
        let mut p = put("/a");
        p.prev_exist = Some(true);
        assert!(matches!(put_op(p).unwrap(), Op::Update { .. }));
        let mut p = put("/a");
        p.prev_exist = Some(false);
        assert!(matches!(
            put_op(p).unwrap(),
            Op::Create { unique: false, .. }
        ));
        let mut p = put("/q");
        p.in_order = true;
        p.prev_exist = Some(true);
        assert!(matches!(
            put_op(p).unwrap(),
            Op::Create { unique: true, .. }
        ));
        let mut p = put("/a");
        p.refresh = true;
        p.ttl = 5;
        assert_eq!(put_op(p).unwrap_err().code(), 211);
        let mut p = put("/a");
        p.value.clear();
        p.refresh = true;
        assert_eq!(put_op(p).unwrap_err().code(), 212);
    }

    #[test]
    fn conditions_are_validated() {
        let d = w::DeleteRequest {
            key: "/a".into(),
            prev_index: Some(3),
            ..Default::default()
        };
        assert!(matches!(delete_op(d).unwrap(), Op::CompareAndDelete { .. }));
        let d = w::DeleteRequest {
            key: "/a".into(),
            prev_index: Some(0),
            ..Default::default()
        };
        assert!(matches!(delete_op(d).unwrap(), Op::Delete { .. }));
        let c = w::CompareAndSwapRequest {
            key: "/a".into(),
            ..Default::default()
        };
        assert_eq!(cas_op(c).unwrap_err().code(), 207);
        let c = w::CompareAndSwapRequest {
            key: "/a".into(),
            prev_value: Some(String::new()),
            ..Default::default()
        };
        assert_eq!(cas_op(c).unwrap_err().code(), 201);
        let t = w::TxnRequest {
            compare: vec![w::Compare {
                key: "/a".into(),
                target: None,
            }],
            ..Default::default()
        };
        assert_eq!(txn(t).unwrap_err().code(), 209);
        let t = w::TxnRequest {
            success: vec![w::Op { op: None }],
            ..Default::default()
        };
        assert_eq!(txn(t).unwrap_err().code(), 209);
    }

    /// Every kind of operation, with its options, as kv-core spells them (values kv-core
    /// ignores left empty: those are not sent).
    fn every_op() -> Vec<Op> {
        vec![
            Op::Set {
                key: "/a".into(),
                value: "v".into(),
                dir: false,
                ttl: None,
                refresh: false,
            },
            Op::Set {
                key: "/d".into(),
                value: String::new(),
                dir: true,
                ttl: Some(30),
                refresh: false,
            },
            Op::Set {
                key: "/a".into(),
                value: String::new(),
                dir: false,
                ttl: Some(5),
                refresh: true,
            },
            Op::Create {
                key: "/b".into(),
                value: "v".into(),
                dir: false,
                ttl: Some(2),
                unique: false,
            },
            Op::Create {
                key: "/e".into(),
                value: String::new(),
                dir: true,
                ttl: None,
                unique: false,
            },
            Op::Create {
                key: "/q".into(),
                value: "job".into(),
                dir: false,
                ttl: None,
                unique: true,
            },
            Op::Update {
                key: "/a".into(),
                value: "w".into(),
                ttl: None,
                refresh: false,
            },
            Op::Update {
                key: "/a".into(),
                value: String::new(),
                ttl: Some(9),
                refresh: true,
            },
            Op::CompareAndSwap {
                key: "/a".into(),
                value: "x".into(),
                prev_value: Some("w".into()),
                prev_index: None,
                ttl: None,
                refresh: false,
            },
            Op::CompareAndSwap {
                key: "/a".into(),
                value: "y".into(),
                prev_value: Some("x".into()),
                prev_index: Some(7),
                ttl: Some(4),
                refresh: false,
            },
            Op::CompareAndSwap {
                key: "/a".into(),
                value: String::new(),
                prev_value: None,
                prev_index: Some(8),
                ttl: Some(4),
                refresh: true,
            },
            Op::Delete {
                key: "/a".into(),
                dir: false,
                recursive: false,
            },
            Op::Delete {
                key: "/e".into(),
                dir: true,
                recursive: false,
            },
            Op::Delete {
                key: "/d".into(),
                dir: true,
                recursive: true,
            },
            Op::CompareAndDelete {
                key: "/b".into(),
                prev_value: Some("v".into()),
                prev_index: None,
            },
            Op::CompareAndDelete {
                key: "/b".into(),
                prev_value: None,
                prev_index: Some(3),
            },
            Op::CompareAndDelete {
                key: "/b".into(),
                prev_value: Some("v".into()),
                prev_index: Some(3),
            },
        ]
    }

    #[test]
    fn requests_round_trip_through_the_servers_conversions() {
        for op in every_op() {
            let wire = op_request(op.clone()).unwrap();
            assert_eq!(txn_op(w::Op { op: Some(wire) }).unwrap(), op);
        }
        let t = Txn {
            compare: vec![
                Compare {
                    key: "/a".into(),
                    target: CompareTarget::Value("v".into()),
                },
                Compare {
                    key: "/a".into(),
                    target: CompareTarget::ModifiedIndex(4),
                },
                Compare {
                    key: "/l".into(),
                    target: CompareTarget::CreatedIndex(2),
                },
                Compare {
                    key: "/n".into(),
                    target: CompareTarget::Exists(false),
                },
            ],
            success: every_op(),
            failure: every_op().into_iter().rev().collect(),
        };
        assert_eq!(txn(txn_request(t.clone()).unwrap()).unwrap(), t);
        assert_eq!(
            txn(txn_request(Txn::default()).unwrap()).unwrap(),
            Txn::default()
        );
    }

    #[test]
    fn requests_without_a_wire_form_are_refused() {
        assert!(op_request(Op::Expire).is_err());
        assert!(op_request(Op::Txn(Txn::default())).is_err());
        let zero = Op::Set {
            key: "/a".into(),
            value: "v".into(),
            dir: false,
            ttl: Some(0),
            refresh: false,
        };
        let e = op_request(zero.clone()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "kv.v1 has no request for a TTL of 0 (expiry at the next sweep)"
        );
        for inner in [Op::Expire, Op::Txn(Txn::default()), zero] {
            let t = Txn {
                failure: vec![inner],
                ..Default::default()
            };
            assert!(txn_request(t).is_err());
        }
        // A value kv-core ignores on a refresh is not sent (the server would refuse it).
        let refresh = Op::Update {
            key: "/a".into(),
            value: "ignored".into(),
            ttl: Some(3),
            refresh: true,
        };
        let Ok(w::op::Op::Put(p)) = op_request(refresh) else {
            panic!("an update is a put");
        };
        assert!(p.value.is_empty() && p.refresh && p.prev_exist == Some(true));
        assert!(put_op(p).is_ok());
    }

    #[test]
    fn a_transactions_answer_is_kv_cores_summary() {
        use kv_core::{Command, Store};
        let mut store = Store::new();
        for (i, key) in ["/a", "/b"].into_iter().enumerate() {
            store
                .apply(&Command::new(
                    1,
                    Op::Set {
                        key: key.into(),
                        value: i.to_string(),
                        dir: false,
                        ttl: None,
                        refresh: false,
                    },
                ))
                .unwrap();
        }
        let txn = |value: &str| {
            Op::Txn(Txn {
                compare: vec![Compare {
                    key: "/a".into(),
                    target: CompareTarget::Value(value.into()),
                }],
                success: vec![Op::Delete {
                    key: "/a".into(),
                    dir: false,
                    recursive: false,
                }],
                failure: vec![Op::CompareAndSwap {
                    key: "/b".into(),
                    value: "2".into(),
                    prev_value: Some("1".into()),
                    prev_index: None,
                    ttl: None,
                    refresh: false,
                }],
            })
        };
        // A failed comparison, a successful one, and one whose branch is empty.
        let mut summaries = vec![
            store.apply(&Command::new(2, txn("nope"))).unwrap(),
            store.apply(&Command::new(3, txn("0"))).unwrap(),
        ];
        summaries.push(
            store
                .apply(&Command::new(4, Op::Txn(Txn::default())))
                .unwrap(),
        );
        for summary in summaries {
            // What the server sends (kv-server's `Txn`) and what a client reads back.
            let batch = summary.batch.clone().unwrap();
            let events = batch
                .events
                .into_iter()
                .map(|e| Event::try_from(w::Event::from(e)).unwrap())
                .collect();
            assert_eq!(txn_event(batch.succeeded, events, summary.index), summary);
        }
    }

    #[test]
    fn events_round_trip() {
        let e = Event {
            action: Action::CompareAndSwap,
            node: NodeView {
                key: "/d".into(),
                dir: true,
                expiration: Some(1_700_000_000_000),
                ttl: Some(3),
                nodes: vec![NodeView {
                    key: "/d/a".into(),
                    value: Some(String::new()),
                    created_index: 2,
                    modified_index: 4,
                    ..Default::default()
                }],
                created_index: 1,
                modified_index: 4,
                ..Default::default()
            },
            prev_node: Some(NodeView {
                key: "/d".into(),
                dir: true,
                ..Default::default()
            }),
            index: 4,
            batch: None,
        };
        let wire = w::Event::from(e.clone());
        assert_eq!(Event::try_from(wire).unwrap(), e);
        let bad = w::Event {
            action: 99,
            ..Default::default()
        };
        assert_eq!(Event::try_from(bad), Err(WireError::UnknownAction(99)));
    }

    #[test]
    fn errors_travel_in_metadata() {
        let s = error_status(&Error::KeyNotFound {
            cause: "/ключ".into(),
            index: 7,
        });
        assert_eq!(s.code(), tonic::Code::NotFound);
        assert_eq!(s.message(), "100: Key not found (/ключ) [7]");
        let back = status_error(&s).unwrap();
        assert_eq!((back.code(), back.cause(), back.index()), (100, "/ключ", 7));
        assert_eq!(grpc_code(401), tonic::Code::OutOfRange);
        assert_eq!(grpc_code(105), tonic::Code::FailedPrecondition);
        assert!(status_error(&tonic::Status::internal("x")).is_none());
    }

    #[test]
    fn limit_statuses_name_the_http_apis_cause_first() {
        let cause = "etcdserver: request is too large";
        let too_large = limit_status(cause, "the limit is 4096 bytes");
        assert_eq!(too_large.code(), tonic::Code::ResourceExhausted);
        assert_eq!(limit_cause(&too_large), Some(cause));
        // Other statuses, and exhaustion that is not one of the limits, are not limits.
        assert_eq!(limit_cause(&tonic::Status::unavailable(cause)), None);
        assert_eq!(
            limit_cause(&tonic::Status::resource_exhausted("too many pings")),
            None
        );
    }
}
