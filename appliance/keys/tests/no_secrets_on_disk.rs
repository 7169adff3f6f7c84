//! "Nothing secret on disk": runs the whole life of a VDE's keys (every slot kind, unlocks,
//! a planned update with its temporary slot, re-seal including the peer, master-key rotation)
//! while writing every store version, the key-release service's state and a temporary file
//! into one directory, then scans every byte written (plus swtpm's own state) for the master
//! keys, the passphrases, the PIN and every slot's wrapping key. Debug output of the values
//! involved is scanned too. A planted file proves the scanner finds what it looks for.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use common::Outcome;
use common::fake_snp::FakeSnp;
use common::service::Service;
use dw_keys::ops::{ResealEnv, prepare_update, reseal};
use dw_keys::peer::client::PeerTimeouts;
use dw_keys::snp::SnpKeyRequest;
use dw_keys::tpm::Tpm;
use dw_keys::{
    Argon2Params, KeyStore, MasterKey, NewSlot, Passphrase, PcrSelection, PeerEnrollOptions, Pin,
    SlotKind, SlotRef, TpmSlotOptions, UnixTime, UnlockConfig, VdeId, unlock_with,
};
use zeroize::Zeroizing;

const VDE: VdeId = VdeId([0xd5; 16]);

struct Secrets {
    items: Vec<(String, Vec<u8>)>,
}

impl Secrets {
    fn add(&mut self, what: impl Into<String>, bytes: &[u8]) {
        self.items.push((what.into(), bytes.to_vec()));
    }
    fn add_keks(&mut self, store: &KeyStore, mk: &MasterKey, when: &str) {
        for (id, kek) in store.wrapping_keys(VDE, mk).unwrap() {
            self.add(format!("wrapping key of slot {id} ({when})"), kek.as_ref());
        }
    }
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Returns (files scanned, bytes scanned, findings).
fn scan(dirs: &[&Path], secrets: &Secrets) -> (usize, usize, Vec<String>) {
    let mut files = Vec::new();
    for d in dirs {
        files_under(d, &mut files);
    }
    let (mut n, mut bytes, mut found) = (0, 0, Vec::new());
    for f in &files {
        let data = std::fs::read(f).unwrap();
        n += 1;
        bytes += data.len();
        for (what, s) in &secrets.items {
            // The whole value and its first half (a partial leak) are both looked for.
            let half = &s[..s.len().div_ceil(2).max(8).min(s.len())];
            if contains(&data, s) || contains(&data, half) {
                found.push(format!("{what} found in {}", f.display()));
            }
        }
    }
    (n, bytes, found)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn lifecycle() -> Outcome {
    let sw = swtpm_or_skip!();
    let root = tempfile::tempdir().unwrap();
    let svc_dir = root.path().join("dw-keyd");
    std::fs::create_dir(&svc_dir).unwrap();
    let svc = Service::start(&svc_dir, Some(common::fake_snp::test_ca()));
    let mut written = 0usize;
    let mut persist = |store: &KeyStore, name: &str| {
        let path = root.path().join(format!("{written:02}-{name}.dwks"));
        std::fs::write(&path, store.encode()).unwrap();
        written += 1;
    };
    let mut secrets = Secrets { items: Vec::new() };
    let mut debug_text = String::new();

    let mk = MasterKey::generate().unwrap();
    secrets.add("master key", mk.expose_secret());
    let cheap = Argon2Params::new(64, 1, 1).unwrap();
    let store = KeyStore::new(VDE, &mk, UnixTime(1));
    persist(&store, "created");
    let (slot, generated) = NewSlot::generated_passphrase("recovery", cheap).unwrap();
    secrets.add("generated passphrase", generated.expose_secret().as_bytes());
    secrets.add(
        "generated passphrase without dashes",
        generated.expose_secret().replace('-', "").as_bytes(),
    );
    let (store, _) = store.add_slot(VDE, &mk, slot, UnixTime(2)).unwrap();
    persist(&store, "recovery");
    let own = Passphrase::new("Blue whales sing quietly at 4am!");
    secrets.add("person's passphrase", own.expose_secret().as_bytes());
    let (store, _) = store
        .add_slot(
            VDE,
            &mk,
            NewSlot::user_passphrase("own", &own, cheap).unwrap(),
            UnixTime(3),
        )
        .unwrap();
    persist(&store, "own-passphrase");
    let mut tpm = Tpm::open(&sw.tcti()).unwrap();
    let (store, _) = store
        .add_slot(
            VDE,
            &mk,
            NewSlot::tpm2(&mut tpm, "boot", &TpmSlotOptions::default()).unwrap(),
            UnixTime(4),
        )
        .unwrap();
    persist(&store, "tpm");
    let pin = "59317826";
    secrets.add("PIN", pin.as_bytes());
    let opts = TpmSlotOptions {
        pin: Some(Pin::new(pin)),
        pcrs: Some(PcrSelection::new(&[7, 11]).unwrap()),
        ..Default::default()
    };
    let (store, _) = store
        .add_slot(
            VDE,
            &mk,
            NewSlot::tpm2(&mut tpm, "boot+pin", &opts).unwrap(),
            UnixTime(5),
        )
        .unwrap();
    persist(&store, "tpm-pin");
    let mut fw = FakeSnp::new([0x66; 48]);
    let (store, _) = store
        .add_slot(
            VDE,
            &mk,
            NewSlot::sev_snp(&mut fw, "snp", SnpKeyRequest::DEFAULT).unwrap(),
            UnixTime(6),
        )
        .unwrap();
    persist(&store, "snp");
    let peer_opts = PeerEnrollOptions {
        endpoint: svc.endpoint(),
        server_cert_sha256: svc.fingerprint,
        token: Zeroizing::new(svc.token),
        pcrs: PcrSelection::new(&[7]).unwrap(),
        timeouts: PeerTimeouts::default(),
    };
    let (store, _) = store
        .add_slot(
            VDE,
            &mk,
            NewSlot::peer(&mut tpm, "peer", &peer_opts, None).unwrap(),
            UnixTime(7),
        )
        .unwrap();
    persist(&store, "peer");
    secrets.add_keks(&store, &mk, "enrolled");
    drop(tpm);

    // Boot: unlock through the peer, then through the TPM.
    let cfg = |order: Vec<SlotRef>| UnlockConfig {
        order,
        tcti: sw.tcti(),
        ..UnlockConfig::default()
    };
    let out = unlock_with(
        &store,
        VDE,
        &cfg(vec![SlotRef::Kind(SlotKind::Peer)]),
        None,
        UnixTime(10),
    )
    .unwrap();
    persist(&out.store, "unlocked-peer");
    let out = unlock_with(&out.store, VDE, &cfg(vec![]), Some(&mut fw), UnixTime(11)).unwrap();
    assert_eq!(out.kind, SlotKind::Tpm2);
    persist(&out.store, "unlocked-tpm");
    debug_text.push_str(&format!(
        "{out:?} {:?} {:?}",
        out.store.slots(),
        cfg(vec![])
    ));

    // Planned update: temporary slot, measured change, unlock via the temporary slot, reseal.
    let mut tpm = Tpm::open(&sw.tcti()).unwrap();
    let (store, _) = prepare_update(
        &out.store,
        VDE,
        &mk,
        &mut tpm,
        PcrSelection::NONE,
        2,
        UnixTime(20),
    )
    .unwrap();
    persist(&store, "prepared");
    secrets.add_keks(&store, &mk, "prepared");
    tpm.extend_pcr(7, b"firmware 2.0").unwrap();
    drop(tpm);
    let out = unlock_with(
        &store,
        VDE,
        &cfg(vec![SlotRef::Kind(SlotKind::Tpm2)]),
        None,
        UnixTime(21),
    )
    .unwrap();
    persist(&out.store, "unlocked-temporary");
    let mut tpm = Tpm::open(&sw.tcti()).unwrap();
    let mut env = ResealEnv {
        tpm: Some(&mut tpm),
        pin: Some(Pin::new(pin)),
        snp: Some(&mut fw),
        peers: Some(PeerTimeouts::default()),
    };
    let (store, report) = reseal(&out.store, VDE, &out.master_key, &mut env, UnixTime(22)).unwrap();
    assert!(report.complete(), "{report:?}");
    debug_text.push_str(&format!("{report:?} {env:?}"));
    drop(env);
    drop(tpm);
    persist(&store, "resealed");
    secrets.add_keks(&store, &mk, "resealed");

    // Master-key rotation.
    let mk2 = MasterKey::generate().unwrap();
    secrets.add("new master key", mk2.expose_secret());
    let store = store.begin_rotation(VDE, &mk, &mk2, UnixTime(30)).unwrap();
    persist(&store, "rotating");
    secrets.add_keks(&store, &mk2, "rotated");
    let prev = store.previous_master_key(VDE, &mk2).unwrap().unwrap();
    debug_text.push_str(&format!(
        "{store:?} {prev:?} {mk:?} {mk2:?} {generated:?} {own:?}"
    ));
    let store = store.finish_rotation(VDE, &mk2, UnixTime(31)).unwrap();
    persist(&store, "rotated");

    // The daemon may leave temporary files behind; they are scanned too.
    let mut tmp = tempfile::NamedTempFile::new_in(root.path()).unwrap();
    tmp.write_all(&store.encode()).unwrap();
    tmp.flush().unwrap();

    // Everything still opens with the new key.
    let out = unlock_with(&store, VDE, &cfg(vec![]), Some(&mut fw), UnixTime(40)).unwrap();
    assert_eq!(out.master_key.expose_secret(), mk2.expose_secret());

    let (files, bytes, found) = scan(&[root.path(), &sw.state_dir], &secrets);
    assert!(found.is_empty(), "secrets on disk: {found:#?}");
    assert!(files >= written + 3, "only {files} files scanned");
    assert!(bytes > 20_000, "only {bytes} bytes scanned");
    assert!(
        secrets.items.len() >= 20,
        "only {} secrets checked",
        secrets.items.len()
    );
    for (what, s) in &secrets.items {
        assert!(
            !debug_text.contains(&hex(s)),
            "{what} appears in Debug output"
        );
        assert!(
            !contains(debug_text.as_bytes(), s),
            "{what} appears in Debug output"
        );
    }
    println!(
        "    scanned {files} files, {bytes} bytes, for {} secrets",
        secrets.items.len()
    );

    // Positive control: the scanner does find a planted secret.
    std::fs::write(
        root.path().join("planted"),
        [b"xx".as_slice(), mk2.expose_secret()].concat(),
    )
    .unwrap();
    let (_, _, found) = scan(&[root.path()], &secrets);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("new master key found in"));
    Outcome::Passed
}

fn main() {
    common::env::quiet_tss_logging();
    common::run("no_secrets_on_disk", &[("lifecycle", lifecycle)]);
}
