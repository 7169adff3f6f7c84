//! Parsers for `/proc/<pid>/mountinfo` and `/proc/swaps` (pure, bounded, fuzzed).

use thiserror::Error;

/// Most lines either parser accepts; more means the input is not what the kernel writes.
pub const MAX_LINES: usize = 100_000;

/// One mount from mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// `major:minor` of the mounted device (0:N for anonymous devices such as btrfs subvolumes).
    pub devnum: (u32, u32),
    /// Mount point, unescaped.
    pub mount_point: String,
    /// File system type.
    pub fstype: String,
    /// Mount source (e.g. `/dev/sda1`), unescaped.
    pub source: String,
}

/// mountinfo could not be parsed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum MountinfoParseError {
    /// A line does not have the documented fields.
    #[error("mountinfo line {line}: {problem}")]
    BadLine {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        problem: &'static str,
    },
    /// Too many lines.
    #[error("mountinfo has more than {MAX_LINES} lines")]
    TooLong,
}

/// Parses mountinfo (proc(5)): `id parent major:minor root mountpoint options [optional…] - fstype
/// source superoptions`. Any malformed line is an error: a mount we cannot read could be the one
/// that holds a disk.
pub fn parse_mountinfo(text: &str) -> Result<Vec<MountEntry>, MountinfoParseError> {
    let mut out = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if index >= MAX_LINES {
            return Err(MountinfoParseError::TooLong);
        }
        let line_no = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |problem| MountinfoParseError::BadLine {
            line: line_no,
            problem,
        };
        let (left, right) = line.split_once(" - ").ok_or(bad("no ' - ' separator"))?;
        let mut fields = left.split(' ');
        let _id = fields
            .next()
            .filter(|s| is_decimal(s))
            .ok_or(bad("bad mount id"))?;
        let _parent = fields
            .next()
            .filter(|s| is_decimal(s))
            .ok_or(bad("bad parent id"))?;
        let devnum = fields
            .next()
            .and_then(parse_devnum)
            .ok_or(bad("bad major:minor"))?;
        let _root = fields.next().ok_or(bad("missing root"))?;
        let mount_point = fields.next().ok_or(bad("missing mount point"))?;
        let _options = fields.next().ok_or(bad("missing mount options"))?;
        let mut right_fields = right.split(' ');
        let fstype = right_fields
            .next()
            .filter(|s| !s.is_empty())
            .ok_or(bad("missing fstype"))?;
        let source = right_fields.next().ok_or(bad("missing source"))?;
        out.push(MountEntry {
            devnum,
            mount_point: unescape_octal(mount_point),
            fstype: unescape_octal(fstype),
            source: unescape_octal(source),
        });
    }
    Ok(out)
}

/// One active swap area from /proc/swaps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwapEntry {
    /// File name (a device node or a file), unescaped.
    pub filename: String,
    /// `partition` or `file`.
    pub kind: String,
}

/// /proc/swaps could not be parsed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SwapsParseError {
    /// The header line is not the kernel's.
    #[error("/proc/swaps does not start with the 'Filename Type …' header")]
    NoHeader,
    /// A line does not have the documented fields.
    #[error("/proc/swaps line {line}: {problem}")]
    BadLine {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        problem: &'static str,
    },
    /// Too many lines.
    #[error("/proc/swaps has more than {MAX_LINES} lines")]
    TooLong,
}

/// Parses /proc/swaps: a header line, then `filename type size used priority` per line (the
/// kernel escapes blanks in file names as octal).
pub fn parse_swaps(text: &str) -> Result<Vec<SwapEntry>, SwapsParseError> {
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, header)) if header.starts_with("Filename") => {}
        None => return Ok(Vec::new()),
        Some(_) => return Err(SwapsParseError::NoHeader),
    }
    let mut out = Vec::new();
    for (index, line) in lines {
        if index >= MAX_LINES {
            return Err(SwapsParseError::TooLong);
        }
        if line.trim().is_empty() {
            continue;
        }
        let bad = |problem| SwapsParseError::BadLine {
            line: index + 1,
            problem,
        };
        let mut fields = line.split_whitespace();
        let filename = fields.next().ok_or(bad("missing file name"))?;
        let kind = fields.next().ok_or(bad("missing type"))?;
        for what in ["size", "used", "priority"] {
            let field = fields.next().ok_or(bad("missing size, used or priority"))?;
            let numeric = field.strip_prefix('-').unwrap_or(field);
            if !is_decimal(numeric) {
                return Err(bad(match what {
                    "size" => "size is not a number",
                    "used" => "used is not a number",
                    _ => "priority is not a number",
                }));
            }
        }
        out.push(SwapEntry {
            filename: unescape_octal(filename),
            kind: kind.to_owned(),
        });
    }
    Ok(out)
}

fn is_decimal(s: &str) -> bool {
    !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit())
}

fn parse_devnum(s: &str) -> Option<(u32, u32)> {
    let (major, minor) = s.split_once(':')?;
    if !is_decimal(major) || !is_decimal(minor) {
        return None;
    }
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Decodes the kernel's `\ooo` escapes (space, tab, newline, backslash in paths).
pub(crate) fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 4 <= bytes.len()
            && let Some(v) = octal3(&bytes[i + 1..i + 4])
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn octal3(digits: &[u8]) -> Option<u8> {
    if digits.len() != 3 || !digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
        return None;
    }
    let value = digits
        .iter()
        .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
    u8::try_from(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SAMPLE: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
40 27 8:17 / /mnt/with\\040space rw,relatime shared:5 master:2 - xfs /dev/sdb1 rw
41 27 0:45 /@home /home rw - btrfs /dev/sdc2 rw,subvol=/@home
";

    // Goal: every documented field comes out, with optional fields and escapes handled.
    #[test]
    fn parses_kernel_mountinfo() {
        let mounts = parse_mountinfo(SAMPLE).unwrap();
        assert_eq!(mounts.len(), 4);
        assert_eq!(mounts[1].devnum, (254, 0));
        assert_eq!(mounts[1].mount_point, "/");
        assert_eq!(mounts[1].source, "/dev/vda");
        assert_eq!(mounts[2].mount_point, "/mnt/with space");
        assert_eq!(mounts[2].fstype, "xfs");
        assert_eq!(mounts[2].devnum, (8, 17));
        assert_eq!(mounts[3].devnum, (0, 45));
        assert_eq!(mounts[3].source, "/dev/sdc2");
    }

    #[test]
    fn rejects_malformed_lines() {
        assert_eq!(
            parse_mountinfo("22 27 0:21 / /proc rw proc proc rw\n"),
            Err(MountinfoParseError::BadLine {
                line: 1,
                problem: "no ' - ' separator"
            })
        );
        assert!(parse_mountinfo("x 27 0:21 / /p rw - proc proc rw").is_err());
        assert!(parse_mountinfo("1 2 8-0 / /p rw - proc proc rw").is_err());
        assert!(parse_mountinfo("1 2 8:0 / /p rw - ").is_err());
        assert_eq!(parse_mountinfo("").unwrap(), vec![]);
    }

    #[test]
    fn parses_swaps() {
        let text = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n\
                    /dev/sda2                               partition\t8388604\t\t0\t\t-2\n\
                    /swap\\040file                           file\t\t1048572\t\t0\t\t-3\n";
        let swaps = parse_swaps(text).unwrap();
        assert_eq!(swaps.len(), 2);
        assert_eq!(swaps[0].filename, "/dev/sda2");
        assert_eq!(swaps[0].kind, "partition");
        assert_eq!(swaps[1].filename, "/swap file");
        assert_eq!(
            parse_swaps("Filename Type Size Used Priority\n").unwrap(),
            vec![]
        );
        assert_eq!(parse_swaps("garbage\n"), Err(SwapsParseError::NoHeader));
        assert!(parse_swaps("Filename\n/dev/sda2 partition x 0 -2\n").is_err());
    }

    #[test]
    fn unescapes_only_valid_octal() {
        assert_eq!(unescape_octal("a\\040b"), "a b");
        assert_eq!(unescape_octal("a\\134b"), "a\\b");
        assert_eq!(unescape_octal("a\\9"), "a\\9");
        assert_eq!(unescape_octal("\\04"), "\\04");
        assert_eq!(unescape_octal("\\777"), "\\777");
    }

    proptest! {
        // Random text never panics either parser.
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let text = String::from_utf8_lossy(&bytes);
            let _ = parse_mountinfo(&text);
            let _ = parse_swaps(&text);
        }

        // Well-formed lines round-trip their device number and mount point.
        #[test]
        fn wellformed_lines_parse(major in 0u32..4096, minor in 0u32..1_048_576,
                                  mp in "/[a-z0-9/]{0,40}") {
            let line = format!("1 2 {major}:{minor} / {mp} rw - ext4 /dev/x rw\n");
            let mounts = parse_mountinfo(&line).unwrap();
            prop_assert_eq!(mounts.len(), 1);
            prop_assert_eq!(mounts[0].devnum, (major, minor));
            prop_assert_eq!(&mounts[0].mount_point, &mp);
        }
    }
}
