//! Values built from files and rebuilt when the files change: [`Reloading`], and the
//! certificate/key pair a server or client presents, [`ReloadingCert`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use rustls::SignatureScheme;
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;

use super::{CertKey, RELOAD_CHECK_INTERVAL, TlsError};

/// A file's identity and version as `stat` sees it: a renewal that rewrites the file or
/// renames another over it changes at least one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    /// Device, inode and status-change time (nanoseconds) on Unix, where a rename over
    /// the file changes the inode even when size and mtime are equal.
    #[cfg(unix)]
    node: (u64, u64, i64, i64),
}

impl FileStamp {
    /// The stamp of `path`; `None` when it cannot be read (a replacement under way).
    fn of(path: &Path) -> Option<FileStamp> {
        let m = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            len: m.len(),
            modified: m.modified().ok(),
            #[cfg(unix)]
            node: {
                use std::os::unix::fs::MetadataExt as _;
                (m.dev(), m.ino(), m.ctime(), m.ctime_nsec())
            },
        })
    }
}

/// The loader of a [`Reloading`] value.
pub type Loader<T> = Box<dyn Fn() -> Result<T, TlsError> + Send + Sync>;

/// A value built from files, rebuilt when one of them changes on disk. [`Reloading::get`]
/// looks at the files no more than once per [`RELOAD_CHECK_INTERVAL`]; a rebuild that fails
/// is logged and the previous value kept, and it is not retried until the files change
/// again (so a bad file is warned about once, not on every handshake).
pub struct Reloading<T> {
    /// What the value is, for the log (`client certificate --cert-file ...`).
    what: String,
    files: Vec<PathBuf>,
    load: Loader<T>,
    pub(crate) state: parking_lot::Mutex<ReloadState<T>>,
}

impl<T> std::fmt::Debug for Reloading<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloading")
            .field("what", &self.what)
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

pub(crate) struct ReloadState<T> {
    current: Arc<T>,
    stamps: Vec<Option<FileStamp>>,
    checked: Instant,
    /// Rebuilds tried, so tests can wait for one instead of sleeping.
    #[cfg(test)]
    pub(crate) attempts: u64,
}

impl<T> Reloading<T> {
    /// Builds the value once from `files` with `load` (`what` names it in the log).
    ///
    /// # Errors
    /// The first load's error: at start-up a bad file is fatal.
    pub fn new(what: String, files: Vec<PathBuf>, load: Loader<T>) -> Result<Self, TlsError> {
        // Stamps before loading: a change made while loading is seen at the next check.
        let stamps = files.iter().map(|f| FileStamp::of(f)).collect();
        let current = Arc::new(load()?);
        Ok(Reloading {
            what,
            files,
            load,
            state: parking_lot::Mutex::new(ReloadState {
                current,
                stamps,
                checked: Instant::now(),
                #[cfg(test)]
                attempts: 0,
            }),
        })
    }

    /// The files the value is built from.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The current value, first rebuilt if the files changed since they were last read.
    pub fn get(&self) -> Arc<T> {
        let mut st = self.state.lock();
        if st.checked.elapsed() >= RELOAD_CHECK_INTERVAL {
            st.checked = Instant::now();
            let stamps: Vec<_> = self.files.iter().map(|f| FileStamp::of(f)).collect();
            if stamps != st.stamps {
                st.stamps = stamps;
                #[cfg(test)]
                {
                    st.attempts += 1;
                }
                match (self.load)() {
                    Ok(v) => {
                        st.current = Arc::new(v);
                        tracing::info!("reloaded the {} after it changed on disk", self.what);
                    }
                    Err(e) => tracing::warn!(
                        "the {} changed on disk but cannot be used ({e}); still using the previous one",
                        self.what
                    ),
                }
            }
        }
        Arc::clone(&st.current)
    }
}

/// A certificate/key pair re-read when its files change: the identity a server presents
/// (`ResolvesServerCert`) or a client presents (`ResolvesClientCert`), e.g. a member to
/// its peers.
pub struct ReloadingCert(pub(crate) Reloading<CertifiedKey>);

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("files", &self.0.files())
            .finish_non_exhaustive()
    }
}

impl ReloadingCert {
    /// The pair `identity` as `provider` signs with it.
    ///
    /// # Errors
    /// The files cannot be read or parsed, or the key does not belong to the certificate.
    pub fn new(identity: &CertKey, provider: Arc<CryptoProvider>) -> Result<Self, TlsError> {
        let id = identity.clone();
        let what = format!(
            "certificate {} {} and key {} {}",
            id.cert_flag,
            id.cert.display(),
            id.key_flag,
            id.key.display()
        );
        let files = vec![id.cert.clone(), id.key.clone()];
        let load: Loader<CertifiedKey> = Box::new(move || id.certified(&provider));
        Reloading::new(what, files, load).map(ReloadingCert)
    }
}

impl rustls::server::ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.get())
    }
}

impl rustls::client::ResolvesClientCert for ReloadingCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.get())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
