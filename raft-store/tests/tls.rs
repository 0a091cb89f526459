//! The gRPC transport over TLS as an embedder uses it: rustls configurations built by hand
//! from an rcgen CA, three members on `https://` peer URLs requiring client certificates,
//! and a member without a certificate kept out.

use std::sync::Arc;
use std::time::Duration;

use raft_store::tls::rustls;
use raft_store::{Config, GrpcTransport, Member, ReadConsistency, TransportTls};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::util::{Cmd, WAIT, eventually, grpc_members};

struct Ca {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Ca {
    fn new() -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let issuer =
            rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap())
                .unwrap();
        Ca { issuer }
    }

    fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        roots
    }

    /// A certificate for 127.0.0.1 usable as server and as client.
    fn leaf(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (vec![cert.der().clone()], key)
    }

    /// A client trusting this CA and presenting `identity`.
    fn client_with(
        &self,
        (certs, key): (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
    ) -> rustls::ClientConfig {
        let mut c = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(self.roots())
        .with_client_auth_cert(certs, key)
        .unwrap();
        c.alpn_protocols = vec![b"h2".to_vec()];
        c
    }

    /// Mutual TLS: present a leaf both ways, require and verify the peer's.
    fn transport_tls(&self) -> TransportTls {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (certs, key) = self.leaf();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(self.roots()),
            provider.clone(),
        )
        .build()
        .unwrap();
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs.clone(), key.clone_key())
            .unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(self.roots())
            .with_client_auth_cert(certs, key)
            .unwrap();
        TransportTls::new(server, client)
    }
}

/// Calls `Raft.Snapshot` with no chunk over TLS; the code the call ended with, or the
/// connection error.
async fn empty_snapshot_call(url: &str, tls: rustls::ClientConfig) -> Result<tonic::Code, String> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .map_err(|e| e.to_string())?
        .connect_with_connector(kv_client::tls::TlsConnector::new(Arc::new(tls)))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut client = proto::raft_v1::raft_client::RaftClient::new(channel);
    match client.snapshot(futures::stream::empty()).await {
        Ok(_) => Ok(tonic::Code::Ok),
        Err(s) => Ok(s.code()),
    }
}

fn config(id: u64, dir: &std::path::Path, members: &[Member]) -> Config {
    let mut c = Config::new(id, dir);
    c.initial_members = members.to_vec();
    c.tick_interval = Duration::from_millis(30);
    c.election_ticks = 10;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_replicate_over_mutual_tls() {
    let ca = Ca::new();
    let dirs = tempfile::tempdir().unwrap();
    let (nodes, members, stop) = grpc_members(
        1..=3,
        "https",
        dirs.path(),
        || GrpcTransport::with_tls(0x715, ca.transport_tls()),
        config,
    )
    .await;
    let set = Cmd::Set("k".into(), "over-tls".into());
    eventually(WAIT, "a write acknowledged over TLS", || {
        let n = &nodes[2];
        let set = set.clone();
        async move { n.write(&set).await.is_ok() }
    })
    .await;
    let seen = nodes[0]
        .read(ReadConsistency::Linearizable, |m| m.map.get("k").cloned())
        .await
        .unwrap();
    assert_eq!(seen.as_deref(), Some("over-tls"));

    // The peer listener serves a client with a certificate of its CA (an empty snapshot
    // stream reaches the service, which refuses it) and turns away one whose certificate
    // another CA issued, before any call.
    let url = members[0].peer_urls[0].clone();
    assert_eq!(
        empty_snapshot_call(&url, ca.client_with(ca.leaf())).await,
        Ok(tonic::Code::InvalidArgument)
    );
    let stranger = Ca::new().leaf();
    let refused = empty_snapshot_call(&url, ca.client_with(stranger)).await;
    assert!(
        !matches!(refused, Ok(tonic::Code::InvalidArgument)),
        "a client certificate of another CA was served: {refused:?}"
    );

    for n in &nodes {
        n.shutdown().await;
    }
    let _ = stop.send(true);
}
