//! How a client verifies servers ([`ServerVerification`]) and the client configurations
//! built from it.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::{CertKey, Policy, ReloadingCert, TlsError, load_roots};

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

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::tls::provider;

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
}
