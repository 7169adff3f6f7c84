//! Hostile and malformed requests over raw TCP: each gets a specific error, changes nothing in
//! the store, and the server keeps serving.

mod common;

use std::time::{Duration, Instant};

use common::{ALICE, BOB, raw, request_head, start, status_of};
use dw_s3::ObjectStore;
use dw_s3::S3Config;

const T: Duration = Duration::from_secs(10);

fn small_config() -> S3Config {
    S3Config {
        max_object_size: 1024 * 1024,
        request_timeout: Duration::from_secs(2),
        ..S3Config::default()
    }
}

/// Creates bucket `bkt` owned by ALICE with one object `keep`.
fn setup(s: &common::Server) {
    let r = raw(
        s.addr,
        request_head(
            Some(ALICE),
            "PUT",
            s.addr,
            "/bkt",
            &[("content-length", "0")],
        )
        .as_bytes(),
        false,
        T,
    );
    assert_eq!(status_of(&r), 200, "{r}");
    let mut req = request_head(
        Some(ALICE),
        "PUT",
        s.addr,
        "/bkt/keep",
        &[("content-length", "5")],
    )
    .into_bytes();
    req.extend_from_slice(b"hello");
    let r = raw(s.addr, &req, false, T);
    assert_eq!(status_of(&r), 200, "{r}");
    assert_eq!(s.store.object_count(), 1);
}

fn assert_unchanged(s: &common::Server) {
    assert_eq!(s.store.object_count(), 1, "the store changed");
    assert_eq!(s.store.used_bytes(), 5, "the store changed");
    let b = s.store.list_buckets().unwrap_or_default();
    assert_eq!(b.len(), 1);
}

/// Reads the object `setup` stored.
fn get_keep(addr: std::net::SocketAddr) -> String {
    raw(
        addr,
        request_head(Some(ALICE), "GET", addr, "/bkt/keep", &[]).as_bytes(),
        false,
        T,
    )
}

fn assert_alive(s: &common::Server) {
    let r = get_keep(s.addr);
    assert_eq!(status_of(&r), 200, "server no longer serves: {r}");
    assert!(r.ends_with("hello"), "{r}");
}

#[test]
fn truncated_body_with_half_close() {
    let s = start(small_config());
    setup(&s);
    let mut req = request_head(
        Some(ALICE),
        "PUT",
        s.addr,
        "/bkt/trunc",
        &[("content-length", "1000")],
    )
    .into_bytes();
    req.extend_from_slice(&[7u8; 500]);
    let r = raw(s.addr, &req, true, T);
    // Either an IncompleteBody error or a closed connection; never a stored object.
    assert!(r.is_empty() || status_of(&r) == 400, "{r}");
    assert_unchanged(&s);
    assert_alive(&s);
}

#[test]
fn stalled_body_times_out() {
    let s = start(small_config());
    setup(&s);
    let mut req = request_head(
        Some(ALICE),
        "PUT",
        s.addr,
        "/bkt/stall",
        &[("content-length", "100000")],
    )
    .into_bytes();
    req.extend_from_slice(&vec![7u8; 70_000]); // more than the inline threshold: the streaming path
    let t = Instant::now();
    let r = raw(s.addr, &req, false, Duration::from_secs(15));
    assert!(t.elapsed() < Duration::from_secs(12), "no timeout");
    assert_eq!(status_of(&r), 400, "{r}");
    assert!(r.contains("RequestTimeout"), "{r}");
    assert_unchanged(&s);
    assert_alive(&s);
}

#[test]
fn huge_header_is_refused() {
    let s = start(small_config());
    setup(&s);
    let big = "a".repeat(64 * 1024);
    let req = request_head(Some(ALICE), "GET", s.addr, "/bkt/keep", &[("x-big", &big)]);
    let r = raw(s.addr, req.as_bytes(), false, T);
    assert!(
        r.is_empty() || status_of(&r) == 431,
        "{}",
        &r[..r.len().min(200)]
    );
    assert_unchanged(&s);
    assert_alive(&s);
}

#[test]
fn too_many_headers_are_refused() {
    let s = start(small_config());
    setup(&s);
    let names: Vec<String> = (0..200).map(|i| format!("x-h{i}")).collect();
    let hs: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
    let req = request_head(None, "GET", s.addr, "/bkt/keep", &hs);
    let r = raw(s.addr, req.as_bytes(), false, T);
    assert!(
        r.is_empty() || status_of(&r) == 431,
        "{}",
        &r[..r.len().min(200)]
    );
    assert_alive(&s);
}

#[test]
fn path_tricks_are_opaque_keys() {
    let s = start(small_config());
    setup(&s);
    // `..` segments are key bytes, not directory traversal: stored under exactly that key.
    for (path, key) in [
        ("/bkt/a/../../etc/passwd", "a/../../etc/passwd"),
        ("/bkt//double//slash", "/double//slash"),
    ] {
        let mut req =
            request_head(Some(ALICE), "PUT", s.addr, path, &[("content-length", "3")]).into_bytes();
        req.extend_from_slice(b"xyz");
        let r = raw(s.addr, &req, false, T);
        assert_eq!(status_of(&r), 200, "{path}: {r}");
        assert!(
            s.store.head_object("bkt", key).is_ok(),
            "{path} not stored as {key:?}"
        );
    }
    assert_eq!(
        s.store.list_buckets().map(|b| b.len()).unwrap_or(0),
        1,
        "a bucket appeared"
    );
    // A path that names another "bucket" through `..` is just an invalid bucket name.
    let r = raw(
        s.addr,
        request_head(Some(ALICE), "GET", s.addr, "/../bkt/keep", &[]).as_bytes(),
        false,
        T,
    );
    assert_eq!(status_of(&r), 400, "{r}");
    assert_alive(&s);
}

#[test]
fn bad_keys_get_specific_errors() {
    let s = start(small_config());
    setup(&s);
    let long = format!("/bkt/{}", "k".repeat(2048));
    for (path, code) in [
        ("/bkt/a%00b", "InvalidArgument"),
        (long.as_str(), "KeyTooLongError"),
        ("/bkt/%ff%fe", "InvalidURI"),
    ] {
        let mut req =
            request_head(Some(ALICE), "PUT", s.addr, path, &[("content-length", "1")]).into_bytes();
        req.push(b'x');
        let r = raw(s.addr, &req, false, T);
        assert_eq!(status_of(&r), 400, "{}: {r}", &path[..path.len().min(40)]);
        assert!(r.contains(code), "{code}: {r}");
    }
    assert_unchanged(&s);
    assert_alive(&s);
}

#[test]
fn body_over_max_object_size() {
    let s = start(small_config());
    setup(&s);
    // Announced too large: refused before any byte is read.
    let req = request_head(
        Some(ALICE),
        "PUT",
        s.addr,
        "/bkt/big",
        &[("content-length", "2097152")],
    );
    let r = raw(s.addr, req.as_bytes(), false, T);
    assert_eq!(status_of(&r), 400, "{r}");
    assert!(r.contains("EntityTooLarge"), "{r}");
    // Chunked transfer without a length is refused as well.
    let req = request_head(
        Some(ALICE),
        "PUT",
        s.addr,
        "/bkt/chunked",
        &[("transfer-encoding", "chunked")],
    );
    let mut b = req.into_bytes();
    b.extend_from_slice(b"5\r\nhello\r\n0\r\n\r\n");
    let r = raw(s.addr, &b, false, T);
    assert!(matches!(status_of(&r), 400 | 411), "{r}");
    assert_unchanged(&s);
    assert_alive(&s);
}

#[test]
fn wrong_content_md5_is_bad_digest() {
    let s = start(small_config());
    setup(&s);
    // md5("hello") is XUFAKrxLKna5cZ2REBfFkg==; send other data under it.
    for body in [b"HELLO".as_slice(), &vec![1u8; 100_000]] {
        let len = body.len().to_string();
        let mut req = request_head(
            Some(ALICE),
            "PUT",
            s.addr,
            "/bkt/md5",
            &[
                ("content-length", &len),
                ("content-md5", "XUFAKrxLKna5cZ2REBfFkg=="),
            ],
        )
        .into_bytes();
        req.extend_from_slice(body);
        let r = raw(s.addr, &req, false, T);
        assert_eq!(status_of(&r), 400, "{r}");
        assert!(r.contains("BadDigest"), "{r}");
    }
    let mut req = request_head(
        Some(ALICE),
        "PUT",
        s.addr,
        "/bkt/md5",
        &[("content-length", "5"), ("content-md5", "not-base64")],
    )
    .into_bytes();
    req.extend_from_slice(b"hello");
    let r = raw(s.addr, &req, false, T);
    assert!(r.contains("InvalidDigest"), "{r}");
    assert_unchanged(&s);
    // The right digest works.
    let mut req = request_head(
        Some(ALICE),
        "PUT",
        s.addr,
        "/bkt/md5",
        &[
            ("content-length", "5"),
            ("content-md5", "XUFAKrxLKna5cZ2REBfFkg=="),
        ],
    )
    .into_bytes();
    req.extend_from_slice(b"hello");
    assert_eq!(status_of(&raw(s.addr, &req, false, T)), 200);
}

#[test]
fn garbage_is_answered_and_survived() {
    let s = start(small_config());
    setup(&s);
    for junk in [
        b"\x00\x01\x02\x03 not http\r\n\r\n".as_slice(),
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"GET /bkt?list-type=2&max-keys=abc HTTP/1.1\r\nHost: x\r\n\r\n",
        b"PUT /bkt/x HTTP/1.1\r\nHost: x\r\nAuthorization: AWS4-HMAC-SHA256 garbage\r\nContent-Length: 0\r\n\r\n",
    ] {
        let r = raw(s.addr, junk, true, T);
        let st = status_of(&r);
        assert!(r.is_empty() || (400..500).contains(&st), "{r}");
    }
    assert_unchanged(&s);
    assert_alive(&s);
}

#[test]
fn authentication_is_required_everywhere() {
    let s = start(small_config());
    setup(&s);
    for (method, path) in [
        ("GET", "/"),
        ("GET", "/bkt"),
        ("GET", "/bkt/keep"),
        ("HEAD", "/bkt/keep"),
        ("PUT", "/bkt/new"),
        ("DELETE", "/bkt/keep"),
        ("DELETE", "/bkt"),
        ("GET", "/bkt?uploads"),
        ("PUT", "/bkt?policy"),
        ("POST", "/bkt?delete"),
    ] {
        // Missing credentials.
        let r = raw(
            s.addr,
            request_head(None, method, s.addr, path, &[("content-length", "0")]).as_bytes(),
            false,
            T,
        );
        assert_eq!(status_of(&r), 403, "{method} {path} unsigned: {r}");
        // Unknown key.
        let r = raw(
            s.addr,
            request_head(
                Some(("AKIANOBODY", "x")),
                method,
                s.addr,
                path,
                &[("content-length", "0")],
            )
            .as_bytes(),
            false,
            T,
        );
        assert_eq!(status_of(&r), 403, "{method} {path} unknown key: {r}");
        // Right key, wrong secret.
        let r = raw(
            s.addr,
            request_head(
                Some((ALICE.0, "wrong")),
                method,
                s.addr,
                path,
                &[("content-length", "0")],
            )
            .as_bytes(),
            false,
            T,
        );
        assert_eq!(status_of(&r), 403, "{method} {path} wrong secret: {r}");
    }
    // A tampered signature.
    let head = request_head(Some(ALICE), "GET", s.addr, "/bkt/keep", &[]);
    let tampered = head.replacen("Signature=", "Signature=0", 1);
    let r = raw(s.addr, tampered.as_bytes(), false, T);
    assert_eq!(status_of(&r), 403, "{r}");
    assert!(r.contains("SignatureDoesNotMatch"), "{r}");
    // Another key cannot read, write or delete ALICE's bucket.
    for (method, path) in [
        ("GET", "/bkt/keep"),
        ("GET", "/bkt"),
        ("PUT", "/bkt/x"),
        ("DELETE", "/bkt/keep"),
    ] {
        let r = raw(
            s.addr,
            request_head(Some(BOB), method, s.addr, path, &[("content-length", "0")]).as_bytes(),
            false,
            T,
        );
        assert_eq!(status_of(&r), 403, "{method} {path} as BOB: {r}");
        assert!(r.contains("AccessDenied"), "{r}");
    }
    assert_unchanged(&s);
}

#[test]
fn unsupported_operations_are_not_implemented() {
    let s = start(small_config());
    setup(&s);
    let mut req = request_head(
        Some(ALICE),
        "PUT",
        s.addr,
        "/bkt?policy",
        &[("content-length", "2")],
    )
    .into_bytes();
    req.extend_from_slice(b"{}");
    let r = raw(s.addr, &req, false, T);
    assert_eq!(status_of(&r), 501, "{r}");
    assert!(r.contains("NotImplemented"), "{r}");
    for path in [
        "/bkt?lifecycle",
        "/bkt?website",
        "/bkt/keep?tagging",
        "/bkt?cors",
    ] {
        let r = raw(
            s.addr,
            request_head(Some(ALICE), "GET", s.addr, path, &[]).as_bytes(),
            false,
            T,
        );
        assert_eq!(status_of(&r), 501, "{path}: {r}");
    }
    assert_unchanged(&s);
    assert_alive(&s);
}

#[test]
fn observer_sees_operations() {
    let s = start(small_config());
    setup(&s);
    assert_alive(&s);
    // Events are emitted when response bodies finish, just after the client has them.
    let deadline = Instant::now() + T;
    let ev = loop {
        let ev = s
            .observer
            .events
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default();
        if ev.iter().any(|e| e.op == "GetObject") || Instant::now() > deadline {
            break ev;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        ev.iter().any(|e| e.op == "CreateBucket" && e.status == 200),
        "{ev:?}"
    );
    assert!(
        ev.iter().any(|e| e.op == "PutObject" && e.bytes_in == 5),
        "{ev:?}"
    );
    assert!(
        ev.iter().any(|e| e.op == "GetObject" && e.bytes_out == 5),
        "{ev:?}"
    );
}

#[test]
fn concurrency_limit_answers_slow_down() {
    let cfg = S3Config {
        max_concurrent_requests: 1,
        ..small_config()
    };
    let s = start(cfg);
    setup(&s);
    // Hold the only slot with a body that never completes, then try another request.
    let hold = || {
        use std::io::Write;
        let mut req = request_head(
            Some(ALICE),
            "PUT",
            s.addr,
            "/bkt/hold",
            &[("content-length", "100000")],
        )
        .into_bytes();
        req.extend_from_slice(&vec![1u8; 70_000]);
        let mut c = std::net::TcpStream::connect(s.addr).unwrap();
        c.write_all(&req).unwrap();
        c.set_nonblocking(true).unwrap();
        c
    };
    let mut holder = hold();
    // No sleep is long enough on a loaded machine for the holder's request to be in: until it
    // is, the probe is simply served. A probe can also take the slot first, so that the
    // holder is refused (it has an answer to read): then hold again.
    let deadline = Instant::now() + Duration::from_secs(15);
    let r = loop {
        let r = get_keep(s.addr);
        if status_of(&r) != 200 || Instant::now() > deadline {
            break r;
        }
        let mut b = [0u8; 1];
        match std::io::Read::read(&mut holder, &mut b) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            _ => holder = hold(),
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status_of(&r), 503, "{r}");
    assert!(r.contains("SlowDown"), "{r}");
    // Once the holder hangs up, its slot is freed as soon as the server reads the end.
    drop(holder);
    let deadline = Instant::now() + T;
    while Instant::now() < deadline {
        let r = get_keep(s.addr);
        if status_of(&r) == 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_alive(&s);
}

/// botocore sends every PUT with `Expect: 100-continue`; refused before the content is read, it
/// does not send the content and reuses the connection unless the answer says `Connection:
/// close`. The server must say so and close: otherwise it takes the first byte of the next
/// request as the announced content (the next request then fails as `UT /…`).
#[test]
fn answer_before_content_closes_the_connection() {
    use std::io::{Read, Write};
    let s = start(small_config());
    setup(&s);
    let mut c = std::net::TcpStream::connect(s.addr).unwrap();
    c.set_read_timeout(Some(T)).unwrap();
    let put = request_head(
        Some(BOB),
        "PUT",
        s.addr,
        "/bkt/stolen",
        &[("content-length", "1"), ("expect", "100-continue")],
    );
    c.write_all(put.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !common::response_complete(&answer) {
        let n = c.read(&mut buf).unwrap();
        assert!(n > 0, "closed without an answer");
        answer.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert_eq!(status_of(&text), 403, "{text}");
    assert!(text.contains("\r\nconnection: close\r\n"), "{text}");
    // A client that reuses the connection anyway gets no answer, never a misparsed one.
    let get = request_head(Some(ALICE), "GET", s.addr, "/bkt/keep", &[]);
    let _ = c.write_all(get.as_bytes());
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    assert!(
        rest.is_empty(),
        "answered on a connection it said it would close: {}",
        String::from_utf8_lossy(&rest)
    );
    assert_unchanged(&s);
    assert_alive(&s);
}
