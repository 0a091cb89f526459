//! TLS: kvd's https:// client URLs (v2 HTTP and gRPC on one listener) with client
//! certificates required, `--auto-tls`, clear errors for bad certificate files, a 3-member
//! cluster over https:// peer URLs, and kvctl and Debian's etcdctl over TLS.
//!
//! Certificates come from a throw-away CA generated here with rcgen.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kv_client::tls::{CertKey, ServerVerification};

use crate::util::{self, Server, member_args};

/// A test CA and the certificates it issued, as PEM files in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn ca(&self) -> PathBuf {
        self.path("ca.pem")
    }
    /// `server` (for 127.0.0.1 and localhost), `client`, `revoked` (listed in `crl.pem`,
    /// not in `crl-empty.pem`), `peer1..3` (both uses), `elsewhere` (valid only for
    /// `elsewhere.invalid`), `renewed` (as `server`, another key and serial).
    fn pair(&self, name: &str) -> CertKey {
        CertKey::new(
            "--cert-file",
            &self.path(&format!("{name}.pem")),
            "--key-file",
            &self.path(&format!("{name}-key.pem")),
        )
    }
}

fn pki() -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "flotilla test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
        .expect("CA certificate");
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write CA");
    let names = [
        "server",
        "client",
        "revoked",
        "peer1",
        "peer2",
        "peer3",
        "elsewhere",
        "renewed",
    ];
    for (serial, name) in (1u64..).zip(names) {
        let hosts = if name == "elsewhere" {
            vec!["elsewhere.invalid".to_string()]
        } else {
            vec!["127.0.0.1".to_string(), "localhost".to_string()]
        };
        let mut params = CertificateParams::new(hosts).expect("leaf params");
        params.serial_number = Some(rcgen::SerialNumber::from(serial));
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &ca).expect("sign leaf");
        std::fs::write(dir.path().join(format!("{name}.pem")), cert.pem()).expect("write cert");
        std::fs::write(
            dir.path().join(format!("{name}-key.pem")),
            key.serialize_pem(),
        )
        .expect("write key");
    }
    // The CA revokes `revoked` (serial 3) in `crl.pem`; `crl-empty.pem` revokes nothing.
    for (file, revoked) in [("crl.pem", vec![3u64]), ("crl-empty.pem", vec![])] {
        let crl = rcgen::CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2025, 1, 1),
            next_update: rcgen::date_time_ymd(2099, 1, 1),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .into_iter()
                .map(|serial| rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from(serial),
                    revocation_time: rcgen::date_time_ymd(2025, 1, 1),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&ca)
        .expect("CRL");
        std::fs::write(dir.path().join(file), crl.pem().expect("CRL PEM")).expect("write CRL");
    }
    Pki { dir }
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// A blocking HTTPS client trusting the test CA (or nothing, with `verify` None) and
/// presenting `identity`.
fn https(verify: ServerVerification, identity: Option<&CertKey>) -> reqwest::blocking::Client {
    let tls = kv_client::tls::client_config(&verify, identity, &[b"http/1.1"]).expect("TLS client");
    reqwest::blocking::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(Duration::from_secs(5))
        .build()
        .expect("https client")
}

fn ca_verify(pki: &Pki) -> ServerVerification {
    ServerVerification::Ca {
        flag: "--ca-file".into(),
        path: pki.ca(),
    }
}

/// Polls `GET <url>/health` with `http` until it answers 200; panics with the log if the
/// server exits or the deadline passes.
fn wait_healthy(server: &mut Server, http: &reqwest::blocking::Client) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ok = http
            .get(format!("{}/health", server.url))
            .send()
            .is_ok_and(|r| r.status().is_success());
        if ok {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "kvd at {} not healthy within 20 s; its log:\n{}",
            server.url,
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A single kvd on an https:// client URL with `extra` TLS flags.
fn https_kvd(data: &Path, extra: &[String]) -> Server {
    let client = format!("https://127.0.0.1:{}", util::free_port());
    let peer = format!("http://127.0.0.1:{}", util::free_port());
    let mut args = member_args("node1", data, &client, &peer, &format!("node1={peer}"));
    args.extend(extra.iter().cloned());
    util::kvd_spawn(args, client, peer)
}

/// Peer TLS with `name`'s certificate, requiring peers' certificates from the test CA.
fn peer_auth_flags(pki: &Pki, name: &str) -> Vec<String> {
    let p = pki.pair(name);
    vec![
        "--peer-cert-file".into(),
        s(&p.cert),
        "--peer-key-file".into(),
        s(&p.key),
        "--peer-client-cert-auth".into(),
        "--peer-trusted-ca-file".into(),
        s(&pki.ca()),
    ]
}

fn client_auth_flags(pki: &Pki) -> Vec<String> {
    let server = pki.pair("server");
    vec![
        "--cert-file".into(),
        s(&server.cert),
        "--key-file".into(),
        s(&server.key),
        "--client-cert-auth".into(),
        "--trusted-ca-file".into(),
        s(&pki.ca()),
    ]
}

#[test]
fn https_v2_and_grpc_need_a_client_certificate() {
    let pki = pki();
    let data = tempfile::tempdir().expect("tempdir");
    let mut kvd = https_kvd(data.path(), &client_auth_flags(&pki));
    let client_id = pki.pair("client");
    let with_cert = https(ca_verify(&pki), Some(&client_id));
    wait_healthy(&mut kvd, &with_cert);

    let r = with_cert
        .put(format!("{}/v2/keys/tls", kvd.url))
        .form(&[("value", "secret")])
        .send()
        .expect("PUT over https");
    assert_eq!(r.status(), 201, "{}", r.text().unwrap_or_default());
    let body: serde_json::Value = with_cert
        .get(format!("{}/v2/keys/tls", kvd.url))
        .send()
        .expect("GET over https")
        .json()
        .expect("json");
    assert_eq!(body["node"]["value"], "secret");

    // No client certificate: the handshake is refused.
    let without = https(ca_verify(&pki), None);
    let refused = without.get(format!("{}/v2/keys/tls", kvd.url)).send();
    assert!(
        refused.is_err(),
        "a request without a client certificate got {refused:?}"
    );
    // Cleartext HTTP on the TLS port gets no answer either.
    let plain = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("http client");
    let url = kvd.url.replace("https://", "http://");
    let answered = plain
        .get(format!("{url}/v2/keys/tls"))
        .send()
        .is_ok_and(|r| r.status().is_success());
    assert!(!answered, "cleartext HTTP was served on the TLS port");

    // gRPC (kv.v1) on the same TLS listener.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let tls = kv_client::tls::client_config(&ca_verify(&pki), Some(&client_id), &[b"h2"])
            .expect("TLS client");
        let kv = kv_client::KvClient::connect_tls(&kvd.url, Arc::new(tls))
            .await
            .expect("gRPC over TLS");
        let got = kv.get("/tls").await.expect("gRPC get");
        assert_eq!(got.node.value.as_deref(), Some("secret"));
        kv.put("/grpc", "over-tls").await.expect("gRPC put");

        let tls = kv_client::tls::client_config(&ca_verify(&pki), None, &[b"h2"]).expect("TLS");
        let no_cert = match kv_client::KvClient::connect_tls(&kvd.url, Arc::new(tls)).await {
            Ok(kv) => kv.get("/tls").await.is_err(),
            Err(_) => true,
        };
        assert!(no_cert, "gRPC without a client certificate was served");
    });

    // kvctl with etcdctl v2's TLS flags, over the v2 HTTP API and over gRPC.
    let ca = s(&pki.ca());
    let (cert, key) = (s(&client_id.cert), s(&client_id.key));
    for api in ["http", "grpc"] {
        let kvctl = |args: &[&str]| {
            Command::new(util::kvctl_bin())
                .args(["--api", api, "--endpoints", &kvd.url])
                .args(args)
                .output()
                .expect("run kvctl")
        };
        let out = kvctl(&[
            "--ca-file",
            &ca,
            "--cert-file",
            &cert,
            "--key-file",
            &key,
            "get",
            "/grpc",
        ]);
        assert!(
            out.status.success(),
            "kvctl --api {api}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "over-tls\n");
        // Without --ca-file, the system's bundle (here SSL_CERT_FILE) verifies the server.
        let out = Command::new(util::kvctl_bin())
            .args(["--api", api, "--endpoints", &kvd.url])
            .env("SSL_CERT_FILE", pki.ca())
            .args(["--cert-file", &cert, "--key-file", &key, "get", "/grpc"])
            .output()
            .expect("run kvctl");
        assert!(
            out.status.success(),
            "kvctl --api {api}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // cluster-health reaches the members' (https) client URLs with the same TLS.
        let out = kvctl(&[
            "--ca-file",
            &ca,
            "--cert-file",
            &cert,
            "--key-file",
            &key,
            "cluster-health",
        ]);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("cluster is healthy"),
            "kvctl --api {api} cluster-health: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // Without its certificate kvctl fails like etcdctl, non-zero.
        let out = kvctl(&["--ca-file", &ca, "get", "/grpc"]);
        assert!(!out.status.success());
        // Half a pair is an argument error naming the flag.
        let out = kvctl(&["--cert-file", &cert, "get", "/grpc"]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("--key-file"));
    }
}

#[test]
fn etcdctl_v2_over_tls() {
    let pki = pki();
    let data = tempfile::tempdir().expect("tempdir");
    let mut kvd = https_kvd(data.path(), &client_auth_flags(&pki));
    let client_id = pki.pair("client");
    wait_healthy(&mut kvd, &https(ca_verify(&pki), Some(&client_id)));
    let etcdctl = |args: &[&str]| {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "2")
            .args(["--endpoints", &kvd.url, "--ca-file", &s(&pki.ca())])
            .args([
                "--cert-file",
                &s(&client_id.cert),
                "--key-file",
                &s(&client_id.key),
            ])
            .args(args)
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(o) => o,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "etcdctl is not installed: this test needs it (Debian package etcd-client; see scripts/install-deps)"
            ),
            Err(e) => panic!("cannot run etcdctl: {e}"),
        }
    };
    let set = etcdctl(&["set", "/etcdctl", "hello"]);
    assert!(
        set.status.success(),
        "etcdctl set: {}",
        String::from_utf8_lossy(&set.stderr)
    );
    let get = etcdctl(&["get", "/etcdctl"]);
    assert!(
        get.status.success(),
        "etcdctl get: {}",
        String::from_utf8_lossy(&get.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&get.stdout), "hello\n");
    let health = etcdctl(&["cluster-health"]);
    assert!(
        String::from_utf8_lossy(&health.stdout).contains("cluster is healthy"),
        "etcdctl cluster-health: {}{}",
        String::from_utf8_lossy(&health.stdout),
        String::from_utf8_lossy(&health.stderr)
    );
}

#[test]
fn auto_tls_serves_https_with_a_generated_certificate() {
    let data = tempfile::tempdir().expect("tempdir");
    let mut kvd = https_kvd(data.path(), &["--auto-tls".to_string()]);
    wait_healthy(&mut kvd, &https(ServerVerification::None, None));
    let fixtures = data.path().join("node1").join("fixtures").join("client");
    assert!(fixtures.join("cert.pem").exists() && fixtures.join("key.pem").exists());

    for api in ["http", "grpc"] {
        let kvctl = |args: &[&str]| {
            Command::new(util::kvctl_bin())
                .args(["--endpoints", &kvd.url, "--api", api])
                .args(args)
                .output()
                .expect("run kvctl")
        };
        let set = kvctl(&["--insecure-skip-tls-verify", "set", "/auto", api]);
        assert!(
            set.status.success(),
            "kvctl --api {api}: {}",
            String::from_utf8_lossy(&set.stderr)
        );
        let get = kvctl(&["--insecure-skip-tls-verify", "get", "/auto"]);
        assert_eq!(String::from_utf8_lossy(&get.stdout), format!("{api}\n"));
        // A self-signed certificate is not trusted without the flag.
        assert!(!kvctl(&["get", "/auto"]).status.success());
    }
}

/// A TLS 1.2-only client config offering just `suite`, trusting the test CA and presenting
/// `client`'s certificate.
fn tls12_client(pki: &Pki, suite: rustls::SupportedCipherSuite) -> rustls::ClientConfig {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![suite];
    let roots = kv_client::tls::load_roots("--ca-file", &pki.ca()).expect("roots");
    let id = pki.pair("client");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .expect("TLS 1.2")
        .with_root_certificates(roots)
        .with_client_auth_cert(
            kv_client::tls::load_certs("--cert-file", &id.cert).expect("certs"),
            kv_client::tls::load_key("--key-file", &id.key).expect("key"),
        )
        .expect("client identity");
    config.alpn_protocols = vec![b"h2".to_vec()];
    config
}

#[test]
fn revoked_client_certificates_and_unlisted_cipher_suites_are_refused() {
    use rustls::crypto::ring::cipher_suite::{
        TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    };
    let pki = pki();
    let data = tempfile::tempdir().expect("tempdir");
    let mut flags = client_auth_flags(&pki);
    flags.extend([
        "--client-crl-file".into(),
        s(&pki.path("crl.pem")),
        // Go's spelling of a ChaCha20 suite (no `_SHA256`) is accepted too.
        "--cipher-suites".into(),
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305".into(),
    ]);
    let mut kvd = https_kvd(data.path(), &flags);
    let good = https(ca_verify(&pki), Some(&pki.pair("client")));
    wait_healthy(&mut kvd, &good);
    let r = good
        .put(format!("{}/v2/keys/crl", kvd.url))
        .form(&[("value", "ok")])
        .send()
        .expect("PUT with a valid certificate");
    assert_eq!(r.status(), 201);

    // The revoked certificate (same CA, listed in the CRL) is refused at the handshake.
    let revoked = https(ca_verify(&pki), Some(&pki.pair("revoked")));
    let refused = revoked.get(format!("{}/v2/keys/crl", kvd.url)).send();
    assert!(refused.is_err(), "a revoked certificate got {refused:?}");
    let tls = kv_client::tls::client_config(&ca_verify(&pki), Some(&pki.pair("revoked")), &[b"h2"])
        .expect("TLS client");
    assert!(
        h2_over_tls(&kvd.url, tls).is_err(),
        "a revoked certificate was accepted over h2"
    );

    // TLS 1.2 with a listed suite is served; with an unlisted one the handshake fails.
    h2_over_tls(
        &kvd.url,
        tls12_client(&pki, TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256),
    )
    .expect("a listed TLS 1.2 suite");
    let unlisted = h2_over_tls(
        &kvd.url,
        tls12_client(&pki, TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384),
    );
    assert!(unlisted.is_err(), "an unlisted TLS 1.2 suite was accepted");
}

/// Runs kvd with `args` expecting it to fail during start-up; returns its stderr.
fn start_failure(args: Vec<String>) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("stderr");
    let mut child = Command::new(util::kvd_bin())
        .args(&args)
        .env_remove("ETCD_NAME")
        .env_remove("ETCD_DATA_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("start kvd");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("kvd kept running with {args:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!status.success(), "kvd exited 0 with {args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "kvd panicked: {stderr}");
    stderr
}

#[test]
fn bad_certificate_files_are_clear_errors() {
    let pki = pki();
    let data = tempfile::tempdir().expect("tempdir");
    let server = pki.pair("server");
    let client = pki.pair("client");
    let garbage = pki.path("garbage.pem");
    std::fs::write(&garbage, "not a key\n").expect("write");
    let missing = pki.path("missing.pem");
    let base = |cert: &Path, key: &Path| {
        let client_url = format!("https://127.0.0.1:{}", util::free_port());
        let peer = format!("http://127.0.0.1:{}", util::free_port());
        let mut a = member_args(
            "node1",
            data.path(),
            &client_url,
            &peer,
            &format!("node1={peer}"),
        );
        a.extend(["--cert-file".into(), s(cert), "--key-file".into(), s(key)]);
        a
    };

    let err = start_failure(base(&server.cert, &garbage));
    assert!(
        err.contains("--key-file")
            && err.contains(&s(&garbage))
            && err.contains("no PEM private key"),
        "{err}"
    );
    let err = start_failure(base(&missing, &server.key));
    assert!(
        err.contains("--cert-file") && err.contains(&s(&missing)),
        "{err}"
    );
    let err = start_failure(base(&garbage, &server.key));
    assert!(
        err.contains("--cert-file") && err.contains("no PEM certificate"),
        "{err}"
    );
    let err = start_failure(base(&server.cert, &client.key));
    assert!(err.contains("does not belong to the certificate"), "{err}");
    let mut a = base(&server.cert, &server.key);
    a.push("--client-cert-auth".into());
    let err = start_failure(a);
    assert!(err.contains("--trusted-ca-file"), "{err}");
    // A CRL needs client certificates to check; a CRL file must hold a CRL.
    let mut a = base(&server.cert, &server.key);
    a.extend(["--client-crl-file".into(), s(&pki.path("crl.pem"))]);
    let err = start_failure(a);
    assert!(
        err.contains("--client-crl-file") && err.contains("trusted CA"),
        "{err}"
    );
    let mut a = base(&server.cert, &server.key);
    a.extend([
        "--trusted-ca-file".into(),
        s(&pki.ca()),
        "--client-crl-file".into(),
        s(&garbage),
    ]);
    let err = start_failure(a);
    assert!(
        err.contains("--client-crl-file") && err.contains(&s(&garbage)),
        "{err}"
    );
    // An allowed peer CN needs peer certificates to check (auto TLS verifies none).
    let mut a = base(&server.cert, &server.key);
    let peer_at = a
        .iter()
        .position(|x| x == "--listen-peer-urls")
        .expect("peer flag")
        + 1;
    let (http_peer, https_peer) = (
        a[peer_at].clone(),
        a[peer_at].replace("http://", "https://"),
    );
    for x in &mut a {
        *x = x.replace(&http_peer, &https_peer);
    }
    a.extend(["--peer-auto-tls", "--peer-cert-allowed-cn", "peer"].map(String::from));
    let err = start_failure(a);
    assert!(err.contains("allowed CN or host name"), "{err}");
    // An unknown or unsupported cipher suite is named, with the supported ones.
    let mut a = base(&server.cert, &server.key);
    a.extend([
        "--cipher-suites".into(),
        "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA".into(),
    ]);
    let err = start_failure(a);
    assert!(
        err.contains("--cipher-suites")
            && err.contains("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA")
            && err.contains("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"),
        "{err}"
    );
    // https without any certificate.
    let mut a = base(&server.cert, &server.key);
    a.truncate(a.len() - 4);
    let err = start_failure(a);
    assert!(
        err.contains("--cert-file") && err.contains("--auto-tls"),
        "{err}"
    );
}

/// Opens TLS to `url` with `config` as an HTTP/2 client and reads the server's first
/// frame: succeeds only if the server completed the handshake and accepted this client.
fn h2_over_tls(url: &str, config: rustls::ClientConfig) -> Result<(), String> {
    use std::io::{Read as _, Write as _};
    let (mut conn, mut tcp) = tls_connect(url, config)?;
    let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .map_err(|e| e.to_string())?;
    tls.flush().map_err(|e| e.to_string())?;
    let mut frame = [0u8; 9];
    tls.read_exact(&mut frame).map_err(|e| e.to_string())?;
    Ok(())
}

/// A TCP connection to the `https://` `url` (5 s read timeout) and a TLS client
/// connection over it with `config`, for server name 127.0.0.1; no byte is sent yet.
fn tls_connect(
    url: &str,
    config: rustls::ClientConfig,
) -> Result<(rustls::ClientConnection, std::net::TcpStream), String> {
    let addr = url.trim_start_matches("https://");
    let tcp = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    Ok((conn, tcp))
}

/// Starts three members on https:// peer URLs with `peer_flags(i)` and checks a write on
/// one is read on the others; returns the members and their peer URLs.
fn three_members_over_peer_tls(
    data: &Path,
    peer_flags: impl Fn(usize) -> Vec<String>,
) -> (Vec<Server>, Vec<String>) {
    let specs: Vec<(String, String, String)> = (1..=3)
        .map(|i| {
            (
                format!("m{i}"),
                format!("http://127.0.0.1:{}", util::free_port()),
                format!("https://127.0.0.1:{}", util::free_port()),
            )
        })
        .collect();
    let cluster = specs
        .iter()
        .map(|(n, _, p)| format!("{n}={p}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut servers: Vec<Server> = specs
        .iter()
        .enumerate()
        .map(|(i, (n, c, p))| {
            let mut args = member_args(n, data, c, p, &cluster);
            args.extend(peer_flags(i + 1));
            util::kvd_spawn(args, c.clone(), p.clone())
        })
        .collect();
    for s in &mut servers {
        s.wait_healthy("kvd member");
    }
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("http client");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = http
            .put(format!("{}/v2/keys/replicated", servers[0].url))
            .form(&[("value", "over-peer-tls")])
            .send();
        if r.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no write acknowledged within 20 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for s in &servers[1..] {
        let body: serde_json::Value = http
            .get(format!("{}/v2/keys/replicated?quorum=true", s.url))
            .send()
            .expect("quorum GET")
            .json()
            .expect("json");
        assert_eq!(body["node"]["value"], "over-peer-tls", "{}", s.log());
    }
    let peers = specs.into_iter().map(|(_, _, p)| p).collect();
    (servers, peers)
}

#[test]
fn three_members_replicate_over_peer_tls_with_client_certs_and_a_crl() {
    let pki = pki();
    let data = tempfile::tempdir().expect("tempdir");
    let (_servers, peers) = three_members_over_peer_tls(data.path(), |i| {
        let mut flags = peer_auth_flags(&pki, &format!("peer{i}"));
        flags.extend(["--peer-crl-file".into(), s(&pki.path("crl.pem"))]);
        flags
    });
    // The peer port is TLS and requires a certificate from the peer CA.
    let peer1 = pki.pair("peer1");
    let with =
        kv_client::tls::client_config(&ca_verify(&pki), Some(&peer1), &[b"h2"]).expect("TLS");
    h2_over_tls(&peers[1], with).expect("a peer certificate is accepted");
    let without = kv_client::tls::client_config(&ca_verify(&pki), None, &[b"h2"]).expect("TLS");
    assert!(
        h2_over_tls(&peers[1], without).is_err(),
        "a peer without a certificate was served"
    );
    // A certificate from the same CA that the peer CRL revokes is refused too.
    let revoked = pki.pair("revoked");
    let revoked =
        kv_client::tls::client_config(&ca_verify(&pki), Some(&revoked), &[b"h2"]).expect("TLS");
    assert!(
        h2_over_tls(&peers[1], revoked).is_err(),
        "a revoked peer certificate was served"
    );
}

/// One member on an https:// peer URL requiring peer certificates, with `extra` flags;
/// returns it and its peer URL.
fn peer_tls_member(pki: &Pki, data: &Path, extra: &[&str]) -> (Server, String) {
    let client = format!("http://127.0.0.1:{}", util::free_port());
    let peer = format!("https://127.0.0.1:{}", util::free_port());
    let mut args = member_args("m1", data, &client, &peer, &format!("m1={peer}"));
    args.extend(peer_auth_flags(pki, "peer1"));
    args.extend(extra.iter().map(|a| a.to_string()));
    let mut server = util::kvd_spawn(args, client, peer.clone());
    server.wait_healthy("kvd member on an https peer URL");
    (server, peer)
}

#[test]
fn peer_certificates_can_be_limited_to_a_cn_or_a_host_name() {
    let pki = pki();
    let peer_client = |name: &str| {
        kv_client::tls::client_config(&ca_verify(&pki), Some(&pki.pair(name)), &[b"h2"])
            .expect("TLS")
    };
    let data = tempfile::tempdir().expect("tempdir");
    let (_m, peer) = peer_tls_member(&pki, data.path(), &["--peer-cert-allowed-cn", "peer2"]);
    h2_over_tls(&peer, peer_client("peer2")).expect("the allowed CN is accepted");
    assert!(
        h2_over_tls(&peer, peer_client("peer3")).is_err(),
        "a peer certificate with another CN was served"
    );
    let data = tempfile::tempdir().expect("tempdir");
    let (_m, peer) = peer_tls_member(
        &pki,
        data.path(),
        &["--peer-cert-allowed-hostname", "localhost"],
    );
    h2_over_tls(&peer, peer_client("peer3")).expect("a certificate for localhost is accepted");
    assert!(
        h2_over_tls(&peer, peer_client("elsewhere")).is_err(),
        "a peer certificate for another host was served"
    );
}

#[test]
fn three_members_replicate_over_peer_auto_tls() {
    let data = tempfile::tempdir().expect("tempdir");
    let (_servers, peers) =
        three_members_over_peer_tls(data.path(), |_| vec!["--peer-auto-tls".into()]);
    let fixtures = data.path().join("m1").join("fixtures").join("peer");
    assert!(fixtures.join("cert.pem").exists() && fixtures.join("key.pem").exists());
    // TLS with a self-signed certificate: encrypted, not verified (as etcd's auto TLS).
    let any =
        kv_client::tls::client_config(&ServerVerification::None, None, &[b"h2"]).expect("TLS");
    h2_over_tls(&peers[0], any).expect("the peer port serves TLS");
}

/// The certificate the TLS server at `url` presents on a new connection (a new client
/// configuration, so no session is resumed), to a client trusting the test CA and
/// presenting `client`.
fn served_certificate(pki: &Pki, url: &str, client: &CertKey) -> Result<Vec<u8>, String> {
    let config = kv_client::tls::client_config(&ca_verify(pki), Some(client), &[b"h2"])
        .map_err(|e| e.to_string())?;
    let (mut conn, mut tcp) = tls_connect(url, config)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).map_err(|e| e.to_string())?;
    }
    let leaf = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or("no server certificate")?;
    Ok(leaf.to_vec())
}

/// The DER of the (first) certificate in `path`.
fn der_of(path: &Path) -> Vec<u8> {
    kv_client::tls::load_certs("--cert-file", path).expect("certificate")[0].to_vec()
}

/// Polls `done` until it holds; panics after 20 s with `what` and kvd's log.
fn eventually(server: &Server, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "not within 20 s: {what}; kvd's log:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn renewed_certificates_and_crls_are_used_without_a_restart() {
    let pki = pki();
    // The files kvd is given, replaced the way renewal tools do (a rename over them).
    let live = tempfile::tempdir().expect("tempdir");
    let install = |from: &str, to: &str| {
        let tmp = live.path().join(format!("{to}.new"));
        std::fs::copy(pki.path(from), &tmp).expect("copy");
        std::fs::rename(&tmp, live.path().join(to)).expect("rename");
    };
    install("server.pem", "cert.pem");
    install("server-key.pem", "key.pem");
    install("peer1.pem", "peer.pem");
    install("peer1-key.pem", "peer-key.pem");
    install("crl-empty.pem", "crl.pem");
    let f = |name: &str| s(&live.path().join(name));
    let data = tempfile::tempdir().expect("tempdir");
    let client_url = format!("https://127.0.0.1:{}", util::free_port());
    let peer_url = format!("https://127.0.0.1:{}", util::free_port());
    let mut args = member_args(
        "node1",
        data.path(),
        &client_url,
        &peer_url,
        &format!("node1={peer_url}"),
    );
    args.extend([
        "--cert-file".into(),
        f("cert.pem"),
        "--key-file".into(),
        f("key.pem"),
        "--trusted-ca-file".into(),
        s(&pki.ca()),
        "--client-crl-file".into(),
        f("crl.pem"),
        "--peer-cert-file".into(),
        f("peer.pem"),
        "--peer-key-file".into(),
        f("peer-key.pem"),
        "--peer-trusted-ca-file".into(),
        s(&pki.ca()),
        "--peer-client-cert-auth".into(),
    ]);
    let mut kvd = util::kvd_spawn(args, client_url, peer_url);
    let client = pki.pair("client");
    let http = https(ca_verify(&pki), Some(&client));
    wait_healthy(&mut kvd, &http);
    let pid = kvd.pid();
    let peer = pki.pair("peer3");
    let served = |url: &str, id: &CertKey| served_certificate(&pki, url, id).unwrap_or_default();
    assert_eq!(served(&kvd.url, &client), der_of(&pki.path("server.pem")));
    assert_eq!(served(&kvd.peer_url, &peer), der_of(&pki.path("peer1.pem")));
    let revoked = || {
        let tls =
            kv_client::tls::client_config(&ca_verify(&pki), Some(&pki.pair("revoked")), &[b"h2"])
                .expect("TLS client");
        h2_over_tls(&kvd.url, tls)
    };
    revoked().expect("`revoked` is served while the CRL does not list it");

    // A broken renewal (a key file without a key): kvd warns, naming the file, and keeps
    // presenting the certificate it has.
    std::fs::write(live.path().join("key.pem"), "not a key\n").expect("write");
    eventually(&kvd, "a warning about the broken key file", || {
        // The files are looked at on a handshake.
        served(&kvd.url, &client);
        let log = kvd.log();
        log.contains(&f("key.pem")) && log.contains("still using the previous one")
    });
    assert_eq!(served(&kvd.url, &client), der_of(&pki.path("server.pem")));
    let r = http
        .get(format!("{}/health", kvd.url))
        .send()
        .expect("health");
    assert!(r.status().is_success());

    // The renewal: new connections get the new certificates, on both ports.
    install("renewed-key.pem", "key.pem");
    install("renewed.pem", "cert.pem");
    install("peer2.pem", "peer.pem");
    install("peer2-key.pem", "peer-key.pem");
    let renewed = der_of(&pki.path("renewed.pem"));
    eventually(&kvd, "the renewed client-port certificate", || {
        served(&kvd.url, &client) == renewed
    });
    let peer2 = der_of(&pki.path("peer2.pem"));
    eventually(&kvd, "the renewed peer-port certificate", || {
        served(&kvd.peer_url, &peer) == peer2
    });
    // A new CRL revoking `revoked` applies to new connections too.
    install("crl.pem", "crl.pem");
    eventually(&kvd, "the new CRL refusing `revoked`", || {
        revoked().is_err()
    });

    // The same process served all of it, and still does.
    assert_eq!(kvd.pid(), pid);
    let r = http
        .put(format!("{}/v2/keys/renewed", kvd.url))
        .form(&[("value", "yes")])
        .send()
        .expect("PUT after the renewal");
    assert_eq!(r.status(), 201);
}
