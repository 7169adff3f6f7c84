//! Human-readable output: aligned tables, key/value blocks, sizes, times.

use std::fmt::Write as _;
use std::io::Write as _;

/// Writes `text` (plus a newline unless it ends with one) to stdout. A closed pipe
/// (`dw ... | head`) is not an error worth a message.
pub fn out(text: &str) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(text.as_bytes());
    if !text.ends_with('\n') {
        let _ = o.write_all(b"\n");
    }
    let _ = o.flush();
}

/// Pretty JSON of an API answer.
pub fn json(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

/// A table with a header row; columns are separated by two spaces.
#[derive(Debug)]
pub struct Table {
    head: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(head: &[&'static str]) -> Self {
        Self {
            head: head.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table, or `empty` when it has no rows.
    pub fn render(&self, empty: &str) -> String {
        if self.rows.is_empty() {
            return format!("{empty}\n");
        }
        let n = self.head.len();
        let mut widths: Vec<usize> = self.head.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(n) {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        let mut s = String::new();
        let line = |s: &mut String, cells: &mut dyn Iterator<Item = &str>| {
            let mut l = String::new();
            for (i, c) in cells.enumerate().take(n) {
                if i + 1 == n {
                    l.push_str(c);
                } else {
                    let pad = widths[i].saturating_sub(c.chars().count());
                    l.push_str(c);
                    l.push_str(&" ".repeat(pad + 2));
                }
            }
            s.push_str(l.trim_end());
            s.push('\n');
        };
        line(&mut s, &mut self.head.iter().copied());
        for r in &self.rows {
            line(&mut s, &mut r.iter().map(String::as_str));
        }
        s
    }
}

/// `Key  value` lines, keys aligned; pairs with an empty value are left out.
pub fn kv(pairs: &[(&str, String)]) -> String {
    let w = pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let mut s = String::new();
    for (k, v) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
        let _ = writeln!(s, "{k:<w$}  {v}");
    }
    s
}

/// `1.5 GiB`, `512 B`.
pub fn size(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut unit = 1024u128;
    let mut i = 0;
    while i + 1 < UNITS.len() && u128::from(n) >= unit * 1024 {
        unit *= 1024;
        i += 1;
    }
    // One decimal, rounded, in integer arithmetic.
    let tenths = (u128::from(n) * 10 + unit / 2) / unit;
    format!("{}.{} {}", tenths / 10, tenths % 10, UNITS[i])
}

/// Optional size; empty when absent.
pub fn opt_size(n: Option<u64>) -> String {
    n.map(size).unwrap_or_default()
}

/// A rate in bytes per second.
pub fn rate(bytes_per_sec: f64) -> String {
    if bytes_per_sec >= 1024.0 * 1024.0 {
        format!("{:.1} MiB/s", bytes_per_sec / (1024.0 * 1024.0))
    } else {
        format!("{:.1} KiB/s", bytes_per_sec / 1024.0)
    }
}

/// `done/total` as a percentage (empty when the total is unknown).
pub fn percent(done: u64, total: u64) -> String {
    if total == 0 {
        return String::new();
    }
    let p = u128::from(done.min(total)) * 1000 / u128::from(total);
    format!("{}.{}%", p / 10, p % 10)
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn time(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Optional time; empty when absent.
pub fn opt_time(secs: Option<u64>) -> String {
    secs.map(time).unwrap_or_default()
}

/// Days since 1970-01-01 to a (year, month, day) date (proleptic Gregorian; H. Hinnant's
/// algorithm, unsigned because Unix seconds from the API are never negative).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `3d 4h 5m`, `42s`.
pub fn duration(secs: u64) -> String {
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    if d > 0 {
        format!("{d}d {h}h {m}m")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

/// `yes` / `no`.
pub fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

/// An optional text; empty when absent.
pub fn opt(s: Option<&str>) -> String {
    s.unwrap_or_default().to_owned()
}

/// A section heading followed by its body, separated from what came before by a blank line.
pub fn section(title: &str, body: &str) -> String {
    format!("\n{title}\n{body}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1024), "1.0 KiB");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(1 << 30), "1.0 GiB");
        assert_eq!(size(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn times() {
        assert_eq!(time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(time(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(time(1_735_689_599), "2024-12-31 23:59:59 UTC");
        assert_eq!(duration(90_061), "1d 1h 1m");
        assert_eq!(duration(42), "42s");
    }

    #[test]
    fn tables_align() {
        let mut t = Table::new(&["A", "LONGER"]);
        t.row(vec!["xyz".into(), "1".into()]);
        assert_eq!(t.render("none"), "A    LONGER\nxyz  1\n");
        assert_eq!(Table::new(&["A"]).render("none"), "none\n");
        assert_eq!(percent(1, 3), "33.3%");
        assert_eq!(percent(1, 0), "");
    }
}
