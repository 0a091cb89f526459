//! The server half of kvd's TLS, from etcd's flags: listener configurations presenting a
//! (reloading) certificate, client-certificate verification against trusted CAs with
//! revocation lists (`--client-crl-file`, `--peer-crl-file`, re-read when they change) and
//! etcd's allowed CN or host name for peers, and the self-signed certificates of
//! `--auto-tls` / `--peer-auto-tls`.
//!
//! The files, policies, errors and the client half are kv-client's ([`kv_client::tls`]),
//! so a client never links this crate to speak TLS.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kv_client::tls::{
    CertKey, Loader, Policy, Reloading, ReloadingCert, TlsError, load_crls, load_roots,
};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

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
            .field("files", &self.current.files())
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
