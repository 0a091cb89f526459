//! etcd v2 errors: stable codes, exact messages, causes and the store index.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Result type of store operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An etcd v2 error, with etcd's code, message and cause.
///
/// Every variant carries `cause` (etcd's free-form detail, usually the key, empty when
/// absent) and `index` (the store index when the error happened; `0` for request-parsing
/// errors, as etcd reports them). `Display` gives the message followed by the cause.
///
/// The serde form is etcd's JSON error body:
/// `{"errorCode":100,"message":"Key not found","cause":"/foo","index":6}` (the cause is
/// omitted when empty).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// 100: the key, or one of its ancestors, does not exist.
    #[error("Key not found ({cause}) [{index}]")]
    KeyNotFound {
        /// The missing path (the first missing component).
        cause: String,
        /// Store index.
        index: u64,
    },
    /// 101: a `prevValue`/`prevIndex` condition did not hold.
    #[error("Compare failed ({cause}) [{index}]")]
    CompareFailed {
        /// `[wanted != actual]`, one bracket per failed condition.
        cause: String,
        /// Store index.
        index: u64,
    },
    /// 102: the operation needs a file but found a directory.
    #[error("Not a file ({cause}) [{index}]")]
    NotFile {
        /// The directory's key.
        cause: String,
        /// Store index.
        index: u64,
    },
    /// 103: unused by the keys API, kept for the code table.
    #[error("Reached the max number of peers in the cluster ({cause}) [{index}]")]
    PeersLimit {
        /// Detail.
        cause: String,
        /// Store index.
        index: u64,
    },
    /// 104: a file sits where a directory is needed in the key's path.
    #[error("Not a directory ({cause}) [{index}]")]
    NotDir {
        /// The file's key.
        cause: String,
        /// Store index.
        index: u64,
    },
    /// 105: the key exists (create with `prevExist=false`).
    #[error("Key already exists ({cause}) [{index}]")]
    NodeExists {
        /// The key.
        cause: String,
        /// Store index.
        index: u64,
    },
    /// 106: the key prefix is reserved.
    #[error("The prefix of given key is a keyword in etcd ({cause}) [{index}]")]
    KeyIsPreserved {
        /// The key.
        cause: String,
        /// Store index.
        index: u64,
    },
    /// 107: the root directory cannot be written or deleted.
    #[error("Root is read only ({cause}) [{index}]")]
    RootReadOnly {
        /// Always `/`.
        cause: String,
        /// Store index.
        index: u64,
    },
    /// 108: deleting a non-empty directory without `recursive`.
    #[error("Directory not empty ({cause}) [{index}]")]
    DirNotEmpty {
        /// The directory's key.
        cause: String,
        /// Store index.
        index: u64,
    },
    /// 109: unused by the keys API.
    #[error("Peer address has existed ({cause}) [{index}]")]
    ExistingPeerAddr {
        /// Detail.
        cause: String,
        /// Store index.
        index: u64,
    },
    /// 110: authentication required.
    #[error("The request requires user authentication ({cause}) [{index}]")]
    Unauthorized {
        /// Detail, e.g. `Insufficient credentials`.
        cause: String,
        /// Store index (etcd reports 0).
        index: u64,
    },
    /// 200: value required.
    #[error("Value is Required in POST form ({cause}) [{index}]")]
    ValueRequired {
        /// Detail.
        cause: String,
        /// Store index (0 for request errors).
        index: u64,
    },
    /// 201: `prevValue` present but empty.
    #[error("PrevValue is Required in POST form ({cause}) [{index}]")]
    PrevValueRequired {
        /// Detail.
        cause: String,
        /// Store index (0 for request errors).
        index: u64,
    },
    /// 202: the `ttl` is not a non-negative integer.
    #[error("The given TTL in POST form is not a number ({cause}) [{index}]")]
    TtlNaN {
        /// Detail, e.g. `invalid value for "ttl"`.
        cause: String,
        /// Store index (0 for request errors).
        index: u64,
    },
    /// 203: `prevIndex`/`waitIndex` is not a number.
    #[error("The given index in POST form is not a number ({cause}) [{index}]")]
    IndexNaN {
        /// Detail.
        cause: String,
        /// Store index (0 for request errors).
        index: u64,
    },
    /// 204: value or TTL required.
    #[error("Value or TTL is required in POST form ({cause}) [{index}]")]
    ValueOrTtlRequired {
        /// Detail.
        cause: String,
        /// Store index.
        index: u64,
    },
    /// 205: timeout is not a number.
    #[error("The given timeout in POST form is not a number ({cause}) [{index}]")]
    TimeoutNaN {
        /// Detail.
        cause: String,
        /// Store index.
        index: u64,
    },
    /// 206: name required.
    #[error("Name is required in POST form ({cause}) [{index}]")]
    NameRequired {
        /// Detail.
        cause: String,
        /// Store index.
        index: u64,
    },
    /// 207: index or value required.
    #[error("Index or value is required ({cause}) [{index}]")]
    IndexOrValueRequired {
        /// Detail.
        cause: String,
        /// Store index.
        index: u64,
    },
    /// 208: index and value are mutually exclusive.
    #[error("Index and value cannot both be specified ({cause}) [{index}]")]
    IndexValueMutex {
        /// Detail.
        cause: String,
        /// Store index.
        index: u64,
    },
    /// 209: a malformed or misplaced parameter (bad bool, `wait` on a non-GET, a
    /// malformed transaction).
    #[error("Invalid field ({cause}) [{index}]")]
    InvalidField {
        /// Which field and why.
        cause: String,
        /// Store index (0 for request errors).
        index: u64,
    },
    /// 210: the form could not be parsed.
    #[error("Invalid POST form ({cause}) [{index}]")]
    InvalidForm {
        /// Detail.
        cause: String,
        /// Store index (0 for request errors).
        index: u64,
    },
    /// 211: `refresh` with a non-empty value.
    #[error("Value provided on refresh ({cause}) [{index}]")]
    RefreshValue {
        /// Detail.
        cause: String,
        /// Store index (0 for request errors).
        index: u64,
    },
    /// 212: `refresh` without a TTL.
    #[error("A TTL must be provided on refresh ({cause}) [{index}]")]
    RefreshTtlRequired {
        /// Detail.
        cause: String,
        /// Store index (0 for request errors).
        index: u64,
    },
    /// 300: any failure outside the store (timeout, no quorum).
    #[error("Raft Internal Error ({cause}) [{index}]")]
    RaftInternal {
        /// The underlying error's text.
        cause: String,
        /// etcd reports 0.
        index: u64,
    },
    /// 301: a leader election is in progress.
    #[error("During Leader Election ({cause}) [{index}]")]
    LeaderElect {
        /// Detail.
        cause: String,
        /// Store index.
        index: u64,
    },
    /// 400: the watcher was dropped because the store was restored.
    #[error("watcher is cleared due to etcd recovery ({cause}) [{index}]")]
    WatcherCleared {
        /// Detail.
        cause: String,
        /// Store index.
        index: u64,
    },
    /// 401: `waitIndex` is older than the oldest event kept in the history.
    #[error("The event in requested index is outdated and cleared ({cause}) [{index}]")]
    EventIndexCleared {
        /// `the requested history has been cleared [<oldest>/<waitIndex>]`.
        cause: String,
        /// Current store index.
        index: u64,
    },
    /// 402: unused.
    #[error("Standby Internal Error ({cause}) [{index}]")]
    StandbyInternal {
        /// Detail.
        cause: String,
        /// Store index.
        index: u64,
    },
    /// 403: unused.
    #[error("Invalid active size ({cause}) [{index}]")]
    InvalidActiveSize {
        /// Detail.
        cause: String,
        /// Store index.
        index: u64,
    },
    /// 404: unused.
    #[error("Standby remove delay ({cause}) [{index}]")]
    InvalidRemoveDelay {
        /// Detail.
        cause: String,
        /// Store index.
        index: u64,
    },
    /// 500: client-side failure.
    #[error("Client Internal Error ({cause}) [{index}]")]
    ClientInternal {
        /// Detail.
        cause: String,
        /// Store index.
        index: u64,
    },
}

macro_rules! codes {
    ($($variant:ident = $code:literal, $msg:literal, $http:literal;)*) => {
        impl Error {
            /// etcd's stable numeric error code (`errorCode` in the JSON body).
            pub fn code(&self) -> u32 {
                match self { $(Error::$variant { .. } => $code,)* }
            }

            /// etcd's exact message for this code.
            pub fn message(&self) -> &'static str {
                match self { $(Error::$variant { .. } => $msg,)* }
            }

            /// The HTTP status etcd answers this error with.
            pub fn http_status(&self) -> u16 {
                match self { $(Error::$variant { .. } => $http,)* }
            }

            /// The cause (empty when there is none).
            pub fn cause(&self) -> &str {
                match self { $(Error::$variant { cause, .. } => cause,)* }
            }

            /// The store index reported with the error.
            pub fn index(&self) -> u64 {
                match self { $(Error::$variant { index, .. } => *index,)* }
            }

            /// Builds the error for `code` with a cause and index; `None` for an unknown code.
            pub fn from_code(code: u32, cause: impl Into<String>, index: u64) -> Option<Error> {
                let cause = cause.into();
                match code {
                    $($code => Some(Error::$variant { cause, index }),)*
                    _ => None,
                }
            }

            /// Replaces the reported index (etcd stamps store errors with the current index).
            pub fn with_index(mut self, new_index: u64) -> Error {
                match &mut self { $(Error::$variant { index, .. } => *index = new_index,)* }
                self
            }
        }
    };
}

codes! {
    KeyNotFound = 100, "Key not found", 404;
    CompareFailed = 101, "Compare failed", 412;
    NotFile = 102, "Not a file", 403;
    PeersLimit = 103, "Reached the max number of peers in the cluster", 400;
    NotDir = 104, "Not a directory", 400;
    NodeExists = 105, "Key already exists", 412;
    KeyIsPreserved = 106, "The prefix of given key is a keyword in etcd", 400;
    RootReadOnly = 107, "Root is read only", 400;
    DirNotEmpty = 108, "Directory not empty", 403;
    ExistingPeerAddr = 109, "Peer address has existed", 400;
    Unauthorized = 110, "The request requires user authentication", 401;
    ValueRequired = 200, "Value is Required in POST form", 400;
    PrevValueRequired = 201, "PrevValue is Required in POST form", 400;
    TtlNaN = 202, "The given TTL in POST form is not a number", 400;
    IndexNaN = 203, "The given index in POST form is not a number", 400;
    ValueOrTtlRequired = 204, "Value or TTL is required in POST form", 400;
    TimeoutNaN = 205, "The given timeout in POST form is not a number", 400;
    NameRequired = 206, "Name is required in POST form", 400;
    IndexOrValueRequired = 207, "Index or value is required", 400;
    IndexValueMutex = 208, "Index and value cannot both be specified", 400;
    InvalidField = 209, "Invalid field", 400;
    InvalidForm = 210, "Invalid POST form", 400;
    RefreshValue = 211, "Value provided on refresh", 400;
    RefreshTtlRequired = 212, "A TTL must be provided on refresh", 400;
    RaftInternal = 300, "Raft Internal Error", 500;
    LeaderElect = 301, "During Leader Election", 500;
    WatcherCleared = 400, "watcher is cleared due to etcd recovery", 400;
    EventIndexCleared = 401, "The event in requested index is outdated and cleared", 400;
    StandbyInternal = 402, "Standby Internal Error", 400;
    InvalidActiveSize = 403, "Invalid active size", 400;
    InvalidRemoveDelay = 404, "Standby remove delay", 400;
    ClientInternal = 500, "Client Internal Error", 400;
}

/// etcd's JSON error body, the serde form of [`Error`].
#[derive(Serialize, Deserialize)]
struct Wire {
    #[serde(rename = "errorCode")]
    error_code: u32,
    message: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    cause: String,
    index: u64,
}

impl Serialize for Error {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Wire {
            error_code: self.code(),
            message: self.message().to_owned(),
            cause: self.cause().to_owned(),
            index: self.index(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Error {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = Wire::deserialize(d)?;
        Error::from_code(w.error_code, w.cause, w.index).ok_or_else(|| {
            serde::de::Error::custom(format_args!("unknown etcd error code {}", w.error_code))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_messages_and_status() {
        let e = Error::KeyNotFound {
            cause: "/foo".into(),
            index: 6,
        };
        assert_eq!(
            (e.code(), e.message(), e.http_status()),
            (100, "Key not found", 404)
        );
        assert_eq!(e.to_string(), "Key not found (/foo) [6]");
        let e = Error::EventIndexCleared {
            cause: String::new(),
            index: 1,
        };
        assert_eq!((e.code(), e.http_status()), (401, 400));
        assert_eq!(Error::from_code(108, "/d", 3).unwrap().http_status(), 403);
        assert!(Error::from_code(999, "", 0).is_none());
    }

    #[test]
    fn json_matches_etcd() {
        let e = Error::KeyNotFound {
            cause: "/foo".into(),
            index: 6,
        };
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(
            json,
            r#"{"errorCode":100,"message":"Key not found","cause":"/foo","index":6}"#
        );
        assert_eq!(serde_json::from_str::<Error>(&json).unwrap(), e);
        let e = Error::RaftInternal {
            cause: String::new(),
            index: 0,
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"errorCode":300,"message":"Raft Internal Error","index":0}"#
        );
        assert!(
            serde_json::from_str::<Error>(r#"{"errorCode":7,"message":"","index":0}"#).is_err()
        );
    }
}
