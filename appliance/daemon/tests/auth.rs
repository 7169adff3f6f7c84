//! Authentication end to end against a running `dwd --demo`: every API endpoint refuses
//! missing and wrong credentials over HTTPS; login works, is rate-limited, and sessions and API
//! tokens can be revoked; the certificate is verified by its fingerprint; the Unix socket is
//! owner-only; and one S3 key cannot read another's bucket until it is granted access.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::{Daemon, require, run, tempdir};
use dw_api::client::{Client, Trust, parse_fingerprint};
use serde_json::{Value, json};

fn https(d: &Daemon, token: Option<&str>) -> Client {
    let fp = parse_fingerprint(d.demo["api"]["tls_fingerprint_sha256"].as_str().unwrap()).unwrap();
    Client::https(&d.https(), Trust::Fingerprint(fp), token.map(str::to_owned)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_needs_credentials() {
    let state = tempdir();
    let d = Daemon::start(&state.path().join("dw"), &[], &[]);

    // The socket is owner-only.
    let mode = std::fs::metadata(d.socket()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket mode {mode:o}");

    // Every endpoint but login: no token, a made-up token, a session-shaped token.
    for (label, token) in [
        ("no token", None),
        ("unknown API token", Some("dwt_0123456789ab_00ff")),
        ("unknown session", Some("dws_00112233")),
        ("garbage", Some("hunter2")),
    ] {
        let c = https(&d, token);
        for e in dw_api::ENDPOINTS.iter().filter(|e| e.auth) {
            let path = dw_api::fill_path(e.path, &["x", "y"]);
            let body = matches!(e.method, dw_api::Method::Post | dw_api::Method::Put)
                .then(|| b"{}".to_vec());
            let (status, bytes) = c.raw(e.method, &path, body).await.unwrap();
            assert_eq!(
                status,
                401,
                "{label}: {} {path} answered {status}: {}",
                e.method.as_str(),
                String::from_utf8_lossy(&bytes)
            );
            let v: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(v["code"], "unauthorized", "{path}: {v}");
        }
    }

    // Login with the admin account gives a working session; logout ends it.
    let user = d.demo["api"]["admin_user"].as_str().unwrap().to_owned();
    let password = d.demo["api"]["admin_password"].as_str().unwrap().to_owned();
    let anon = https(&d, None);
    let login: dw_api::types::LoginResponse = anon
        .call(
            "login",
            &[],
            Some(&dw_api::types::LoginRequest {
                username: user.clone(),
                password: password.clone(),
            }),
        )
        .await
        .unwrap();
    let admin = https(&d, Some(&login.token));
    let h: dw_api::types::Health = admin.call::<(), _>("health", &[], None).await.unwrap();
    assert_eq!(h.status, "ok");

    // An API token made over the socket works over HTTPS until it is revoked.
    let t = d.api_ok("POST", "/api/v1/tokens", Some(&json!({"name": "ci"})));
    let tok = t["token"].as_str().unwrap().to_owned();
    let id = t["info"]["id"].as_str().unwrap().to_owned();
    let ci = https(&d, Some(&tok));
    let _: Value = ci.call::<(), _>("list_arrays", &[], None).await.unwrap();
    d.api_ok("DELETE", &format!("/api/v1/tokens/{id}"), None);
    let e = ci
        .call::<(), Value>("list_arrays", &[], None)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(401), "{e}");

    // A wrong fingerprint is refused before anything is sent.
    let bad = Client::https(
        &d.https(),
        Trust::Fingerprint([7; 32]),
        Some(login.token.clone()),
    )
    .unwrap();
    let e = bad
        .call::<(), Value>("health", &[], None)
        .await
        .unwrap_err();
    assert!(matches!(e, dw_api::ClientError::Tls { .. }), "{e}");

    // Failed logins are rate-limited per address (default 10 a minute), with Retry-After.
    let mut limited = false;
    for _ in 0..12 {
        let r = anon
            .call::<_, Value>(
                "login",
                &[],
                Some(&dw_api::types::LoginRequest {
                    username: user.clone(),
                    password: "wrong password, surely".into(),
                }),
            )
            .await;
        match r.unwrap_err().status() {
            Some(401) => {}
            Some(429) => {
                limited = true;
                break;
            }
            other => panic!("unexpected login answer {other:?}"),
        }
    }
    assert!(limited, "failed logins were never rate-limited");
    let e = anon
        .call::<_, Value>(
            "login",
            &[],
            Some(&dw_api::types::LoginRequest {
                username: user.clone(),
                password: password.clone(),
            }),
        )
        .await
        .unwrap_err();
    assert_eq!(
        e.status(),
        Some(429),
        "the right password from a limited address: {e}"
    );
    // The session made before still works; logout ends it.
    let _: Value = admin.call::<(), _>("info", &[], None).await.unwrap();
    let _: Value = admin.call::<(), _>("logout", &[], None).await.unwrap();
    let e = admin
        .call::<(), Value>("info", &[], None)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(401));

    // Bad JSON and unknown routes get our error body, never a crash.
    let (st, v) = d.api("POST", "/api/v1/containers", Some(&json!({"nme": 1})));
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["code"], "bad_request");
    let (st, v) = d.api("GET", "/api/v1/../../etc/passwd", None);
    assert_eq!(st, 404, "{v}");
    let (st, _) = d.api("DELETE", "/api/v1/health", None);
    assert_eq!(st, 405);

    // Oversized bodies and header floods are refused before any work is done.
    let big = json!({"name": "x".repeat(2 << 20), "kind": "bucket"});
    let (st, v) = d.api("POST", "/api/v1/containers", Some(&big));
    assert_eq!(st, 413, "{v}");
    let status = raw_status(
        &d.socket(),
        &format!(
            "GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-Flood: {}\r\n\r\n",
            "a".repeat(200_000)
        ),
    );
    assert!(
        status == 431 || status == 0,
        "a 200 KB header answered {status}"
    );
    let (st, _) = d.api("GET", "/api/v1/health", None);
    assert_eq!(st, 200, "the daemon still answers");
}

/// Sends raw bytes on the socket; the status of the answer, or 0 if the connection was closed.
fn raw_status(socket: &str, request: &str) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let _ = s.write_all(request.as_bytes());
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    common::parse_response(&out).0
}

fn aws(d: &Daemon, key: &(String, String), dir: &Path) -> Command {
    let mut c = Command::new("aws");
    c.env("AWS_ACCESS_KEY_ID", &key.0)
        .env("AWS_SECRET_ACCESS_KEY", &key.1)
        .env("AWS_CONFIG_FILE", dir.join("none"))
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.join("none"))
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env_remove("AWS_PROFILE")
        .args(["--endpoint-url", &d.s3()]);
    c
}

#[test]
fn s3_keys_see_only_their_buckets_until_granted() {
    if !require(common::have_cmd("aws", "--version"), "aws CLI") {
        return;
    }
    let state = tempdir();
    let d = Daemon::start(&state.path().join("dw"), &[], &[]);
    let dir = tempdir();
    let owner = d.s3_keys();
    let k = d.api_ok("POST", "/api/v1/s3/keys", Some(&json!({"name": "other"})));
    let other = (
        k["info"]["access_key"].as_str().unwrap().to_owned(),
        k["secret_key"].as_str().unwrap().to_owned(),
    );
    let file = dir.path().join("f.txt");
    std::fs::write(&file, b"secret report").unwrap();
    let up = run(aws(&d, &owner, dir.path()).args([
        "s3",
        "cp",
        file.to_str().unwrap(),
        "s3://demo/f.txt",
    ]));
    assert!(up.0, "owner upload: {}", up.2);

    let denied = |what: &str, r: (bool, String, String)| {
        // HEAD answers carry no body: the CLI then only knows "403 Forbidden".
        let refused = r.2.contains("AccessDenied") || r.2.contains("(403)");
        assert!(!r.0 && refused, "{what} was not denied: {} {}", r.1, r.2);
    };
    let out = dir.path().join("out.txt");
    denied(
        "read",
        run(aws(&d, &other, dir.path()).args([
            "s3",
            "cp",
            "s3://demo/f.txt",
            out.to_str().unwrap(),
        ])),
    );
    denied(
        "list",
        run(aws(&d, &other, dir.path()).args(["s3", "ls", "s3://demo/"])),
    );

    // Read grant: reading works, writing still does not.
    d.api_ok(
        "PUT",
        &format!("/api/v1/s3/keys/{}/grants/demo", other.0),
        Some(&json!({"access": "read"})),
    );
    let r = run(aws(&d, &other, dir.path()).args([
        "s3",
        "cp",
        "s3://demo/f.txt",
        out.to_str().unwrap(),
    ]));
    assert!(r.0, "granted read failed: {}", r.2);
    assert_eq!(std::fs::read(&out).unwrap(), b"secret report");
    denied(
        "write with read grant",
        run(aws(&d, &other, dir.path()).args([
            "s3",
            "cp",
            file.to_str().unwrap(),
            "s3://demo/g.txt",
        ])),
    );

    // Revoked: denied again. A deleted key is unknown.
    d.api_ok(
        "PUT",
        &format!("/api/v1/s3/keys/{}/grants/demo", other.0),
        Some(&json!({"access": "none"})),
    );
    denied(
        "read after revoke",
        run(aws(&d, &other, dir.path()).args([
            "s3",
            "cp",
            "s3://demo/f.txt",
            out.to_str().unwrap(),
        ])),
    );
    d.api_ok("DELETE", &format!("/api/v1/s3/keys/{}", other.0), None);
    let r = run(aws(&d, &other, dir.path()).args(["s3", "ls"]));
    assert!(
        !r.0 && r.2.contains("InvalidAccessKeyId"),
        "deleted key: {}",
        r.2
    );

    // Grants name existing keys and buckets and known levels only.
    let (st, _) = d.api(
        "PUT",
        &format!("/api/v1/s3/keys/{}/grants/demo", owner.0),
        Some(&json!({"access": "root"})),
    );
    assert_eq!(st, 400);
    let (st, _) = d.api(
        "PUT",
        &format!("/api/v1/s3/keys/{}/grants/nope", owner.0),
        Some(&json!({"access": "read"})),
    );
    assert_eq!(st, 404);
}
