//! The `dw-keyd` binary: `init` prints a fingerprint and a one-time token, `fingerprint`
//! repeats the fingerprint, `serve` answers on TLS with the pinned certificate, and a second
//! `init` refuses to overwrite the identity, and `revoke` refuses while the service runs.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use dw_keys::peer::client::{PeerClient, PeerTimeouts};
use dw_keys::peer::proto::{Message, RefuseCode};

const BIN: &str = env!("CARGO_BIN_EXE_dw-keyd");

fn parse_hex32(s: &str) -> [u8; 32] {
    dw_keys::types::parse_hex::<32>(s).unwrap_or_else(|| panic!("not 32 bytes of hex: {s}"))
}

#[test]
fn init_fingerprint_serve() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("keyd");
    let out = Command::new(BIN)
        .args(["init", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let fp_line = text
        .lines()
        .find(|l| l.starts_with("certificate sha256: "))
        .unwrap();
    let fingerprint = parse_hex32(fp_line.trim_start_matches("certificate sha256: "));
    let token_line = text
        .lines()
        .find(|l| l.starts_with("enrollment token"))
        .unwrap();
    let token_hex = token_line.rsplit(' ').next().unwrap();
    parse_hex32(token_hex);
    // The token is shown once and not stored in clear.
    for entry in std::fs::read_dir(&state).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(!bytes.windows(32).any(|w| w == parse_hex32(token_hex)));
        assert!(!String::from_utf8_lossy(&bytes).contains(token_hex));
    }
    let out = Command::new(BIN)
        .args(["fingerprint", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    assert_eq!(
        parse_hex32(String::from_utf8(out.stdout).unwrap().trim()),
        fingerprint
    );
    let again = Command::new(BIN)
        .args(["init", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already initialised"));

    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--state-dir"])
        .arg(&state)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().rsplit(' ').next().unwrap().to_string();
    let client = PeerClient::new(
        addr,
        fingerprint,
        PeerTimeouts {
            connect: Duration::from_secs(2),
            io: Duration::from_secs(5),
        },
    );
    let reply = client.raw_exchange(&[Message::NonceRequest {
        machine_id: [1; 16],
    }]);
    // A revocation never races the running service's own saves.
    let busy = Command::new(BIN)
        .args(["revoke", "--machine", &"01".repeat(16), "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(!busy.status.success());
    assert!(String::from_utf8_lossy(&busy.stderr).contains("running dw-keyd"));
    let _ = child.kill();
    let _ = child.wait();
    let reply = reply.unwrap();
    assert!(
        matches!(
            &reply[0],
            Message::Refused {
                code: RefuseCode::Unenrolled,
                ..
            }
        ),
        "{reply:?}"
    );
    let list = Command::new(BIN)
        .args(["list", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(list.status.success());
    assert!(list.stdout.is_empty());
    let revoke = |m: &str| {
        Command::new(BIN)
            .args(["revoke", "--machine", m, "--state-dir"])
            .arg(&state)
            .output()
            .unwrap()
    };
    let unknown = revoke(&"01".repeat(16));
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no machine"));
    let bad = revoke("xyz");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("32 hex digits"));
}
