//! Small helpers shared by the daemon's modules.

/// Unix seconds now.
#[must_use]
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Lower-case hex.
#[must_use]
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// `N` bytes from the OS random number generator.
///
/// # Errors
/// The OS refused (message for the log).
pub fn random_bytes<const N: usize>() -> Result<[u8; N], String> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| format!("the OS random number generator failed: {e}"))?;
    Ok(b)
}

/// A random string of `n` characters from `alphabet` (rejection sampling: no modulo bias).
///
/// # Errors
/// The OS random number generator failed.
pub fn random_string(n: usize, alphabet: &[u8]) -> Result<String, String> {
    assert!(!alphabet.is_empty() && alphabet.len() <= 256);
    let limit = 256 - (256 % alphabet.len());
    let mut out = String::with_capacity(n);
    while out.len() < n {
        for b in random_bytes::<64>()? {
            if usize::from(b) < limit && out.len() < n {
                out.push(char::from(alphabet[usize::from(b) % alphabet.len()]));
            }
        }
    }
    Ok(out)
}

/// Human-readable bytes (binary units).
#[must_use]
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = b;
    let mut i = 0;
    while v >= 1024 * 10 && i + 1 < UNITS.len() {
        v /= 1024;
        i += 1;
    }
    format!("{v} {}", UNITS[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(hex(&[0, 255, 16]), "00ff10");
        let s = random_string(40, b"ABC").unwrap();
        assert_eq!(s.len(), 40);
        assert!(s.bytes().all(|b| b"ABC".contains(&b)));
        assert_eq!(human_bytes(1 << 30), "1024 MiB");
        assert_eq!(human_bytes(100), "100 B");
    }
}
