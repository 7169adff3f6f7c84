//! Shared by the daemon's end-to-end tests: start a real `dwd --demo` on file-backed drives in
//! a temporary directory (every listener on a free loopback port), talk to it, stop it.

#![allow(dead_code, clippy::missing_panics_doc)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Tests that need a tool fail (instead of skipping) under CI, which sets DW_REQUIRE_ALL_TESTS=1.
pub fn require(ok: bool, what: &str) -> bool {
    if ok {
        return true;
    }
    assert!(
        !std::env::var("DW_REQUIRE_ALL_TESTS").is_ok_and(|v| v == "1"),
        "required test dependency missing: {what}"
    );
    eprintln!("SKIPPED: {what} is not installed");
    false
}

/// Whether `cmd arg` runs.
pub fn have_cmd(cmd: &str, arg: &str) -> bool {
    Command::new(cmd)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Runs a command, returning (success, stdout, stderr).
pub fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs a command that must succeed; returns stdout.
pub fn ok(label: &str, cmd: &mut Command) -> String {
    let (good, out, err) = run(cmd);
    assert!(good, "{label} failed:\nstdout: {out}\nstderr: {err}");
    out
}

/// A running demo daemon.
pub struct Daemon {
    pub dir: PathBuf,
    pub child: Option<Child>,
    pub demo: Value,
    pub extra: Vec<String>,
    pub env: Vec<(String, String)>,
    log: PathBuf,
}

impl Daemon {
    /// Starts `dwd --demo` in `dir` with extra arguments and environment.
    pub fn start(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut d = Self {
            dir: dir.to_owned(),
            child: None,
            demo: Value::Null,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            log: dir.join("dwd.log"),
        };
        d.spawn();
        d
    }

    fn spawn(&mut self) {
        std::fs::create_dir_all(&self.dir).unwrap();
        let _ = std::fs::remove_file(self.dir.join("demo.json"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dwd"));
        cmd.arg("--demo")
            .arg("--state-dir")
            .arg(&self.dir)
            .args([
                "--https-listen",
                "127.0.0.1:0",
                "--s3-listen",
                "127.0.0.1:0",
                "--nbd-listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
            ])
            .args(&self.extra)
            .env("RUST_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("start dwd"));
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(b) = std::fs::read(self.dir.join("demo.json"))
                && let Ok(v) = serde_json::from_slice::<Value>(&b)
            {
                self.demo = v;
                return;
            }
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("dwd exited ({st}) during start:\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "dwd did not become ready:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The daemon's output so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops it with SIGTERM and waits; returns whether it exited cleanly.
    pub fn stop(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return true;
        };
        let pid = nix::unistd::Pid::from_raw(i32::try_from(c.id()).unwrap());
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st.success();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills it without a clean shutdown (power cut as far as the daemon is concerned).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same state.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop it first");
        self.spawn();
    }

    /// Socket path.
    pub fn socket(&self) -> String {
        self.demo["api"]["socket"].as_str().unwrap().to_owned()
    }

    /// S3 endpoint.
    pub fn s3(&self) -> String {
        self.demo["s3"]["endpoint"].as_str().unwrap().to_owned()
    }

    /// S3 keys of the demo.
    pub fn s3_keys(&self) -> (String, String) {
        (
            self.demo["s3"]["access_key"].as_str().unwrap().to_owned(),
            self.demo["s3"]["secret_key"].as_str().unwrap().to_owned(),
        )
    }

    /// NBD URI of the demo volume.
    pub fn nbd(&self) -> String {
        self.demo["nbd"]["uri"].as_str().unwrap().to_owned()
    }

    /// HTTPS base URL.
    pub fn https(&self) -> String {
        self.demo["api"]["https_url"].as_str().unwrap().to_owned()
    }

    /// One API call over the Unix socket; returns (status, JSON body).
    pub fn api(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        api_unix(&self.socket(), method, path, body)
    }

    /// An API call that must succeed.
    pub fn api_ok(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let (st, v) = self.api(method, path, body);
        assert!((200..300).contains(&st), "{method} {path}: {st} {v}");
        v
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() && !self.stop() {
            eprintln!("dwd did not stop cleanly; log:\n{}", self.log_text());
        }
    }
}

/// A raw HTTP/1.1 request over a Unix socket (one connection, `Connection: close`).
pub fn api_unix(socket: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket).expect("connect to dwd");
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let body = body
        .map(|b| serde_json::to_vec(b).unwrap())
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    // A server that refuses early (413) may close before it has read everything: the answer
    // it sent is still there to read.
    let sent = s
        .write_all(head.as_bytes())
        .and_then(|()| s.write_all(&body));
    if let Err(e) = sent {
        assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ),
            "sending to dwd: {e}"
        );
    }
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    parse_response(&resp)
}

/// Splits a raw HTTP response into status and JSON body (chunked bodies are de-chunked).
pub fn parse_response(resp: &[u8]) -> (u16, Value) {
    let text = String::from_utf8_lossy(resp);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 || after.len() < n {
                break;
            }
            out.push_str(&after[..n]);
            rest = after[n..].trim_start_matches("\r\n");
        }
        out
    } else {
        body.to_owned()
    };
    let v = if body.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&body).unwrap_or(Value::String(body))
    };
    (status, v)
}

/// Deterministic pseudo-random bytes.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

/// Hex MD5 of a file.
pub fn md5_file(p: &Path) -> String {
    use md5::{Digest, Md5};
    let data = std::fs::read(p).unwrap();
    Md5::digest(&data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A temporary directory under /var/tmp (the disk, not tmpfs: drive files are sparse GiBs).
pub fn tempdir() -> tempfile::TempDir {
    std::fs::create_dir_all("/var/tmp").ok();
    tempfile::Builder::new()
        .prefix("dwd-e2e-")
        .tempdir_in("/var/tmp")
        .unwrap()
}
