//! Conversions between wire types and domain types.
//!
//! Raft messages cross the wire as opaque bytes (encoded by the `raft` crate's own codec), so
//! the raft peer protocol needs no conversions here; the helpers below check the envelope.
//! [`kv`] converts `kv.v1` to and from kv-core's types.

pub mod kv;

use crate::raft_v1::MessageBatch;

/// Why an incoming envelope was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The batch belongs to another cluster.
    WrongCluster {
        /// The cluster this member belongs to.
        expected: u64,
        /// The cluster named in the batch.
        got: u64,
    },
    /// The batch is addressed to another member.
    WrongRecipient {
        /// This member's id.
        expected: u64,
        /// The recipient named in the batch.
        got: u64,
    },
}

impl std::fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::WrongCluster { expected, got } => {
                write!(
                    f,
                    "message batch for cluster {got:#x}, this member is in cluster {expected:#x}"
                )
            }
            Self::WrongRecipient { expected, got } => {
                write!(
                    f,
                    "message batch addressed to member {got:#x}, this is member {expected:#x}"
                )
            }
        }
    }
}

impl std::error::Error for EnvelopeError {}

impl From<EnvelopeError> for tonic::Status {
    fn from(e: EnvelopeError) -> Self {
        tonic::Status::invalid_argument(e.to_string())
    }
}

/// Checks that `batch` is meant for member `me` of cluster `cluster_id`.
///
/// # Errors
///
/// [`EnvelopeError`] naming the mismatching field.
pub fn check_envelope(batch: &MessageBatch, cluster_id: u64, me: u64) -> Result<(), EnvelopeError> {
    if batch.cluster_id != cluster_id {
        return Err(EnvelopeError::WrongCluster {
            expected: cluster_id,
            got: batch.cluster_id,
        });
    }
    if batch.to != me {
        return Err(EnvelopeError::WrongRecipient {
            expected: me,
            got: batch.to,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_checks_cluster_then_recipient() {
        let b = MessageBatch {
            cluster_id: 7,
            from: 1,
            to: 2,
            messages: vec![],
        };
        assert_eq!(check_envelope(&b, 7, 2), Ok(()));
        assert_eq!(
            check_envelope(&b, 8, 2),
            Err(EnvelopeError::WrongCluster {
                expected: 8,
                got: 7
            })
        );
        assert_eq!(
            check_envelope(&b, 7, 3),
            Err(EnvelopeError::WrongRecipient {
                expected: 3,
                got: 2
            })
        );
        let s: tonic::Status = EnvelopeError::WrongRecipient {
            expected: 3,
            got: 2,
        }
        .into();
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
    }
}
