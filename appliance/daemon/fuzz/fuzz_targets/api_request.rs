//! Arbitrary HTTP requests (method, path and query, body) through the management API's router,
//! as an HTTPS client with a valid token would send them, against a live appliance with a
//! file-backed VDE, a bucket and a volume. Every answer must be a well-formed response; errors
//! must carry the API's JSON error body; nothing may panic.
//!
//! Not fuzzed here (their bodies are in `api_bodies`): endpoints that write to devices named in
//! the request (array and VDE creation, spares, replacement — a fuzzer must not overwrite files
//! on the fuzzing machine), and those dominated by Argon2 (login, unlock, passphrase slots),
//! which would slow the fuzzer to a crawl.

#![no_main]

use std::sync::{Arc, OnceLock};

use dw_daemon::api::{Transport, router};
use dw_daemon::{Appliance, Config};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

struct World {
    _dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    router: axum::Router,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = Config::default();
        cfg.state_dir = dir.path().join("state");
        cfg.unlock.order.clear();
        let app: Arc<Appliance> = Appliance::start(cfg).expect("start");
        let file = dir.path().join("vde.img");
        app.create_vde(&dw_api::types::CreateVdeRequest {
            name: "fz".into(),
            backing: dw_api::types::VdeBacking::File {
                path: file.display().to_string(),
                size_bytes: 256 << 20,
            },
            profile: Some("balanced".into()),
            admin_contact: String::new(),
            passphrase: None,
            tpm: None,
        })
        .expect("vde");
        for (name, kind, size) in [("bkt", "bucket", None), ("vol", "volume", Some(8u64 << 20))] {
            app.create_container(
                &dw_api::types::CreateContainerRequest {
                    name: name.into(),
                    kind: kind.into(),
                    vde: None,
                    size_bytes: size,
                    policy: None,
                    record_size: None,
                    owner: None,
                },
                false,
            )
            .expect("container");
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        // The socket transport: same routes and handlers as HTTPS after authentication.
        let router = router(app, Transport::Socket);
        World {
            _dir: dir,
            rt,
            router,
        }
    })
}

fn skipped(method: &http::Method, path: &str) -> bool {
    let p = path.split('?').next().unwrap_or("");
    let post = method == http::Method::POST;
    p.contains("/devices")
        || p.contains("/auth/login")
        || (post && (p.starts_with("/api/v1/arrays") || p == "/api/v1/vdes" || p == "/api/v1/vdes/"))
        || (post && (p.ends_with("/unlock") || p.ends_with("/slots") || p.ends_with("/reseal")))
        || p.contains("/users")
}

fuzz_target!(|data: &[u8]| {
    let Some((&m, rest)) = data.split_first() else {
        return;
    };
    let method = [
        http::Method::GET,
        http::Method::POST,
        http::Method::PUT,
        http::Method::DELETE,
    ][usize::from(m % 4)]
    .clone();
    let split = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
    let Ok(path) = std::str::from_utf8(&rest[..split]) else {
        return;
    };
    let body = rest.get(split + 1..).unwrap_or_default().to_vec();
    // Requests hyper would refuse never reach the router.
    let Ok(uri) = format!("/api/v1/{path}").parse::<http::Uri>() else {
        return;
    };
    if skipped(&method, uri.path()) {
        return;
    }
    let w = world();
    let req = http::Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body))
        .expect("request");
    let resp = w.rt.block_on(async {
        let r = w.router.clone().oneshot(req).await.expect("infallible");
        let status = r.status();
        let streaming = r
            .headers()
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        let bytes = if streaming {
            Vec::new()
        } else {
            r.into_body().collect().await.expect("body").to_bytes().to_vec()
        };
        (status, bytes)
    });
    let (status, bytes) = resp;
    assert!(status.as_u16() >= 200 && status.as_u16() < 600);
    if status.is_client_error() || status.is_server_error() {
        let e: dw_api::types::ErrorBody =
            serde_json::from_slice(&bytes).expect("error answers carry the error body");
        assert!(!e.code.is_empty() && !e.message.is_empty());
        // A fuzzed request must never find an internal error: that is a bug to look at.
        assert_ne!(status.as_u16(), 500, "internal error: {}", e.message);
    }
});
