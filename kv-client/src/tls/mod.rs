//! TLS for clients and servers of the store, from etcd's flags: PEM certificates and keys,
//! trusted CAs, TLS 1.2 cipher suites ([`Policy`]), how a client verifies servers
//! ([`ServerVerification`], [`client_config`]), and [`TlsConnector`], which dials tonic
//! channels over TLS.
//!
//! rustls with the ring provider throughout. Every error names the flag and the file it
//! came from.
//!
//! Renewed certificates are picked up without a restart, as etcd 3.4 does: the
//! certificate/key pair a configuration built here presents ([`ReloadingCert`]) is re-read
//! when its files change on disk (their size, modification time or inode), looked at no more
//! than once per [`RELOAD_CHECK_INTERVAL`], on the next handshake. A replacement that cannot
//! be read, parsed or paired is logged as a warning naming the file, and the previous
//! certificate stays in use. Trusted CA files are read once, at start-up, as in etcd.
//!
//! The server half (listener configurations, client-certificate checks, revocation lists,
//! self-signed certificates) is kv-server's `tls` module, built on the pieces here.

mod client_config;
mod connector;
mod reload;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

pub use client_config::{ServerVerification, client_config, client_config_with};
pub use connector::{ClientStream, TlsConnector};
pub use reload::{Loader, Reloading, ReloadingCert};

/// How often, at most, the files behind a configuration are looked at for a change. etcd
/// re-reads them on every handshake; one `stat` per file per second keeps a busy listener
/// from doing that while still seeing a renewal within a second.
pub const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// A TLS set-up failure, naming the flag and file at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    // `error`, not `source`: the message already says it, and a source would repeat it
    // in anyhow's `{:#}` chain.
    #[error("{flag} {}: {error}", .path.display())]
    Read {
        /// The flag that named the file (`--cert-file`, ...).
        flag: String,
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        error: std::io::Error,
    },
    /// A certificate file holds no usable PEM certificate.
    #[error("{flag} {}: {reason}", .path.display())]
    BadCert {
        /// The flag.
        flag: String,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A key file holds no usable PEM private key.
    #[error("{flag} {}: {reason}", .path.display())]
    BadKey {
        /// The flag.
        flag: String,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The key does not belong to the certificate, or rustls refused the pair.
    #[error("{cert_flag} {} and {key_flag} {}: {reason}", .cert.display(), .key.display())]
    Pair {
        /// The certificate's flag.
        cert_flag: String,
        /// The certificate file.
        cert: PathBuf,
        /// The key's flag.
        key_flag: String,
        /// The key file.
        key: PathBuf,
        /// rustls' reason.
        reason: String,
    },
    /// A combination of flags that cannot work.
    #[error("{0}")]
    Flags(String),
    /// A self-signed certificate could not be generated or written.
    #[error("{flag}: {reason}")]
    Auto {
        /// `--auto-tls` or `--peer-auto-tls`.
        flag: String,
        /// What failed.
        reason: String,
    },
    /// rustls refused a configuration (no usable protocol version, a CA store it cannot use).
    #[error("{what}: {reason}")]
    Config {
        /// What was being built.
        what: String,
        /// rustls' reason.
        reason: String,
    },
}

/// The crypto provider of every configuration built here: ring, named explicitly so a
/// second provider compiled in by some other crate cannot make rustls' default ambiguous.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What a listener or client accepts beyond its identity and trusted CAs: etcd's
/// `--cipher-suites` and its CRL flags.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// TLS 1.2 cipher suites allowed, by their IANA names as Go spells them
    /// (`TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`, `TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305`);
    /// empty allows rustls' defaults. As in Go, and so in etcd, TLS 1.3's suites are not
    /// configurable: their names are accepted and change nothing.
    pub cipher_suites: Vec<String>,
    /// Client certificates revoked: the flag (for errors) and its PEM CRL file. Only the
    /// presented (end-entity) certificate is checked, and one whose issuer has no CRL in
    /// the file is accepted, as etcd does.
    pub crl: Option<(String, PathBuf)>,
    /// Only client certificates whose subject Common Name is this are accepted (etcd's
    /// `--peer-cert-allowed-cn`).
    pub allowed_cn: Option<String>,
    /// Only client certificates valid for this host name (or IP address) are accepted, as
    /// a server's certificate would be checked (etcd's `--peer-cert-allowed-hostname`).
    pub allowed_hostname: Option<String>,
}

impl Policy {
    /// The crypto provider allowing only [`Policy::cipher_suites`] for TLS 1.2.
    ///
    /// # Errors
    /// [`TlsError::Flags`] naming an unknown or unsupported suite and the supported ones.
    pub fn provider(&self) -> Result<Arc<CryptoProvider>, TlsError> {
        let mut p = rustls::crypto::ring::default_provider();
        if self.cipher_suites.is_empty() {
            return Ok(Arc::new(p));
        }
        let name = |s: &rustls::SupportedCipherSuite| s.suite().as_str().unwrap_or("");
        let mut allowed = Vec::new();
        for wanted in &self.cipher_suites {
            let wanted = wanted.trim();
            // Go names the ChaCha20 suites without their `_SHA256`.
            let found = p.cipher_suites.iter().find(|s| {
                let n = name(s);
                n == wanted || n.strip_suffix("_SHA256") == Some(wanted)
            });
            match found {
                Some(s) => allowed.push(s.suite()),
                None => {
                    let supported: Vec<&str> = p
                        .cipher_suites
                        .iter()
                        .filter(|s| s.tls13().is_none())
                        .map(name)
                        .collect();
                    return Err(TlsError::Flags(format!(
                        "--cipher-suites: {wanted:?} is not a cipher suite kvd supports; TLS 1.2 suites supported: {}",
                        supported.join(",")
                    )));
                }
            }
        }
        p.cipher_suites
            .retain(|s| s.tls13().is_some() || allowed.contains(&s.suite()));
        Ok(Arc::new(p))
    }
}

/// Reads the PEM certificate revocation lists of `path` (named by `flag`).
///
/// # Errors
/// The file cannot be read, or holds no (or a malformed) PEM CRL.
pub fn load_crls(
    flag: &str,
    path: &Path,
) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    load_pem_list(flag, path, "certificate revocation list", "X509 CRL")
}

/// A certificate chain and its private key, read from files named by flags.
#[derive(Debug, Clone)]
pub struct CertKey {
    /// The certificate's flag (for errors), e.g. `--cert-file`.
    pub cert_flag: String,
    /// The PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// The key's flag, e.g. `--key-file`.
    pub key_flag: String,
    /// The PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl CertKey {
    /// The pair `cert`/`key` named by `cert_flag`/`key_flag`.
    pub fn new(cert_flag: &str, cert: &Path, key_flag: &str, key: &Path) -> Self {
        CertKey {
            cert_flag: cert_flag.to_owned(),
            cert: cert.to_owned(),
            key_flag: key_flag.to_owned(),
            key: key.to_owned(),
        }
    }

    fn load(&self) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
        Ok((
            load_certs(&self.cert_flag, &self.cert)?,
            load_key(&self.key_flag, &self.key)?,
        ))
    }

    /// The pair as rustls signs with it; the key must belong to the certificate.
    pub(crate) fn certified(&self, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
        let (certs, key) = self.load()?;
        CertifiedKey::from_der(certs, key, provider).map_err(|e| self.pair_error(&e))
    }

    fn pair_error(&self, e: &rustls::Error) -> TlsError {
        let reason = match e {
            rustls::Error::InconsistentKeys(_) => {
                "the private key does not belong to the certificate".to_owned()
            }
            other => other.to_string(),
        };
        TlsError::Pair {
            cert_flag: self.cert_flag.clone(),
            cert: self.cert.clone(),
            key_flag: self.key_flag.clone(),
            key: self.key.clone(),
            reason,
        }
    }
}

fn read(flag: &str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read {
        flag: flag.to_owned(),
        path: path.to_owned(),
        error,
    })
}

/// Reads the PEM certificates of `path` (named by `flag`).
///
/// # Errors
/// The file cannot be read, or holds no (or a malformed) PEM certificate.
pub fn load_certs(flag: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    load_pem_list(flag, path, "certificate", "CERTIFICATE")
}

/// Reads every PEM item of type `T` in `path` (named by `flag`); at least one. `what` and
/// `label` (the PEM `BEGIN` label) name the item in errors.
fn load_pem_list<T: PemObject>(
    flag: &str,
    path: &Path,
    what: &str,
    label: &str,
) -> Result<Vec<T>, TlsError> {
    let bytes = read(flag, path)?;
    let bad = |reason: String| TlsError::BadCert {
        flag: flag.to_owned(),
        path: path.to_owned(),
        reason,
    };
    let items = T::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not a PEM {what} file: {e}")))?;
    if items.is_empty() {
        return Err(bad(format!("no PEM {what} (BEGIN {label}) in the file")));
    }
    Ok(items)
}

/// Reads the PEM private key of `path` (named by `flag`).
///
/// # Errors
/// The file cannot be read, or holds no (or a malformed) PEM private key.
pub fn load_key(flag: &str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(flag, path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::BadKey {
        flag: flag.to_owned(),
        path: path.to_owned(),
        reason: match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "no PEM private key (PKCS#8, PKCS#1 or SEC1) in the file".to_owned()
            }
            e => format!("not a PEM private key file: {e}"),
        },
    })
}

/// Reads the CA certificates of `path` (named by `flag`) into a root store.
///
/// # Errors
/// The file cannot be read or holds no certificate a root store accepts.
pub fn load_roots(flag: &str, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(flag, path)? {
        roots.add(c).map_err(|e| TlsError::BadCert {
            flag: flag.to_owned(),
            path: path.to_owned(),
            reason: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}
