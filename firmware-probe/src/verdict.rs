//! The verdict rules: a pure function from evidence to `available` / `in_use` / `unusable` /
//! `unknown` with reasons.
//!
//! Order (first match wins):
//! 1. any evidence of use (mounted, holders, swap, partition table or kernel partitions, a
//!    partition in use, a signature, unrecognised non-zero data) -> `in_use`;
//! 2. zero size (unbound loop device) -> `unusable`;
//! 3. any check that could not run (mount table, holders, swaps, size, open, read, short read,
//!    signatures switched off) -> `unknown`;
//! 4. read-only, or RAM-backed (zram, brd) -> `unusable`;
//! 5. otherwise `available`.

use crate::model::{DeviceKind, Reason, ReasonCode, Verdict};
use crate::signatures::{Detection, ReadAtError};

/// How the device contents were examined.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Scan<'a> {
    /// Signature checks switched off.
    Disabled,
    /// Zero-size device: nothing to read.
    Empty,
    /// Not read, with the reason (open failed, size unknown, too many partitions).
    NotRead(&'a str),
    /// Read; the result.
    Done(&'a Detection),
}

/// Everything the rules look at.
#[derive(Debug, Clone)]
pub(crate) struct Evidence<'a> {
    pub(crate) name: &'a str,
    pub(crate) kind: DeviceKind,
    pub(crate) size_bytes: Result<u64, &'a str>,
    pub(crate) read_only: Result<bool, &'a str>,
    /// `Some(false)` for a loop device with no backing file.
    pub(crate) loop_bound: Option<bool>,
    pub(crate) mounts: Result<&'a [String], &'a str>,
    pub(crate) holders: Result<&'a [String], &'a str>,
    pub(crate) swap: Result<bool, &'a str>,
    /// Partitions with their verdicts (empty for a partition itself).
    pub(crate) partitions: Result<&'a [(String, Verdict)], &'a str>,
    pub(crate) scan: Scan<'a>,
}

fn reason(code: ReasonCode, detail: impl Into<String>) -> Reason {
    Reason {
        code,
        detail: detail.into(),
    }
}

/// Most read failures listed individually in the reasons.
const MAX_FAILURE_REASONS: usize = 4;

/// Applies the rules in the module docs.
pub(crate) fn decide(e: &Evidence<'_>) -> (Verdict, Vec<Reason>) {
    let in_use = in_use_reasons(e);
    if !in_use.is_empty() {
        return (Verdict::InUse, in_use);
    }
    if e.size_bytes == Ok(0) {
        let r = if e.loop_bound == Some(false) {
            reason(
                ReasonCode::LoopUnbound,
                format!("{} has no backing file", e.name),
            )
        } else {
            reason(ReasonCode::ZeroSize, format!("{} has size 0", e.name))
        };
        return (Verdict::Unusable, vec![r]);
    }
    let unknown = unknown_reasons(e);
    if !unknown.is_empty() {
        return (Verdict::Unknown, unknown);
    }
    let mut unusable = Vec::new();
    if e.read_only == Ok(true) {
        unusable.push(reason(
            ReasonCode::ReadOnly,
            format!("{} is read-only", e.name),
        ));
    }
    match e.kind {
        DeviceKind::Zram => unusable.push(reason(
            ReasonCode::RamBacked,
            "zram is a compressed RAM disk: its contents do not survive a reboot",
        )),
        DeviceKind::Ram => unusable.push(reason(
            ReasonCode::RamBacked,
            "RAM disk: its contents do not survive a reboot",
        )),
        _ => {}
    }
    if !unusable.is_empty() {
        return (Verdict::Unusable, unusable);
    }
    (Verdict::Available, Vec::new())
}

fn in_use_reasons(e: &Evidence<'_>) -> Vec<Reason> {
    let mut out = Vec::new();
    if let Ok(mounts) = e.mounts
        && !mounts.is_empty()
    {
        out.push(reason(
            ReasonCode::Mounted,
            format!("mounted at {}", mounts.join(", ")),
        ));
    }
    if let Ok(holders) = e.holders
        && !holders.is_empty()
    {
        out.push(reason(
            ReasonCode::Holders,
            format!("held by {}", holders.join(", ")),
        ));
    }
    if e.swap == Ok(true) {
        out.push(reason(ReasonCode::Swap, "active swap area (/proc/swaps)"));
    }
    let table_found = match e.scan {
        Scan::Done(d) if d.partition_table.kind != crate::model::PartitionTableKind::None => {
            out.push(reason(
                ReasonCode::PartitionTable,
                d.partition_table.detail.clone(),
            ));
            true
        }
        _ => false,
    };
    if let Ok(parts) = e.partitions {
        if !parts.is_empty() && !table_found {
            let names: Vec<&str> = parts.iter().map(|(n, _)| n.as_str()).collect();
            out.push(reason(
                ReasonCode::PartitionTable,
                format!("the kernel lists partitions {}", names.join(", ")),
            ));
        }
        for (name, verdict) in parts.iter().filter(|(_, v)| *v == Verdict::InUse) {
            out.push(reason(
                ReasonCode::PartitionInUse,
                format!("partition {name} is {}", verdict.as_str()),
            ));
        }
    }
    if let Scan::Done(d) = e.scan {
        for s in &d.signatures {
            out.push(reason(
                ReasonCode::Signature,
                format!("{}: {}", s.kind.as_str(), s.detail),
            ));
        }
        if !d.found_anything() && d.nonzero_bytes > 0 {
            out.push(reason(
                ReasonCode::UnrecognizedData,
                format!(
                    "{} non-zero bytes in the regions read match no known signature",
                    d.nonzero_bytes
                ),
            ));
        }
    }
    out
}

fn unknown_reasons(e: &Evidence<'_>) -> Vec<Reason> {
    let mut out = Vec::new();
    let checks: [(&str, Option<&str>); 5] = [
        ("size", e.size_bytes.err()),
        ("read-only flag", e.read_only.err()),
        ("mount table", e.mounts.err()),
        ("holders", e.holders.err()),
        ("swap list", e.swap.err()),
    ];
    for (what, err) in checks {
        if let Some(err) = err {
            out.push(reason(
                ReasonCode::CheckFailed,
                format!("{what} unknown: {err}"),
            ));
        }
    }
    if let Err(err) = e.partitions {
        out.push(reason(
            ReasonCode::CheckFailed,
            format!("partitions unknown: {err}"),
        ));
    }
    match e.scan {
        Scan::Disabled => out.push(reason(
            ReasonCode::NotChecked,
            "signature checks switched off: the contents were not read",
        )),
        Scan::Empty => {}
        Scan::NotRead(why) => out.push(reason(ReasonCode::OpenFailed, why)),
        Scan::Done(d) => {
            for f in d.failures.iter().take(MAX_FAILURE_REASONS) {
                let code = match f.error {
                    ReadAtError::Short { .. } => ReasonCode::ShortRead,
                    _ => ReasonCode::ReadFailed,
                };
                out.push(reason(
                    code,
                    format!("{} bytes at offset {}: {}", f.len, f.offset, f.error),
                ));
            }
            if d.failures.len() > MAX_FAILURE_REASONS {
                out.push(reason(
                    ReasonCode::ReadFailed,
                    format!(
                        "{} more regions could not be read",
                        d.failures.len() - MAX_FAILURE_REASONS
                    ),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signatures::{SliceReader, detect};

    fn base<'a>(scan: Scan<'a>) -> Evidence<'a> {
        Evidence {
            name: "sdx",
            kind: DeviceKind::Ssd,
            size_bytes: Ok(1 << 30),
            read_only: Ok(false),
            loop_bound: None,
            mounts: Ok(&[]),
            holders: Ok(&[]),
            swap: Ok(false),
            partitions: Ok(&[]),
            scan,
        }
    }

    fn blank() -> Detection {
        detect(&SliceReader::new(&vec![0u8; 1 << 20]))
    }

    #[test]
    fn blank_complete_device_is_available() {
        let d = blank();
        assert_eq!(decide(&base(Scan::Done(&d))), (Verdict::Available, vec![]));
    }

    #[test]
    fn in_use_beats_everything() {
        let d = blank();
        let mounts = vec!["/srv".to_owned()];
        let mut e = base(Scan::Done(&d));
        e.mounts = Ok(&mounts);
        e.holders = Err("cannot list");
        e.read_only = Ok(true);
        let (v, r) = decide(&e);
        assert_eq!(v, Verdict::InUse);
        assert_eq!(r[0].code, ReasonCode::Mounted);
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn every_failed_check_makes_it_unknown() {
        let d = blank();
        type Case = Box<dyn Fn(&mut Evidence<'_>)>;
        let cases: Vec<Case> = vec![
            Box::new(|e| e.size_bytes = Err("x")),
            Box::new(|e| e.read_only = Err("x")),
            Box::new(|e| e.mounts = Err("x")),
            Box::new(|e| e.holders = Err("x")),
            Box::new(|e| e.swap = Err("x")),
            Box::new(|e| e.partitions = Err("x")),
            Box::new(|e| e.scan = Scan::Disabled),
            Box::new(|e| e.scan = Scan::NotRead("permission denied")),
        ];
        for (i, case) in cases.iter().enumerate() {
            let mut e = base(Scan::Done(&d));
            case(&mut e);
            let (v, r) = decide(&e);
            assert_eq!(v, Verdict::Unknown, "case {i}");
            assert_eq!(r.len(), 1, "case {i}: {r:?}");
        }
    }

    #[test]
    fn short_read_is_unknown_not_available() {
        let img = vec![0u8; 1 << 20];
        let d = detect(&SliceReader::with_size(&img, 1 << 30));
        let (v, r) = decide(&base(Scan::Done(&d)));
        assert_eq!(v, Verdict::Unknown);
        assert!(
            r.iter()
                .all(|r| r.code == ReasonCode::ShortRead || r.code == ReasonCode::ReadFailed)
        );
        assert!(r.len() <= MAX_FAILURE_REASONS + 1);
    }

    #[test]
    fn unusable_cases() {
        let d = blank();
        let mut e = base(Scan::Empty);
        e.size_bytes = Ok(0);
        e.loop_bound = Some(false);
        e.kind = DeviceKind::Loop;
        assert_eq!(decide(&e).1[0].code, ReasonCode::LoopUnbound);
        e.loop_bound = Some(true);
        assert_eq!(decide(&e).1[0].code, ReasonCode::ZeroSize);
        let mut e = base(Scan::Done(&d));
        e.read_only = Ok(true);
        assert_eq!(
            decide(&e),
            (
                Verdict::Unusable,
                vec![reason(ReasonCode::ReadOnly, "sdx is read-only")]
            )
        );
        let mut e = base(Scan::Done(&d));
        e.kind = DeviceKind::Zram;
        assert_eq!(decide(&e).0, Verdict::Unusable);
    }

    #[test]
    fn partitions_without_table_and_partition_in_use() {
        let d = blank();
        let parts = vec![
            ("sdx1".to_owned(), Verdict::Available),
            ("sdx2".to_owned(), Verdict::InUse),
        ];
        let mut e = base(Scan::Done(&d));
        e.partitions = Ok(&parts);
        let (v, r) = decide(&e);
        assert_eq!(v, Verdict::InUse);
        let codes: Vec<ReasonCode> = r.iter().map(|r| r.code).collect();
        assert_eq!(
            codes,
            vec![ReasonCode::PartitionTable, ReasonCode::PartitionInUse]
        );
        assert!(r[1].detail.contains("sdx2"));
    }
}
