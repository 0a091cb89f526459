//! Test stores: an in-process etcd v2 server on an ephemeral port.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fleet::store::etcd::EtcdStore;
use kv_server::backend::memory::{MemoryBackend, MemoryConfig};

/// A single-member in-memory store serving the etcd v2 API on 127.0.0.1:0, and an
/// [`EtcdStore`] speaking to it. The server stops when the runtime does.
pub(crate) async fn etcd_store() -> EtcdStore {
    etcd_store_with_backend().await.0
}

/// [`etcd_store`], with the backend behind it (for tests that also use it directly, with
/// transactions).
pub(crate) async fn etcd_store_with_backend() -> (EtcdStore, Arc<MemoryBackend>) {
    let backend = Arc::new(MemoryBackend::ephemeral(MemoryConfig {
        id: 1,
        cluster_id: 2,
        name: "fleet-test".into(),
        peer_urls: vec!["http://127.0.0.1:2380".into()],
        client_urls: vec![],
        data_dir: Default::default(),
    }));
    let router = kv_server::http::router(backend.clone(), kv_server::http::Limits::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(kv_server::http::serve(
        listener,
        router,
        std::future::pending(),
    ));
    (
        EtcdStore::new(&[format!("http://{addr}")]).unwrap(),
        backend,
    )
}

/// Polls `f` until it returns `Some`, or panics with `what` after `timeout`.
pub(crate) async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
