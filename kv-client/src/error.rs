//! [`ClientError`]: why a call failed, with etcd's error when the store gave one.

use proto::convert::kv::{WireError, status_error};

/// A failed call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The endpoint is not a valid URI.
    #[error("invalid kvd endpoint {endpoint:?}: {source}")]
    Endpoint {
        /// The endpoint as given.
        endpoint: String,
        /// Why it is invalid.
        source: tonic::transport::Error,
    },
    /// No connection could be made.
    #[error("connecting to kvd at {endpoint}: {source}")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// The transport error.
        source: tonic::transport::Error,
    },
    /// The store refused the operation with an etcd error (see [`ClientError::etcd_code`]).
    #[error("{}: {error}", .error.code())]
    Etcd {
        /// etcd's error (code, cause, index).
        error: kv_core::Error,
        /// The gRPC code it travelled with.
        grpc: tonic::Code,
    },
    /// Any other failure: a limit (`RESOURCE_EXHAUSTED`), membership errors, transport
    /// errors during the call.
    #[error("kvd: {}: {}", .0.code(), .0.message())]
    Status(tonic::Status),
    /// The server answered something this client cannot read.
    #[error("kvd answered an unreadable response: {0}")]
    Wire(#[from] WireError),
}

impl ClientError {
    /// etcd's error code (100 key not found, 101 compare failed, 105 key exists, 401 event
    /// index cleared, 300 no quorum, ...) when the store gave one.
    pub fn etcd_code(&self) -> Option<u32> {
        match self {
            ClientError::Etcd { error, .. } => Some(error.code()),
            _ => None,
        }
    }

    /// The gRPC status code of a failed call (`None` when no call was made).
    pub fn grpc_code(&self) -> Option<tonic::Code> {
        match self {
            ClientError::Etcd { grpc, .. } => Some(*grpc),
            ClientError::Status(s) => Some(s.code()),
            _ => None,
        }
    }
}

impl From<tonic::Status> for ClientError {
    fn from(s: tonic::Status) -> Self {
        match status_error(&s) {
            Some(error) => ClientError::Etcd {
                error,
                grpc: s.code(),
            },
            None => ClientError::Status(s),
        }
    }
}
