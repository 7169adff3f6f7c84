//! End to end: a real `dwd --demo` in a temporary directory (port-0 listeners), driven by the
//! real `dw` binary for every command group: tables, `--json`, and the documented exit codes.
//!
//! Needs both binaries: `dw` is built by cargo for this test; `dwd` lives in another package,
//! so build it first (`cargo build --workspace --bins`). The test fails, never skips, when one
//! is missing.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Environment variables of `dw` that must not leak in from the caller's shell.
const DW_ENV: [&str; 6] = [
    "DW_SOCKET",
    "DW_URL",
    "DW_TOKEN",
    "DW_FINGERPRINT",
    "DW_CA",
    "DW_TPM_TCTI",
];

fn bin(name: &str) -> PathBuf {
    // target/debug/deps/cli-<hash> -> target/debug/<name>
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps");
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "{} is missing: build the binaries first with `cargo build --workspace --bins` \
         (or `cargo build -p dw-daemon -p dw-cli --bins`) with the same profile and target dir",
        p.display()
    );
    p
}

/// The output of one `dw` run.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
    cmd: String,
}

impl Out {
    fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "`{}` failed with {}:\nstdout: {}\nstderr: {}",
            self.cmd, self.code, self.stdout, self.stderr
        );
        self
    }

    fn code(self, want: i32) -> Self {
        assert_eq!(
            self.code, want,
            "`{}` exited {} instead of {want}:\nstdout: {}\nstderr: {}",
            self.cmd, self.code, self.stdout, self.stderr
        );
        if want != 0 {
            // One clear line on stderr.
            let line = self.stderr.trim_end();
            assert!(
                line.starts_with("dw: ") || want == 2,
                "`{}`: stderr is not `dw: <message>`: {line:?}",
                self.cmd
            );
            if want != 2 {
                assert_eq!(line.lines().count(), 1, "`{}`: {line:?}", self.cmd);
            }
        }
        self
    }

    fn json(self) -> Value {
        let s = self.ok();
        serde_json::from_str(&s.stdout)
            .unwrap_or_else(|e| panic!("`{}` printed no JSON ({e}): {}", s.cmd, s.stdout))
    }
}

/// A running demo daemon, killed when dropped (also when the test panics).
struct Daemon {
    child: Child,
    dir: tempfile::TempDir,
    dw: PathBuf,
    socket: String,
    demo: Value,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    fn start() -> Self {
        let dwd = bin("dwd");
        let dw = PathBuf::from(env!("CARGO_BIN_EXE_dw"));
        assert!(dw.is_file(), "{} is missing", dw.display());
        let dir = tempfile::Builder::new()
            .prefix("dw-cli")
            .tempdir()
            .expect("tempdir");
        let state = dir.path().join("state");
        let log = std::fs::File::create(dir.path().join("dwd.log")).expect("log file");
        let mut cmd = Command::new(&dwd);
        cmd.args(["--demo", "--state-dir"])
            .arg(&state)
            .args([
                "--https-listen",
                "127.0.0.1:0",
                "--s3-listen",
                "127.0.0.1:0",
                "--nbd-listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
                "--demo-drive-size",
                "256M",
                "--demo-volume-size",
                "32M",
                "--log-level",
                "warn",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        for k in DW_ENV {
            cmd.env_remove(k);
        }
        let child = cmd.spawn().expect("start dwd");
        let mut d = Daemon {
            child,
            dir,
            dw,
            socket: String::new(),
            demo: Value::Null,
        };
        let demo_json = state.join("demo.json");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(Some(status)) = d.child.try_wait() {
                panic!("dwd exited with {status} before it was ready:\n{}", d.log());
            }
            if let Some(v) = std::fs::read_to_string(&demo_json)
                .ok()
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            {
                d.demo = v;
                break;
            }
            assert!(
                Instant::now() < deadline,
                "dwd did not write demo.json within 40 s:\n{}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        d.socket = d.demo["api"]["socket"]
            .as_str()
            .expect("demo.json api.socket")
            .to_owned();
        d
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dwd.log")).unwrap_or_default()
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn https_url(&self) -> String {
        self.demo["api"]["https_url"]
            .as_str()
            .expect("demo.json api.https_url")
            .to_owned()
    }

    fn fingerprint(&self) -> String {
        self.demo["api"]["tls_fingerprint_sha256"]
            .as_str()
            .expect("demo.json api.tls_fingerprint_sha256")
            .to_owned()
    }

    /// Runs `dw` with `args` as they are (no connection flags added), `stdin` and `env`.
    fn raw(&self, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Out {
        let mut cmd = Command::new(&self.dw);
        cmd.args(args)
            .current_dir(self.dir.path())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for k in DW_ENV {
            cmd.env_remove(k);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("run dw");
        if let Some(input) = stdin {
            let mut si = child.stdin.take().expect("stdin");
            si.write_all(input.as_bytes()).expect("write stdin");
        }
        let o = child.wait_with_output().expect("dw output");
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            cmd: format!("dw {}", args.join(" ")),
        }
    }

    /// Runs `dw` on the daemon's socket (given by DW_SOCKET, exercising the environment).
    fn dw(&self, args: &[&str]) -> Out {
        self.raw(args, None, &[("DW_SOCKET", &self.socket)])
    }

    fn dw_in(&self, args: &[&str], stdin: &str) -> Out {
        self.raw(args, Some(stdin), &[("DW_SOCKET", &self.socket)])
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        self.dw(&a).json()
    }

    /// Runs `dw` over HTTPS with the demo's URL and fingerprint, and `extra` args.
    fn https(&self, extra: &[&str], stdin: Option<&str>) -> Out {
        let url = self.https_url();
        let fp = self.fingerprint();
        let mut a = vec!["--url", url.as_str(), "--fingerprint", fp.as_str()];
        a.extend_from_slice(extra);
        self.raw(&a, stdin, &[])
    }
}

fn sparse_file(path: &str, size: u64) {
    let f = std::fs::File::create(path).expect("create drive file");
    f.set_len(size).expect("size drive file");
}

fn names(v: &Value, key: &str) -> Vec<String> {
    v.as_array()
        .expect("a JSON array")
        .iter()
        .map(|e| e[key].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Polls `dw array show ID --json` until no rebuild or replacement runs.
fn wait_rebuild(d: &Daemon, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let a = d.json(&["array", "show", id]);
        let busy = a["rebuild"]
            .as_object()
            .is_some_and(|r| r["finished"] == Value::Bool(false))
            || a["members"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|m| matches!(m["state"].as_str(), Some("rebuilding" | "replacing")));
        if !busy {
            return a;
        }
        assert!(Instant::now() < deadline, "rebuild did not finish: {a}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
#[allow(clippy::too_many_lines)] // one daemon, every command group in sequence
fn every_command_group_against_a_demo_daemon() {
    let started = Instant::now();
    let d = Daemon::start();
    eprintln!("dwd demo ready in {:?}", started.elapsed());

    system(&d);
    users_and_tokens(&d);
    s3_keys(&d);
    arrays(&d);
    vdes(&d);
    containers_snapshots_jobs_events(&d);
    https(&d);
    usage_errors(&d);

    // Daemon not running: the socket is gone once dwd stops.
    let socket = d.socket.clone();
    let url = d.https_url();
    let fp = d.fingerprint();
    let dw = d.dw.clone();
    drop(d);
    let run = |args: &[&str]| {
        let o = Command::new(&dw)
            .args(args)
            .env_remove("DW_URL")
            .env_remove("DW_SOCKET")
            .output()
            .expect("run dw");
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, err) = run(&["--socket", &socket, "health"]);
    assert_eq!(code, 7, "stopped daemon over the socket: {err}");
    assert!(err.starts_with("dw: cannot reach dwd"), "{err}");
    let (code, err) = run(&[
        "--url",
        &url,
        "--fingerprint",
        &fp,
        "--token",
        "x",
        "health",
    ]);
    assert_eq!(code, 7, "stopped daemon over HTTPS: {err}");
    eprintln!("whole CLI test took {:?}", started.elapsed());
}

fn system(d: &Daemon) {
    let t = d.dw(&["health"]).ok().stdout;
    assert!(t.contains("Status") && t.contains("demo"), "{t}");
    let h = d.json(&["health"]);
    assert!(h["status"].is_string() && h["uptime_secs"].is_u64(), "{h}");
    assert_eq!(names(&h["vdes"], "name"), vec!["demo"]);

    let i = d.json(&["info"]);
    assert_eq!(i["api_version"], "v1");
    assert_eq!(i["https_url"].as_str(), Some(d.https_url().as_str()));
    assert!(d.dw(&["info"]).ok().stdout.contains("TLS fingerprint"));

    let dev = d.json(&["devices"]);
    assert!(dev["devices"].is_array(), "{dev}");
    d.dw(&["devices"]).ok();

    let m = d.dw(&["metrics"]).ok().stdout;
    assert!(m.contains("# TYPE") || m.contains("dw_"), "{m}");

    let doc = d.json(&["openapi"]);
    assert!(doc["paths"]["/api/v1/health"].is_object());
    // Explicit --socket works as well as DW_SOCKET.
    d.raw(&["--socket", &d.socket, "health", "--json"], None, &[])
        .json();
}

fn users_and_tokens(d: &Daemon) {
    let users = d.json(&["user", "list"]);
    assert!(
        names(&users, "name").contains(&"admin".to_owned()),
        "{users}"
    );
    assert!(d.dw(&["user", "list"]).ok().stdout.contains("admin"));

    let u = d
        .dw_in(
            &["user", "add", "operator", "--json"],
            "operator-password-1\n",
        )
        .json();
    assert_eq!(u["name"], "operator");
    d.dw_in(&["user", "add", "operator"], "operator-password-1\n")
        .code(5);
    d.dw_in(&["user", "add", "shorty"], "short\n").code(1);
    d.dw(&["user", "add", "nopass"]).code(2);
    let t = d
        .dw_in(&["user", "passwd", "operator"], "operator-password-2\n")
        .ok()
        .stdout;
    assert!(t.contains("changed"), "{t}");
    // A 204 answer prints nothing with --json.
    let o = d
        .dw_in(
            &["user", "passwd", "operator", "--json"],
            "operator-password-3\n",
        )
        .ok();
    assert!(o.stdout.is_empty(), "{}", o.stdout);
    d.dw(&["user", "delete", "operator"]).ok();
    d.dw(&["user", "delete", "operator"]).code(4);

    let tok = d.json(&["token", "create", "ci", "--days", "1"]);
    let id = tok["info"]["id"].as_str().expect("token id").to_owned();
    assert!(tok["token"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(tok["info"]["expires_at"].is_u64());
    let list = d.json(&["token", "list"]);
    assert!(names(&list, "id").contains(&id), "{list}");
    assert!(d.dw(&["token", "list"]).ok().stdout.contains("ci"));
    let t = d.dw(&["token", "create", "other"]).ok().stdout;
    assert!(t.contains("shown once") && t.contains("never"), "{t}");
    d.dw(&["token", "delete", &id]).ok();
    d.dw(&["token", "delete", &id]).code(4);
}

fn s3_keys(d: &Daemon) {
    let k = d.json(&["s3-key", "create", "app", "--no-create-buckets"]);
    let ak = k["info"]["access_key"]
        .as_str()
        .expect("access key")
        .to_owned();
    assert!(k["secret_key"].as_str().is_some_and(|s| s.len() >= 16));
    assert_eq!(k["info"]["can_create_buckets"], false);
    let t = d.dw(&["s3-key", "create", "boss", "--admin"]).ok().stdout;
    assert!(
        t.contains("Secret key") && t.contains("all buckets (admin)"),
        "{t}"
    );

    let g = d.json(&["s3-key", "grant", &ak, "demo", "read"]);
    assert_eq!(g["grants"][0]["bucket"], "demo");
    assert_eq!(g["grants"][0]["access"], "read");
    let t = d.dw(&["s3-key", "list"]).ok().stdout;
    assert!(t.contains("demo:read"), "{t}");
    let g = d.json(&["s3-key", "grant", &ak, "demo", "none"]);
    assert_eq!(g["grants"], Value::Array(vec![]));
    d.dw(&["s3-key", "grant", &ak, "demo", "admin"]).code(2);
    d.dw(&["s3-key", "grant", &ak, "no-such-bucket", "read"])
        .code(4);
    let list = d.json(&["s3-key", "list"]);
    assert!(names(&list, "access_key").contains(&ak));
    d.dw(&["s3-key", "delete", &ak]).ok();
    d.dw(&["s3-key", "delete", &ak]).code(4);
}

fn arrays(d: &Daemon) {
    let drives: Vec<String> = (0..4).map(|i| d.path(&format!("extra{i}.img"))).collect();
    for p in &drives {
        sparse_file(p, 64 << 20);
    }
    let plan = d.json(&["array", "plan", &drives[0], &drives[1]]);
    let proposals = plan["proposals"].as_array().expect("proposals");
    assert!(!proposals.is_empty(), "{plan}");
    let t = d.dw(&["array", "plan", &drives[0], &drives[1]]).ok().stdout;
    assert!(t.contains("LEVEL") && t.contains("raid1"), "{t}");

    let list = d.json(&["array", "list"]);
    assert_eq!(names(&list, "name"), vec!["demo"]);
    assert!(d.dw(&["array", "list"]).ok().stdout.contains("demo"));
    let t = d.dw(&["array", "show", "demo"]).ok().stdout;
    assert!(t.contains("Members") && t.contains("in_sync"), "{t}");
    d.dw(&["array", "show", "nope"]).code(4);
    d.json(&["array", "show", "demo"]);

    // Relative device paths are resolved against dw's working directory (the temp dir).
    let a = d.json(&[
        "array",
        "create",
        "a2",
        "--level",
        "raid1",
        "extra0.img",
        "extra1.img",
        "--chunk",
        "64K",
    ]);
    let id = a["id"].as_str().expect("array id").to_owned();
    assert_eq!(a["level"], "raid1");
    assert_eq!(a["chunk_bytes"], 65536);
    d.dw(&[
        "array", "create", "a2", "--level", "raid1", &drives[2], &drives[3],
    ])
    .code(5);

    let t = d.dw(&["array", "throttle", "a2", "100M"]).ok().stdout;
    assert!(t.contains("100.0 MiB/s"), "{t}");
    d.json(&["array", "throttle", &id, "0"]);

    let job = d.json(&["array", "scrub", "a2", "--wait"]);
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["kind"], "scrub");
    let t = d.dw(&["array", "scrub", "a2", "--no-repair"]).ok().stdout;
    assert!(t.contains("dw job wait"), "{t}");
    let job_id = t
        .split_whitespace()
        .skip_while(|w| *w != "job")
        .nth(1)
        .expect("job id in the output")
        .to_owned();
    let t = d.dw(&["job", "wait", &job_id]).ok().stdout;
    assert!(t.contains("succeeded"), "{t}");

    let a = d.json(&["array", "add-spare", "a2", &drives[2]]);
    assert!(
        a["members"]
            .as_array()
            .expect("members")
            .iter()
            .any(|m| m["state"] == "spare"),
        "{a}"
    );
    d.dw(&["array", "add-spare", "a2", &drives[2]]).code(5);
    let a = d.json(&["array", "replace", "a2", "1", &drives[3]]);
    assert_eq!(a["id"].as_str(), Some(id.as_str()));
    wait_rebuild(d, "a2");
    let a = d.json(&["array", "fail", "a2", "0"]);
    assert_eq!(a["id"].as_str(), Some(id.as_str()));
    let a = wait_rebuild(d, "a2");
    let t = d.dw(&["array", "show", "a2"]).ok().stdout;
    assert!(t.contains("ROLE"), "{t}");
    d.dw(&["array", "fail", "a2", "7"]).code(4);
    assert!(a["state"].is_string());
}

fn vdes(d: &Daemon) {
    let list = d.json(&["vde", "list"]);
    assert_eq!(names(&list, "name"), vec!["demo"]);
    assert_eq!(list[0]["state"], "unlocked");
    let t = d.dw(&["vde", "show", "demo"]).ok().stdout;
    assert!(t.contains("Backing") && t.contains("unlocked"), "{t}");
    d.dw(&["vde", "show", "nope"]).code(4);

    // A VDE in a file, generated recovery passphrase.
    let img = d.path("v2.img");
    let v = d.json(&[
        "vde",
        "create",
        "v2",
        "--file",
        &img,
        "--size",
        "64M",
        "--profile",
        "balanced",
        "--contact",
        "ops@example.com",
    ]);
    let pass = v["recovery_passphrase"]
        .as_str()
        .expect("generated passphrase")
        .to_owned();
    assert_eq!(v["vde"]["state"], "unlocked");
    d.dw(&[
        "vde",
        "create",
        "v2",
        "--file",
        &d.path("v3.img"),
        "--size",
        "64M",
    ])
    .code(5);
    // A VDE with your own passphrase, from stdin (table output shows no secret).
    let t = d
        .dw_in(
            &[
                "vde",
                "create",
                "v4",
                "--file",
                &d.path("v4.img"),
                "--size",
                "64M",
                "--passphrase-stdin",
            ],
            "correct horse battery staple tiger\n",
        )
        .ok()
        .stdout;
    assert!(
        t.contains("v4") && !t.contains("Recovery passphrase"),
        "{t}"
    );
    if d.demo["tpm_slot"] == false {
        // No TPM here: a TPM2 slot cannot be made (501).
        d.dw(&[
            "vde",
            "create",
            "v5",
            "--file",
            &d.path("v5.img"),
            "--size",
            "64M",
            "--tpm",
        ])
        .code(9);
        d.dw(&["vde", "add-slot", "v2", "tpm2", "--pcrs", "7,11"])
            .code(9);
    }

    let slots = d.json(&["vde", "slots", "v2"]);
    assert_eq!(slots.as_array().map(Vec::len), Some(1), "{slots}");
    let s = d.json(&["vde", "add-slot", "v2", "passphrase", "--label", "backup"]);
    let slot = s["slot"]["id"].as_u64().expect("slot id").to_string();
    assert!(s["passphrase"].as_str().is_some_and(|p| !p.is_empty()));
    let t = d
        .dw_in(
            &["vde", "add-slot", "v2", "passphrase", "--passphrase-stdin"],
            "another long passphrase for slot three\n",
        )
        .ok()
        .stdout;
    assert!(t.contains("Added passphrase slot"), "{t}");
    assert!(d.dw(&["vde", "slots", "v2"]).ok().stdout.contains("backup"));
    d.dw(&["vde", "remove-slot", "v2", &slot]).ok();
    d.dw(&["vde", "remove-slot", "v2", &slot]).code(4);

    let audit = d.json(&["vde", "audit", "v2"]);
    assert!(!audit.as_array().expect("audit").is_empty());
    assert!(d.dw(&["vde", "audit", "v2"]).ok().stdout.contains("ACTION"));

    let p = d.json(&["vde", "policy", "v2"]);
    assert_eq!(p["profile"], "balanced");
    let p = d.json(&["vde", "set-policy", "v2", "--set", "compression=zstd:5!"]);
    assert_eq!(p["compression"]["value"], "zstd:5");
    assert_eq!(p["compression"]["enforce"], true);
    assert_eq!(p["profile"], "balanced", "other settings are kept: {p}");
    let t = d.dw(&["vde", "policy", "v2"]).ok().stdout;
    assert!(t.contains("zstd:5") && t.contains("yes"), "{t}");
    d.dw(&["vde", "set-policy", "v2"]).code(2);
    d.dw(&["vde", "set-policy", "v2", "--set", "colour=red"])
        .code(2);
    d.dw(&["vde", "set-policy", "v2", "--set", "compression=lz4"])
        .code(1);

    let job = d.json(&["vde", "rotate-key", "v2", "--wait"]);
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["kind"], "rekey");
    let r = d.dw(&["vde", "reseal", "v2", "--json"]);
    if r.code == 0 {
        serde_json::from_str::<Value>(&r.stdout).expect("reseal JSON");
    }

    // Lock, refuse while locked, wrong passphrase, then the recovery passphrase.
    let v = d.json(&["vde", "lock", "v2"]);
    assert_eq!(v["state"], "locked");
    d.dw(&["vde", "slots", "v2"]).code(6);
    d.dw_in(
        &["vde", "unlock", "v2", "--passphrase-stdin"],
        "not the passphrase at all\n",
    )
    .code(8);
    let u = d
        .dw_in(
            &["vde", "unlock", "v2", "--passphrase-stdin", "--json"],
            &format!("{pass}\n"),
        )
        .json();
    assert_eq!(u["vde"]["state"], "unlocked");

    // The demo VDE with the recovery passphrase from demo.json.
    let t = d.dw(&["vde", "lock", "demo"]).ok().stdout;
    assert!(t.contains("locked"), "{t}");
    d.dw(&["container", "show", "demo"]).code(6);
    d.dw(&["vde", "policy", "demo"]).code(6);
    d.dw_in(&["vde", "unlock", "demo", "--passphrase-stdin"], "wrong\n")
        .code(8);
    let demo_pass = d.demo["recovery_passphrase"]
        .as_str()
        .expect("demo recovery passphrase")
        .to_owned();
    let t = d
        .dw_in(
            &["vde", "unlock", "demo", "--passphrase-stdin"],
            &format!("{demo_pass}\n"),
        )
        .ok()
        .stdout;
    assert!(t.contains("unlocked"), "{t}");
    assert_eq!(d.json(&["vde", "show", "demo"])["state"], "unlocked");
}

fn containers_snapshots_jobs_events(d: &Daemon) {
    let list = d.json(&["container", "list"]);
    let mut have = names(&list, "name");
    have.sort();
    assert_eq!(have, vec!["demo", "demo-vol"]);
    assert!(
        d.dw(&["container", "list"])
            .ok()
            .stdout
            .contains("demo-vol")
    );

    let b = d.json(&[
        "container",
        "create",
        "bkt-1",
        "--kind",
        "bucket",
        "--vde",
        "demo",
        "--set",
        "versioning=true",
    ]);
    assert_eq!(b["kind"], "bucket");
    assert_eq!(b["policy"]["versioning"]["value"], "true");
    let t = d
        .dw(&[
            "container",
            "create",
            "vol1",
            "--kind",
            "volume",
            "--size",
            "16M",
            "--vde",
            "demo",
            "--profile",
            "speed",
        ])
        .ok()
        .stdout;
    assert!(t.contains("NBD export") && t.contains("16.0 MiB"), "{t}");
    d.dw(&[
        "container",
        "create",
        "bkt-1",
        "--kind",
        "bucket",
        "--vde",
        "demo",
    ])
    .code(5);
    d.dw(&["container", "create", "x", "--kind", "folder"])
        .code(2);
    d.dw(&[
        "container",
        "create",
        "vol2",
        "--kind",
        "volume",
        "--vde",
        "nope",
        "--size",
        "1M",
    ])
    .code(4);
    assert_eq!(
        d.json(&["container", "show", "vol1"])["size_bytes"],
        16 << 20
    );
    assert!(
        d.dw(&["container", "show", "bkt-1"])
            .ok()
            .stdout
            .contains("versioning")
    );

    let e = d.json(&["container", "policy", "bkt-1"]);
    let settings = e["settings"].as_array().expect("settings");
    assert!(settings.iter().any(|s| s["name"] == "versioning"), "{e}");
    assert!(
        d.dw(&["container", "policy", "bkt-1"])
            .ok()
            .stdout
            .contains("SOURCE")
    );
    let e = d.json(&[
        "container",
        "set-policy",
        "bkt-1",
        "--set",
        "compression=zstd:3",
        "--unset",
        "versioning",
    ]);
    assert!(e["settings"].is_array());
    let own = d.json(&["container", "show", "bkt-1"]);
    assert_eq!(own["policy"]["compression"]["value"], "zstd:3", "{own}");
    assert!(own["policy"].get("versioning").is_none(), "{own}");

    // Snapshots.
    let s = d.json(&["snapshot", "create", "vol1", "s1"]);
    assert_eq!(s["name"], "s1");
    // A duplicate snapshot name is a 400 from dwd today (a 409 would be more precise).
    let dup = d.dw(&["snapshot", "create", "vol1", "s1"]);
    assert!(
        matches!(dup.code, 1 | 5) && dup.stderr.starts_with("dw: "),
        "{dup:?}"
    );
    let list = d.json(&["snapshot", "list", "vol1"]);
    assert_eq!(names(&list, "name"), vec!["s1"]);
    assert!(
        d.dw(&["snapshot", "list", "vol1"])
            .ok()
            .stdout
            .contains("s1")
    );
    let c = d.json(&["snapshot", "rollback", "vol1", "s1"]);
    assert_eq!(c["name"], "vol1");
    d.dw(&["snapshot", "delete", "vol1", "s1"]).ok();
    d.dw(&["snapshot", "delete", "vol1", "s1"]).code(4);
    d.dw(&["snapshot", "list", "nope"]).code(4);

    // Jobs (the scrubs and the key rotation of earlier steps).
    let jobs = d.json(&["job", "list"]);
    let kinds = names(&jobs, "kind");
    assert!(kinds.contains(&"scrub".to_owned()) && kinds.contains(&"rekey".to_owned()));
    let id = jobs[0]["id"].as_str().expect("job id").to_owned();
    assert_eq!(
        d.json(&["job", "show", &id])["id"].as_str(),
        Some(id.as_str())
    );
    assert!(d.dw(&["job", "list"]).ok().stdout.contains("PROGRESS"));
    assert!(d.dw(&["job", "show", &id]).ok().stdout.contains("Started"));
    d.json(&["job", "wait", &id]);
    let j = d.json(&["job", "cancel", &id]);
    assert_eq!(j["id"].as_str(), Some(id.as_str()));
    d.dw(&["job", "show", "no-such-job"]).code(4);
    d.dw(&["job", "wait", "no-such-job"]).code(4);

    // Events: follow the stream while something happens.
    let mut ev = Command::new(&d.dw)
        .args(["events", "--count", "1", "--json"])
        .env("DW_SOCKET", &d.socket)
        .env_remove("DW_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dw events");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut n = 0;
    let status = loop {
        if let Some(s) = ev.try_wait().expect("events status") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = ev.kill();
            panic!("dw events saw no event in 60 s");
        }
        let name = format!("ev{n}");
        d.dw(&["snapshot", "create", "vol1", &name]).ok();
        d.dw(&["snapshot", "delete", "vol1", &name]).ok();
        n += 1;
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut line = String::new();
    ev.stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut line)
        .expect("events output");
    assert!(status.success(), "dw events failed: {line}");
    let e: Value = serde_json::from_str(line.trim()).expect("one JSON event per line");
    assert!(e["seq"].is_u64() && e["message"].is_string(), "{e}");

    d.dw(&["container", "delete", "vol1"]).ok();
    d.dw(&["container", "show", "vol1"]).code(4);
    d.dw(&["container", "delete", "vol1"]).code(4);
}

fn https(d: &Daemon) {
    let password = d.demo["api"]["admin_password"]
        .as_str()
        .expect("admin password")
        .to_owned();
    // No token: 401, with a hint how to get one.
    let o = d.https(&["health"], None).code(3);
    assert!(o.stderr.contains("dw login"), "{}", o.stderr);
    // Wrong fingerprint: TLS fails.
    let zeros = "00".repeat(32);
    let url = d.https_url();
    d.raw(
        &["--url", &url, "--fingerprint", &zeros, "health"],
        None,
        &[],
    )
    .code(7);
    // A malformed fingerprint, or none at all, is a usage error.
    d.raw(
        &["--url", &url, "--fingerprint", "abc", "health"],
        None,
        &[],
    )
    .code(2);
    d.raw(&["--url", &url, "health"], None, &[]).code(2);
    // Wrong password: 401.
    d.https(&["login", "--user", "admin"], Some("wrong password!!\n"))
        .code(3);

    // Log in: the token alone on stdout.
    let token = d
        .https(
            &["login", "--user", "admin", "--password-stdin"],
            Some(&format!("{password}\n")),
        )
        .ok()
        .stdout
        .trim()
        .to_owned();
    assert!(!token.is_empty() && !token.contains(' '), "{token:?}");
    let h = d
        .https(&["--token", &token, "health", "--json"], None)
        .json();
    assert!(h["status"].is_string());
    d.https(&["--token", &token, "array", "show", "nope"], None)
        .code(4);
    // The same from the environment.
    let fp = d.fingerprint();
    let env = [
        ("DW_URL", url.as_str()),
        ("DW_TOKEN", token.as_str()),
        ("DW_FINGERPRINT", fp.as_str()),
    ];
    let v = d.raw(&["vde", "list", "--json"], None, &env).json();
    assert!(v.as_array().is_some_and(|a| !a.is_empty()));
    // --socket wins over DW_URL.
    d.raw(&["--socket", &d.socket, "info", "--json"], None, &env)
        .json();
    let login = d
        .https(
            &["login", "--user", "admin", "--json"],
            Some(&format!("{password}\n")),
        )
        .json();
    assert!(login["token"].is_string() && login["expires_at"].is_u64());

    // An API token works over HTTPS too.
    let api = d.json(&["token", "create", "https-test"]);
    let api_token = api["token"].as_str().expect("api token").to_owned();
    d.https(&["--token", &api_token, "info"], None).ok();

    // Logout ends the session.
    d.https(&["--token", &token, "logout"], None).ok();
    d.https(&["--token", &token, "health"], None).code(3);
    d.https(&["--token", "garbage", "health"], None).code(3);
}

fn usage_errors(d: &Daemon) {
    d.dw(&[]).code(2);
    d.dw(&["array", "create", "x"]).code(2);
    d.dw(&["vde", "create", "x"]).code(2);
    d.dw(&["vde", "create", "x", "--file", "f.img"]).code(2);
    d.dw(&[
        "container",
        "create",
        "x",
        "--kind",
        "volume",
        "--size",
        "1X",
    ])
    .code(2);
    d.dw(&["array", "throttle", "demo", "fast"]).code(2);
    d.dw(&["frobnicate"]).code(2);
    d.dw(&["--help"]).ok();
    let v = d.dw(&["--version"]).ok().stdout;
    assert!(v.starts_with("dw "), "{v}");
}
