//! TLS set-up from etcd's flags for kvd (client and peer listeners) and its clients: PEM
//! certificates and keys, trusted CAs, client-certificate verification, revocation lists
//! (`--client-crl-file`, `--peer-crl-file`), TLS 1.2 cipher suites (`--cipher-suites`), and
//! the self-signed certificates of `--auto-tls` / `--peer-auto-tls`.
//!
//! rustls with the ring provider throughout. Every error names the flag and the file it
//! came from.
//!
//! Renewed certificates are picked up without a restart, as etcd 3.4 does: the
//! certificate/key pair of a configuration built here (a server's identity and the one a
//! client presents) and a server's CRL are re-read when their files change on disk (their
//! size, modification time or inode), looked at no more than once per
//! [`RELOAD_CHECK_INTERVAL`], on the next handshake. A replacement that cannot be read,
//! parsed or paired is logged as a warning naming the file and the previous certificate
//! (or CRL) stays in use. Trusted CA files are read once, at start-up, as in etcd.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

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
    fn certified(&self, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
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

/// A server configuration presenting `identity` (re-read when its files change, see the
/// module documentation); with `client_cas`, clients must present a certificate issued by
/// one of them. ALPN offers `alpn` in order.
///
/// # Errors
/// A file cannot be read or parsed, the key does not match the certificate, or the CA
/// store cannot verify clients.
pub fn server_config(
    identity: &CertKey,
    client_cas: Option<(&str, &Path)>,
    alpn: &[&[u8]],
) -> Result<ServerConfig, TlsError> {
    server_config_with(identity, client_cas, &Policy::default(), alpn)
}

/// [`server_config`] under `policy`: its TLS 1.2 cipher suites, and its CRL (re-read when
/// the file changes) checked against client certificates (which needs `client_cas`).
///
/// # Errors
/// As [`server_config`]; an unknown cipher suite; a CRL without client verification or
/// one that cannot be read or parsed.
pub fn server_config_with(
    identity: &CertKey,
    client_cas: Option<(&str, &Path)>,
    policy: &Policy,
    alpn: &[&[u8]],
) -> Result<ServerConfig, TlsError> {
    let provider = policy.provider()?;
    let resolver = ReloadingCert::new(identity, provider.clone())?;
    let crl = match (&policy.crl, client_cas) {
        (None, _) => None,
        (Some((flag, path)), Some(_)) => Some((flag.as_str(), path.as_path())),
        (Some((flag, _)), None) => {
            return Err(TlsError::Flags(format!(
                "{flag} checks client certificates, which this listener does not verify: give its trusted CA file too"
            )));
        }
    };
    if client_cas.is_none() && (policy.allowed_cn.is_some() || policy.allowed_hostname.is_some()) {
        return Err(TlsError::Flags(
            "an allowed CN or host name for client certificates needs the listener to verify them: give its trusted CA file too".into(),
        ));
    }
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config {
            what: "TLS server".into(),
            reason: e.to_string(),
        })?;
    let builder = match client_cas {
        Some((flag, path)) => {
            let roots = Arc::new(load_roots(flag, path)?);
            let ca = (flag.to_owned(), path.to_owned());
            let verifier = match crl {
                None => client_verifier(&roots, Vec::new(), &provider, &ca)?,
                Some((crl_flag, crl_path)) => {
                    ReloadingCrl::verifier(roots, crl_flag, crl_path, provider.clone(), ca)?
                }
            };
            builder.with_client_cert_verifier(AllowedClients::wrap(verifier, policy)?)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// The verifier of client certificates issued by `roots` (the CA file `ca`: flag and
/// path, for errors), refusing those `crls` revoke. As etcd, only the presented
/// certificate is looked up, and one whose issuer has no CRL is accepted.
fn client_verifier(
    roots: &Arc<RootCertStore>,
    crls: Vec<CertificateRevocationListDer<'static>>,
    provider: &Arc<CryptoProvider>,
    ca: &(String, PathBuf),
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .with_crls(crls)
        .only_check_end_entity_revocation()
        .allow_unknown_revocation_status()
        .build()
        .map_err(|e| TlsError::Config {
            what: format!("{} {}", ca.0, ca.1.display()),
            reason: e.to_string(),
        })
}

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
type Loader<T> = Box<dyn Fn() -> Result<T, TlsError> + Send + Sync>;

/// A value built from files, rebuilt when one of them changes on disk. [`Reloading::get`]
/// looks at the files no more than once per [`RELOAD_CHECK_INTERVAL`]; a rebuild that fails
/// is logged and the previous value kept, and it is not retried until the files change
/// again (so a bad file is warned about once, not on every handshake).
struct Reloading<T> {
    /// What the value is, for the log (`client certificate --cert-file ...`).
    what: String,
    files: Vec<PathBuf>,
    load: Loader<T>,
    state: parking_lot::Mutex<ReloadState<T>>,
}

struct ReloadState<T> {
    current: Arc<T>,
    stamps: Vec<Option<FileStamp>>,
    checked: Instant,
    /// Rebuilds tried, so tests can wait for one instead of sleeping.
    #[cfg(test)]
    attempts: u64,
}

impl<T> Reloading<T> {
    /// Builds the value once (its error is returned: at start-up a bad file is fatal).
    fn new(what: String, files: Vec<PathBuf>, load: Loader<T>) -> Result<Self, TlsError> {
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

    /// The current value, first rebuilt if the files changed since they were last read.
    fn get(&self) -> Arc<T> {
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
struct ReloadingCert(Reloading<CertifiedKey>);

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("files", &self.0.files)
            .finish_non_exhaustive()
    }
}

impl ReloadingCert {
    fn new(identity: &CertKey, provider: Arc<CryptoProvider>) -> Result<Self, TlsError> {
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

/// A client-certificate verifier whose CRL file is re-read when it changes (etcd re-reads
/// it for every connection); the trusted CAs stay those read at start-up, as in etcd.
struct ReloadingCrl {
    current: Reloading<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
    /// The CA subjects offered to clients: they come from the CA file, which is not
    /// reloaded, so the first verifier's list stays right.
    hints: Vec<rustls::DistinguishedName>,
    mandatory: bool,
    schemes: Vec<SignatureScheme>,
}

impl std::fmt::Debug for ReloadingCrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCrl")
            .field("files", &self.current.files)
            .finish_non_exhaustive()
    }
}

impl ReloadingCrl {
    /// The verifier of client certificates issued by `roots` (the CA file `ca`), refusing
    /// those the CRL file `crl` (given by `crl_flag`) revokes as it reads now.
    fn verifier(
        roots: Arc<RootCertStore>,
        crl_flag: &str,
        crl: &Path,
        provider: Arc<CryptoProvider>,
        ca: (String, PathBuf),
    ) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
        let (flag, path) = (crl_flag.to_owned(), crl.to_owned());
        let what = format!("revocation list {flag} {}", path.display());
        let load: Loader<Arc<dyn rustls::server::danger::ClientCertVerifier>> =
            Box::new(move || {
                let crls = load_crls(&flag, &path)?;
                client_verifier(&roots, crls, &provider, &ca)
            });
        let current = Reloading::new(what, vec![crl.to_owned()], load)?;
        let first = current.get();
        Ok(Arc::new(ReloadingCrl {
            hints: first.root_hint_subjects().to_vec(),
            mandatory: first.client_auth_mandatory(),
            schemes: first.supported_verify_schemes(),
            current,
        }))
    }
}

impl rustls::server::danger::ClientCertVerifier for ReloadingCrl {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        self.current
            .get()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current
            .get()
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current
            .get()
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes.clone()
    }
}

/// A client-certificate verifier that, after the CA (and CRL) checks, also requires the
/// certificate's Common Name or a host name it is valid for.
#[derive(Debug)]
struct AllowedClients {
    inner: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    cn: Option<String>,
    hostname: Option<ServerName<'static>>,
}

impl AllowedClients {
    /// `inner` as is when `policy` restricts nothing, else wrapped.
    fn wrap(
        inner: Arc<dyn rustls::server::danger::ClientCertVerifier>,
        policy: &Policy,
    ) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
        if policy.allowed_cn.is_none() && policy.allowed_hostname.is_none() {
            return Ok(inner);
        }
        let hostname = match &policy.allowed_hostname {
            None => None,
            Some(h) => Some(ServerName::try_from(h.clone()).map_err(|e| {
                TlsError::Flags(format!(
                    "--peer-cert-allowed-hostname {h:?}: not a host name or IP address: {e}"
                ))
            })?),
        };
        Ok(Arc::new(AllowedClients {
            inner,
            cn: policy.allowed_cn.clone(),
            hostname,
        }))
    }

    fn check(&self, end_entity: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let refused = |why: String| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
                Arc::new(std::io::Error::other(why)),
            )))
        };
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|e| refused(format!("unparsable client certificate: {e}")))?;
        if let Some(cn) = &self.cn {
            let got = common_name(cert.subject());
            if got.as_deref() != Some(cn.as_str()) {
                return Err(refused(format!(
                    "client certificate CN {got:?} is not the allowed {cn:?}"
                )));
            }
        }
        if let Some(host) = &self.hostname {
            cert.verify_is_valid_for_subject_name(host).map_err(|_| {
                rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName)
            })?;
        }
        Ok(())
    }
}

impl rustls::server::danger::ClientCertVerifier for AllowedClients {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        self.check(end_entity)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Reads one DER element at the start of `der`: (tag, content, rest).
fn der_element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |a, &b| (a << 8) | usize::from(b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The first Common Name (OID 2.5.4.3) in a certificate subject (the contents of its
/// Name SEQUENCE: SETs of SEQUENCEs of OID and value), if it is a string.
fn common_name(mut subject: &[u8]) -> Option<String> {
    const CN: &[u8] = &[0x55, 0x04, 0x03];
    while !subject.is_empty() {
        let (_, mut set, rest) = der_element(subject)?;
        subject = rest;
        while !set.is_empty() {
            let (_, atv, rest) = der_element(set)?;
            set = rest;
            let (oid_tag, oid, value) = der_element(atv)?;
            if oid_tag == 0x06 && oid == CN {
                let (tag, text, _) = der_element(value)?;
                // UTF8String, PrintableString, IA5String, TeletexString (as Latin-1-ish ASCII).
                if matches!(tag, 0x0c | 0x13 | 0x16 | 0x14) {
                    return String::from_utf8(text.to_vec()).ok();
                }
                return None;
            }
        }
    }
    None
}

/// How a client checks the server's certificate.
#[derive(Debug, Clone)]
pub enum ServerVerification {
    /// Against the CAs in this file (named by the flag).
    Ca {
        /// The flag, e.g. `--ca-file`.
        flag: String,
        /// The PEM CA file.
        path: PathBuf,
    },
    /// Against the system's CA bundle (`SSL_CERT_FILE`, else Debian's, Fedora's or
    /// Alpine's usual path), as Go's clients (etcdctl) do without a CA file. No bundle
    /// found means no server is trusted.
    System,
    /// Not at all: what etcd does between members with `--peer-auto-tls` (their
    /// certificates are self-signed), and `--insecure-skip-tls-verify`. Traffic is
    /// encrypted but the peer is not authenticated.
    None,
}

/// A client configuration verifying servers as `verify` says and presenting `identity`
/// when given (for servers that require client certificates; re-read when its files
/// change, so a member presents its renewed peer certificate on its next connections).
///
/// # Errors
/// A file cannot be read or parsed, or the key does not match the certificate.
pub fn client_config(
    verify: &ServerVerification,
    identity: Option<&CertKey>,
    alpn: &[&[u8]],
) -> Result<ClientConfig, TlsError> {
    client_config_with(verify, identity, &Policy::default(), alpn)
}

/// [`client_config`] offering only `policy`'s TLS 1.2 cipher suites (its CRL is for
/// servers checking clients and is not used here).
///
/// # Errors
/// As [`client_config`]; an unknown cipher suite.
pub fn client_config_with(
    verify: &ServerVerification,
    identity: Option<&CertKey>,
    policy: &Policy,
    alpn: &[&[u8]],
) -> Result<ClientConfig, TlsError> {
    let provider = policy.provider()?;
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config {
            what: "TLS client".into(),
            reason: e.to_string(),
        })?;
    let builder = match verify {
        ServerVerification::Ca { flag, path } => {
            builder.with_root_certificates(load_roots(flag, path)?)
        }
        ServerVerification::System => builder.with_root_certificates(system_roots()),
        ServerVerification::None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoServerVerification(provider.clone()))),
    };
    let mut config = match identity {
        Some(id) => builder.with_client_cert_resolver(Arc::new(ReloadingCert::new(id, provider)?)),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// The system's CA bundle; certificates rustls cannot use are skipped (as Go does).
fn system_roots() -> RootCertStore {
    const BUNDLES: [&str; 3] = [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/cert.pem",
    ];
    let mut roots = RootCertStore::empty();
    let env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
    let found = env
        .into_iter()
        .chain(BUNDLES.iter().map(PathBuf::from))
        .find_map(|p| std::fs::read(p).ok());
    if let Some(bytes) = found {
        let certs = CertificateDer::pem_slice_iter(&bytes).filter_map(Result::ok);
        roots.add_parsable_certificates(certs);
    }
    roots
}

/// Accepts any server certificate but still checks the handshake signatures (so the
/// session is bound to the key the server presented).
#[derive(Debug)]
struct NoServerVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoServerVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The self-signed certificate of `--auto-tls` (`flag`) in `dir` (`cert.pem`, `key.pem`),
/// valid for `hosts` (IP addresses or DNS names) as a server and a client. Like etcd, an
/// existing pair in `dir` is reused, so a restarted member keeps its certificate.
///
/// # Errors
/// The directory or files cannot be written, or rcgen refuses a host name.
pub fn auto_tls(flag: &str, dir: &Path, hosts: &[String]) -> Result<CertKey, TlsError> {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let pair = CertKey::new(flag, &cert, flag, &key);
    if cert.exists() && key.exists() {
        return Ok(pair);
    }
    let fail = |reason: String| TlsError::Auto {
        flag: flag.to_owned(),
        reason,
    };
    let mut names: Vec<String> = hosts.to_vec();
    names.sort();
    names.dedup();
    let mut params = rcgen::CertificateParams::new(names)
        .map_err(|e| fail(format!("certificate names {hosts:?}: {e}")))?;
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "kvd");
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let keypair = rcgen::KeyPair::generate().map_err(|e| fail(format!("generating a key: {e}")))?;
    let certificate = params
        .self_signed(&keypair)
        .map_err(|e| fail(format!("signing the certificate: {e}")))?;
    std::fs::create_dir_all(dir).map_err(|e| fail(format!("creating {}: {e}", dir.display())))?;
    write_private(&key, keypair.serialize_pem().as_bytes())
        .map_err(|e| fail(format!("writing {}: {e}", key.display())))?;
    std::fs::write(&cert, certificate.pem())
        .map_err(|e| fail(format!("writing {}: {e}", cert.display())))?;
    tracing::info!(cert = %cert.display(), "generated a self-signed certificate ({flag})");
    Ok(pair)
}

/// Writes a file only its owner can read (a private key).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    opts.open(path)?.write_all(bytes)
}

/// The host of a `scheme://host:port` URL (without IPv6 brackets), for certificate names.
pub fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let hostport = rest.split('/').next()?;
    let host = match hostport.rsplit_once(':') {
        Some((h, _)) => h,
        None => hostport,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| host.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A leaf certificate for `hosts` with Common Name `cn`, as DER.
    fn leaf(cn: &str, hosts: &[&str]) -> CertificateDer<'static> {
        let mut params =
            rcgen::CertificateParams::new(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>())
                .expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "flotilla");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().expect("key");
        params.self_signed(&key).expect("cert").der().clone()
    }

    #[test]
    fn common_names_are_read_from_subjects_and_bad_der_is_none() {
        let der = leaf("peer-α", &["localhost"]);
        let cert = webpki::EndEntityCert::try_from(&der).expect("parse");
        assert_eq!(common_name(cert.subject()).as_deref(), Some("peer-α"));
        assert_eq!(common_name(&[]), None);
        // Truncated or lying lengths are refused, never read past the end.
        for bad in [
            &[0x31u8, 0x05, 0x30][..],
            &[0x31, 0x84, 0xff, 0xff, 0xff, 0xff],
            &[0x31],
        ] {
            assert_eq!(common_name(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn allowed_cn_and_host_name_are_checked_after_the_ca() {
        let inner: Arc<dyn rustls::server::danger::ClientCertVerifier> =
            Arc::new(rustls::server::NoClientAuth);
        let policy = |cn: Option<&str>, host: Option<&str>| Policy {
            allowed_cn: cn.map(String::from),
            allowed_hostname: host.map(String::from),
            ..Policy::default()
        };
        let check = |p: &Policy, der: &CertificateDer<'_>| {
            let v = AllowedClients {
                inner: inner.clone(),
                cn: p.allowed_cn.clone(),
                hostname: p
                    .allowed_hostname
                    .clone()
                    .map(|h| ServerName::try_from(h).expect("name")),
            };
            v.check(der)
        };
        let peer = leaf("peer", &["localhost", "127.0.0.1"]);
        let other = leaf("other", &["elsewhere.invalid"]);
        assert!(check(&policy(Some("peer"), None), &peer).is_ok());
        assert!(check(&policy(Some("peer"), None), &other).is_err());
        assert!(check(&policy(None, Some("localhost")), &peer).is_ok());
        assert!(check(&policy(None, Some("127.0.0.1")), &peer).is_ok());
        assert!(check(&policy(None, Some("localhost")), &other).is_err());
        // Nothing to restrict: the CA verifier is used as it is.
        let same = AllowedClients::wrap(inner.clone(), &Policy::default()).expect("wrap");
        assert!(Arc::ptr_eq(&same, &inner));
        assert!(AllowedClients::wrap(inner.clone(), &policy(None, Some("bad name!"))).is_err());
    }

    #[test]
    fn url_hosts_for_certificate_names() {
        assert_eq!(
            url_host("https://127.0.0.1:2379").as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(url_host("https://[::1]:2379/").as_deref(), Some("::1"));
        assert_eq!(
            url_host("http://example.com").as_deref(),
            Some("example.com")
        );
        assert_eq!(url_host("https://:2379"), None);
    }

    /// A self-signed certificate for `cn` and its key, as PEM, and the certificate's DER.
    fn generate(cn: &str) -> (String, String, CertificateDer<'static>) {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        (cert.pem(), key.serialize_pem(), cert.der().clone())
    }

    /// Replaces `path` by renaming a new file over it, as certificate renewal tools do.
    fn replace(path: &Path, bytes: &[u8]) {
        let tmp = path.with_extension("new");
        std::fs::write(&tmp, bytes).expect("write");
        std::fs::rename(&tmp, path).expect("rename");
    }

    /// Polls `done` until it holds, for at most 10 s.
    fn eventually(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "not within 10 s: {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_renewed_pair_is_presented_and_a_broken_one_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pair = CertKey::new(
            "--peer-cert-file",
            &dir.path().join("cert.pem"),
            "--peer-key-file",
            &dir.path().join("key.pem"),
        );
        let write = |(cert, key, der): (String, String, CertificateDer<'static>)| {
            replace(&pair.cert, cert.as_bytes());
            replace(&pair.key, key.as_bytes());
            der
        };
        let a = write(generate("A"));
        // The certificate a member presents to its peers (the client side of the peer
        // transport) follows the files.
        let config =
            client_config(&ServerVerification::None, Some(&pair), &[b"h2"]).expect("config");
        let presented = || {
            config
                .client_auth_cert_resolver
                .resolve(&[], &[])
                .expect("a certificate")
                .cert[0]
                .clone()
        };
        assert_eq!(presented(), a);
        let b = write(generate("B"));
        eventually("the renewed certificate is presented", || presented() == b);

        // Broken replacements are tried once each and the last good pair stays.
        let reloading = ReloadingCert::new(&pair, provider()).expect("B loads");
        let attempts = || reloading.0.state.lock().attempts;
        replace(&pair.key, b"not a key\n");
        eventually("the garbage key is tried", || {
            reloading.0.get();
            attempts() == 1
        });
        assert_eq!(reloading.0.get().cert[0], b);
        let (c_cert, _, _) = generate("C");
        let (_, d_key, _) = generate("D");
        replace(&pair.cert, c_cert.as_bytes());
        replace(&pair.key, d_key.as_bytes());
        eventually("the mismatched pair is tried", || {
            reloading.0.get();
            attempts() >= 2
        });
        assert_eq!(reloading.0.get().cert[0], b);
        // (At start-up the same pair is an error naming both files.)
        let err = ReloadingCert::new(&pair, provider()).expect_err("a mismatched pair");
        assert!(err.to_string().contains("does not belong"), "{err}");
        // A good pair again is taken.
        let e = write(generate("E"));
        eventually("the next good pair is used", || {
            reloading.0.get().cert[0] == e
        });
    }

    #[test]
    fn auto_tls_writes_a_usable_pair_and_reuses_it() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = ["127.0.0.1".to_string(), "localhost".to_string()];
        let pair = auto_tls("--auto-tls", dir.path(), &hosts).unwrap();
        let cert = std::fs::read(&pair.cert).unwrap();
        server_config(&pair, None, &[b"h2"]).unwrap();
        auto_tls("--auto-tls", dir.path(), &hosts).unwrap();
        assert_eq!(std::fs::read(&pair.cert).unwrap(), cert, "regenerated");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&pair.key).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "the key is readable by others");
        }
    }
}
