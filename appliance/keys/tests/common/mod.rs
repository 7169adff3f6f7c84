//! Shared helpers for the integration tests: a tiny test harness (for binaries that must set
//! environment variables before any thread exists), swtpm management and skip handling.
#![allow(dead_code, unreachable_pub, clippy::missing_panics_doc)]

pub mod env;
pub mod fake_snp;
pub mod service;

use std::net::{TcpListener, TcpStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether prerequisites must be present (CI sets DW_REQUIRE_ALL_TESTS=1).
pub fn require_all() -> bool {
    std::env::var("DW_REQUIRE_ALL_TESTS").is_ok_and(|v| v == "1")
}

/// The outcome of one test.
pub enum Outcome {
    Passed,
    Skipped(String),
}

/// Skips (printing the reason), or fails under DW_REQUIRE_ALL_TESTS=1.
pub fn skip(reason: &str) -> Outcome {
    assert!(
        !require_all(),
        "prerequisite missing and DW_REQUIRE_ALL_TESTS=1: {reason}"
    );
    Outcome::Skipped(reason.to_string())
}

/// A test function.
pub type TestFn = fn() -> Outcome;

/// Runs `tests` sequentially, honouring a substring filter and `--list`; exits non-zero when
/// a test fails. Other libtest flags are accepted and ignored.
pub fn run(binary: &str, tests: &[(&str, TestFn)]) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        for (name, _) in tests {
            println!("{name}: test");
        }
        return;
    }
    let mut skip_next = false;
    let mut filters = Vec::new();
    for a in &args {
        if skip_next {
            skip_next = false;
            continue;
        }
        if a == "--test-threads" || a == "--format" || a == "--color" || a == "--skip" {
            skip_next = true;
            continue;
        }
        if !a.starts_with('-') {
            filters.push(a.clone());
        }
    }
    let selected: Vec<&(&str, TestFn)> = tests
        .iter()
        .filter(|(n, _)| filters.is_empty() || filters.iter().any(|f| n.contains(f.as_str())))
        .collect();
    println!("\nrunning {} tests ({binary}, sequential)", selected.len());
    let (mut passed, mut failed, mut skipped) = (0, Vec::new(), 0);
    for (name, f) in selected {
        let started = Instant::now();
        match catch_unwind(AssertUnwindSafe(f)) {
            Ok(Outcome::Passed) => {
                passed += 1;
                println!(
                    "test {name} ... ok ({:.1}s)",
                    started.elapsed().as_secs_f64()
                );
            }
            Ok(Outcome::Skipped(why)) => {
                skipped += 1;
                println!("test {name} ... skipped: {why}");
            }
            Err(_) => {
                failed.push(*name);
                println!("test {name} ... FAILED");
            }
        }
    }
    println!(
        "\ntest result: {}. {passed} passed; {} failed; {skipped} skipped\n",
        if failed.is_empty() { "ok" } else { "FAILED" },
        failed.len()
    );
    if !failed.is_empty() {
        eprintln!("failed: {failed:?}");
        std::process::exit(101);
    }
}

/// A swtpm instance on loopback TCP ports, killed on drop.
pub struct Swtpm {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
    pub state_dir: PathBuf,
}

fn free_port_pair() -> Option<u16> {
    for _ in 0..50 {
        let l = TcpListener::bind("127.0.0.1:0").ok()?;
        let p = l.local_addr().ok()?.port();
        if p == u16::MAX {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return Some(p);
        }
    }
    None
}

pub fn which_pub(prog: &str) -> Option<PathBuf> {
    which(prog)
}

fn which(prog: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(prog))
        .find(|p| p.is_file())
}

impl Swtpm {
    /// Starts swtpm, or returns the reason it cannot.
    pub fn start() -> Result<Swtpm, String> {
        let Some(bin) = which("swtpm") else {
            return Err("swtpm is not installed (apt-get install swtpm swtpm-tools)".into());
        };
        let mut last = String::new();
        for _ in 0..5 {
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            let Some(port) = free_port_pair() else {
                return Err("no free loopback ports".into());
            };
            let mut child = Command::new(&bin)
                .args(["socket", "--tpm2"])
                .arg("--server")
                .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
                .arg("--ctrl")
                .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
                .args(["--flags", "not-need-init,startup-clear"])
                .arg("--tpmstate")
                .arg(format!("dir={}", dir.path().display()))
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot start swtpm: {e}"))?;
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    last = format!("swtpm exited with {status} (port collision?)");
                    break;
                }
                // Listening, and still alive a moment later: a port taken by someone else
                // between the probe and swtpm's bind answers the connect while swtpm exits.
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    std::thread::sleep(Duration::from_millis(100));
                    if let Ok(Some(status)) = child.try_wait() {
                        last = format!("swtpm exited with {status} (port collision?)");
                        break;
                    }
                    let state_dir = dir.path().to_path_buf();
                    return Ok(Swtpm {
                        child,
                        port,
                        _dir: dir,
                        state_dir,
                    });
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    last = "swtpm did not start listening within 10 s".into();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Err(last)
    }

    /// The TCTI string for tss-esapi.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts swtpm or returns the skip outcome.
#[macro_export]
macro_rules! swtpm_or_skip {
    () => {
        match common::Swtpm::start() {
            Ok(s) => s,
            Err(reason) => return common::skip(&reason),
        }
    };
}
