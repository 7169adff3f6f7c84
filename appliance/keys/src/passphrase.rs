//! Recovery passphrases: generation, strength checks and the Argon2id key derivation.

use std::fmt;

use zeroize::Zeroizing;

use crate::secret::{Entropy, Kek, OsEntropy, RandomError};

/// Crockford's base32 alphabet: digits and upper-case letters without I, L, O and U, so a
/// passphrase read off a screen cannot be mistyped as a look-alike character.
// A generated passphrase must carry at least 128 bits.
const _: () = assert!(GENERATED_ENTROPY_BITS >= 128);

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Groups in a generated passphrase.
pub const GENERATED_GROUPS: usize = 8;
/// Characters per group.
pub const GENERATED_GROUP_LEN: usize = 5;
/// Entropy of a generated passphrase: 40 characters of 5 bits each.
pub const GENERATED_ENTROPY_BITS: u32 = 200;

/// Minimum length of a passphrase a person chooses.
pub const MIN_USER_PASSPHRASE_CHARS: usize = 12;
/// Maximum length in bytes of any passphrase (bounds the work done on input).
pub const MAX_PASSPHRASE_BYTES: usize = 1024;
/// The estimated entropy a person's passphrase must reach.
pub const REQUIRED_ENTROPY_BITS: u32 = 64;

/// A recovery passphrase. Zeroized on drop; `Debug` prints nothing of it.
pub struct Passphrase(Zeroizing<String>);

impl Passphrase {
    /// A passphrase as typed (for unlocking, or for a person's own passphrase; see
    /// [`check_strength`]).
    #[must_use]
    pub fn new(passphrase: impl Into<String>) -> Passphrase {
        Passphrase(Zeroizing::new(passphrase.into()))
    }

    /// A new high-entropy passphrase: 8 groups of 5 characters from Crockford's base32
    /// alphabet separated by dashes (200 bits), to be shown to a person once.
    ///
    /// # Errors
    /// When the OS random number generator fails.
    pub fn generate() -> Result<Passphrase, RandomError> {
        Self::generate_with(&mut OsEntropy)
    }

    pub(crate) fn generate_with(rng: &mut dyn Entropy) -> Result<Passphrase, RandomError> {
        let mut raw = Zeroizing::new([0u8; GENERATED_GROUPS * GENERATED_GROUP_LEN]);
        rng.fill(raw.as_mut())?;
        let mut s = Zeroizing::new(String::with_capacity(48));
        for (i, b) in raw.iter().enumerate() {
            if i > 0 && i % GENERATED_GROUP_LEN == 0 {
                s.push('-');
            }
            // 256 is a multiple of 32, so the low 5 bits of a uniform byte are uniform.
            s.push(char::from(ALPHABET[usize::from(b & 31)]));
        }
        Ok(Passphrase(s))
    }

    /// The passphrase text. Do not log it.
    #[must_use]
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// The bytes fed to Argon2id. Generated passphrases are compared in canonical form (case,
    /// separators and look-alike characters do not matter); a person's own passphrase is used
    /// exactly as typed.
    pub(crate) fn kdf_input(&self, generated: bool) -> Zeroizing<Vec<u8>> {
        if !generated {
            return Zeroizing::new(self.0.as_bytes().to_vec());
        }
        let mut out = Zeroizing::new(Vec::with_capacity(40));
        for c in self.0.chars() {
            let c = c.to_ascii_uppercase();
            let c = match c {
                'O' => '0',
                'I' | 'L' => '1',
                '-' | ' ' | '\t' => continue,
                other => other,
            };
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
        out
    }
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passphrase(redacted)")
    }
}

/// Argon2id cost parameters, recorded in every passphrase slot.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Argon2Params {
    memory_kib: u32,
    iterations: u32,
    lanes: u32,
}

/// Argon2id parameters outside what this crate accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Argon2ParamsError {
    /// Memory cost outside the accepted range.
    #[error(
        "Argon2id memory {value} KiB is outside {min}..={max} KiB (8 KiB per lane minimum; the maximum keeps a hostile key-slot area from exhausting memory)"
    )]
    Memory {
        /// Requested value.
        value: u32,
        /// Smallest accepted value for these lanes.
        min: u32,
        /// Largest accepted value.
        max: u32,
    },
    /// Iteration count outside the accepted range.
    #[error("Argon2id iterations {value} are outside 1..={max}")]
    Iterations {
        /// Requested value.
        value: u32,
        /// Largest accepted value.
        max: u32,
    },
    /// Lane count outside the accepted range.
    #[error("Argon2id lanes {value} are outside 1..={max}")]
    Lanes {
        /// Requested value.
        value: u32,
        /// Largest accepted value.
        max: u32,
    },
}

impl Argon2Params {
    /// Largest memory cost accepted from a key-slot area: 2 GiB.
    pub const MAX_MEMORY_KIB: u32 = 2 * 1024 * 1024;
    /// Largest iteration count accepted.
    pub const MAX_ITERATIONS: u32 = 64;
    /// Largest lane count accepted.
    pub const MAX_LANES: u32 = 16;
    /// The defaults for new slots: 256 MiB, 3 iterations, 1 lane (about a second on one core).
    pub const DEFAULT: Argon2Params = Argon2Params {
        memory_kib: 256 * 1024,
        iterations: 3,
        lanes: 1,
    };

    /// Checked parameters.
    ///
    /// # Errors
    /// When a value is outside the accepted range.
    pub fn new(
        memory_kib: u32,
        iterations: u32,
        lanes: u32,
    ) -> Result<Argon2Params, Argon2ParamsError> {
        if lanes == 0 || lanes > Self::MAX_LANES {
            return Err(Argon2ParamsError::Lanes {
                value: lanes,
                max: Self::MAX_LANES,
            });
        }
        let min = 8 * lanes;
        if memory_kib < min || memory_kib > Self::MAX_MEMORY_KIB {
            return Err(Argon2ParamsError::Memory {
                value: memory_kib,
                min,
                max: Self::MAX_MEMORY_KIB,
            });
        }
        if iterations == 0 || iterations > Self::MAX_ITERATIONS {
            return Err(Argon2ParamsError::Iterations {
                value: iterations,
                max: Self::MAX_ITERATIONS,
            });
        }
        Ok(Argon2Params {
            memory_kib,
            iterations,
            lanes,
        })
    }

    /// Memory cost in KiB.
    #[must_use]
    pub fn memory_kib(&self) -> u32 {
        self.memory_kib
    }
    /// Iterations (time cost).
    #[must_use]
    pub fn iterations(&self) -> u32 {
        self.iterations
    }
    /// Lanes (parallelism).
    #[must_use]
    pub fn lanes(&self) -> u32 {
        self.lanes
    }
}

impl fmt::Display for Argon2Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Argon2id m={} KiB t={} p={}",
            self.memory_kib, self.iterations, self.lanes
        )
    }
}

/// Argon2id could not run.
#[derive(Debug, thiserror::Error)]
#[error("Argon2id key derivation failed with {params}: {reason}")]
pub struct PassphraseKdfError {
    params: Argon2Params,
    reason: String,
}

pub(crate) fn derive_kek(
    passphrase: &Passphrase,
    generated: bool,
    salt: &[u8; 32],
    params: &Argon2Params,
) -> Result<Kek, PassphraseKdfError> {
    let fail = |reason: String| PassphraseKdfError {
        params: *params,
        reason,
    };
    let p = argon2::Params::new(params.memory_kib, params.iterations, params.lanes, Some(32))
        .map_err(|e| fail(e.to_string()))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, p);
    let input = passphrase.kdf_input(generated);
    let mut kek = Kek([0u8; 32]);
    argon
        .hash_password_into(&input, salt, &mut kek.0)
        .map_err(|e| fail(e.to_string()))?;
    Ok(kek)
}

/// The result of a successful strength check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StrengthEstimate {
    /// Estimated entropy in bits (a heuristic: character classes, length, and penalties for
    /// repeats, sequences, keyboard walks, repeated blocks and common words).
    pub estimated_bits: u32,
}

/// Why a person's passphrase was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WeakPassphrase {
    /// Fewer characters than [`MIN_USER_PASSPHRASE_CHARS`].
    #[error("the passphrase is too short: {length} characters, at least {min} are needed")]
    TooShort {
        /// Characters given.
        length: usize,
        /// Minimum.
        min: usize,
    },
    /// More bytes than [`MAX_PASSPHRASE_BYTES`].
    #[error("the passphrase is too long: {length} bytes, at most {max} are accepted")]
    TooLong {
        /// Bytes given.
        length: usize,
        /// Maximum.
        max: usize,
    },
    /// The entropy estimate is below [`REQUIRED_ENTROPY_BITS`].
    #[error(
        "the passphrase is too easy to guess: about {estimated_bits} bits of entropy, at least {required_bits} are needed; {why}"
    )]
    TooPredictable {
        /// The estimate.
        estimated_bits: u32,
        /// The requirement.
        required_bits: u32,
        /// What made the estimate low, in words.
        why: String,
    },
}

const COMMON_WORDS: &[&str] = &[
    "password",
    "passwort",
    "passphrase",
    "qwerty",
    "azerty",
    "letmein",
    "welcome",
    "admin",
    "administrator",
    "root",
    "secret",
    "changeme",
    "default",
    "dragon",
    "monkey",
    "iloveyou",
    "master",
    "login",
    "shadow",
    "sunshine",
    "football",
    "baseball",
    "superman",
    "trustno1",
    "datawarehouse",
    "warehouse",
    "storage",
    "server",
    "backup",
    "recovery",
    "unlock",
    "abc123",
    "123456",
    "654321",
    "111111",
    "000000",
    "princess",
    "starwars",
    "whatever",
    "freedom",
];

const KEYBOARD_ROWS: &[&str] = &[
    "1234567890",
    "qwertyuiop",
    "asdfghjkl",
    "zxcvbnm",
    "qwertzuiop",
    "azertyuiop",
    "yxcvbnm",
];

/// Checks that a passphrase a person chose is long and unpredictable enough.
///
/// # Errors
/// [`WeakPassphrase`] with the reason, in words a person can act on.
pub fn check_strength(passphrase: &Passphrase) -> Result<StrengthEstimate, WeakPassphrase> {
    let text = passphrase.expose_secret();
    if text.len() > MAX_PASSPHRASE_BYTES {
        return Err(WeakPassphrase::TooLong {
            length: text.len(),
            max: MAX_PASSPHRASE_BYTES,
        });
    }
    let chars: Zeroizing<Vec<char>> = Zeroizing::new(text.chars().collect());
    if chars.len() < MIN_USER_PASSPHRASE_CHARS {
        return Err(WeakPassphrase::TooShort {
            length: chars.len(),
            min: MIN_USER_PASSPHRASE_CHARS,
        });
    }
    let (bits, why) = estimate(&chars);
    if bits < REQUIRED_ENTROPY_BITS {
        let why = if why.is_empty() {
            "use a longer passphrase or mix letters, digits and symbols".to_string()
        } else {
            why.join(", ")
        };
        return Err(WeakPassphrase::TooPredictable {
            estimated_bits: bits,
            required_bits: REQUIRED_ENTROPY_BITS,
            why,
        });
    }
    Ok(StrengthEstimate {
        estimated_bits: bits,
    })
}

fn pool_size(chars: &[char]) -> u32 {
    let (mut lower, mut upper, mut digit, mut symbol, mut other) =
        (false, false, false, false, false);
    for c in chars {
        match c {
            'a'..='z' => lower = true,
            'A'..='Z' => upper = true,
            '0'..='9' => digit = true,
            c if c.is_ascii() => symbol = true,
            _ => other = true,
        }
    }
    u32::from(lower) * 26
        + u32::from(upper) * 26
        + u32::from(digit) * 10
        + u32::from(symbol) * 33
        + u32::from(other) * 100
}

fn keyboard_adjacent(a: char, b: char) -> bool {
    let (a, b) = (a.to_ascii_lowercase(), b.to_ascii_lowercase());
    KEYBOARD_ROWS.iter().any(|row| {
        let r: Vec<char> = row.chars().collect();
        r.windows(2)
            .any(|w| (w[0] == a && w[1] == b) || (w[0] == b && w[1] == a))
    })
}

fn deleet(c: char) -> char {
    match c.to_ascii_lowercase() {
        '0' => 'o',
        '1' | '!' => 'i',
        '3' => 'e',
        '4' | '@' => 'a',
        '5' | '$' => 's',
        '7' => 't',
        other => other,
    }
}

/// Returns (estimated bits, reasons the estimate was lowered).
fn estimate(chars: &[char]) -> (u32, Vec<String>) {
    let n = chars.len();
    let mut predictable = vec![false; n];
    let (mut repeats, mut sequences, mut walks, mut blocks) = (false, false, false, false);
    let mut period_run = [0usize; 9];
    for i in 1..n {
        let (prev, c) = (chars[i - 1], chars[i]);
        if c == prev {
            predictable[i] = true;
            repeats = true;
        } else if c.is_ascii_alphanumeric()
            && prev.is_ascii_alphanumeric()
            && (u32::from(c).abs_diff(u32::from(prev)) == 1)
        {
            predictable[i] = true;
            sequences = true;
        } else if keyboard_adjacent(prev, c) {
            predictable[i] = true;
            walks = true;
        }
        for p in 2..=8usize {
            if i >= p && chars[i] == chars[i - p] {
                period_run[p] += 1;
                // The first repeated character of a block is free; the rest are predictable.
                if period_run[p] >= 2 {
                    predictable[i] = true;
                    blocks = true;
                }
            } else {
                period_run[p] = 0;
            }
        }
    }
    let mut why = Vec::new();
    let lowered: Zeroizing<String> = Zeroizing::new(chars.iter().map(|c| deleet(*c)).collect());
    let lowered_chars: Vec<char> = lowered.chars().collect();
    for word in COMMON_WORDS {
        let w: Vec<char> = word.chars().collect();
        let mut start = 0;
        while start + w.len() <= lowered_chars.len() {
            if lowered_chars[start..start + w.len()] == w[..] {
                // A dictionary word is worth about one character of a random string.
                for flag in &mut predictable[start + 1..start + w.len()] {
                    *flag = true;
                }
                let msg = format!("it contains the common word \"{word}\"");
                if !why.contains(&msg) {
                    why.push(msg);
                }
                start += w.len();
            } else {
                start += 1;
            }
        }
    }
    if repeats {
        why.push("it repeats characters".to_string());
    }
    if sequences {
        why.push("it follows alphabet or digit sequences".to_string());
    }
    if walks {
        why.push("it follows keyboard rows".to_string());
    }
    if blocks {
        why.push("it repeats a block of characters".to_string());
    }
    let effective = u32::try_from(predictable.iter().filter(|p| !**p).count()).unwrap_or(u32::MAX);
    let pool = pool_size(chars);
    if pool <= 36 && why.is_empty() {
        why.push("it uses few kinds of characters".to_string());
    }
    let bits = f64::from(effective) * f64::from(pool.max(1)).log2();
    // The estimate is a non-negative, bounded float; truncation toward zero is intended.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let bits = bits.floor().min(f64::from(u32::MAX)) as u32;
    (bits, why)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> Argon2Params {
        Argon2Params::new(64, 1, 1).unwrap()
    }

    #[test]
    fn generated_passphrases_have_the_documented_shape() {
        let p = Passphrase::generate().unwrap();
        let s = p.expose_secret();
        assert_eq!(s.len(), 47, "{}", s.len());
        let groups: Vec<&str> = s.split('-').collect();
        assert_eq!(groups.len(), GENERATED_GROUPS);
        for g in groups {
            assert_eq!(g.len(), GENERATED_GROUP_LEN);
            assert!(g.bytes().all(|b| ALPHABET.contains(&b)), "{g}");
        }
        assert_eq!(
            GENERATED_ENTROPY_BITS as usize,
            GENERATED_GROUPS * GENERATED_GROUP_LEN * 5
        );
        assert_ne!(Passphrase::generate().unwrap().expose_secret(), s);
    }

    #[test]
    fn generated_passphrases_tolerate_case_separators_and_lookalikes() {
        let p = Passphrase::new("0A1BC-DEFGH");
        let typed = Passphrase::new("oa lbc defgh");
        assert_eq!(*p.kdf_input(true), *typed.kdf_input(true));
        assert_ne!(*p.kdf_input(false), *typed.kdf_input(false));
    }

    #[test]
    fn argon2_parameters_are_honoured() {
        let pass = Passphrase::new("correct horse battery staple");
        let salt = [3u8; 32];
        let a = derive_kek(&pass, false, &salt, &cheap()).unwrap();
        let again = derive_kek(&pass, false, &salt, &cheap()).unwrap();
        assert_eq!(a.0, again.0);
        let more_memory =
            derive_kek(&pass, false, &salt, &Argon2Params::new(128, 1, 1).unwrap()).unwrap();
        let more_time =
            derive_kek(&pass, false, &salt, &Argon2Params::new(64, 2, 1).unwrap()).unwrap();
        let more_lanes =
            derive_kek(&pass, false, &salt, &Argon2Params::new(64, 1, 2).unwrap()).unwrap();
        let other_salt = derive_kek(&pass, false, &[4u8; 32], &cheap()).unwrap();
        for other in [&more_memory, &more_time, &more_lanes, &other_salt] {
            assert_ne!(a.0, other.0);
        }
    }

    #[test]
    fn argon2_parameters_are_bounded() {
        assert!(Argon2Params::new(Argon2Params::MAX_MEMORY_KIB + 1, 1, 1).is_err());
        assert!(Argon2Params::new(100 * 1024 * 1024, 1, 1).is_err());
        assert!(Argon2Params::new(7, 1, 1).is_err());
        assert!(Argon2Params::new(64, 0, 1).is_err());
        assert!(Argon2Params::new(64, 65, 1).is_err());
        assert!(Argon2Params::new(64, 1, 0).is_err());
        assert!(Argon2Params::new(64 * 17, 1, 17).is_err());
        assert!(Argon2Params::new(8, 1, 1).is_ok());
        let d = Argon2Params::DEFAULT;
        assert_eq!(
            Argon2Params::new(d.memory_kib(), d.iterations(), d.lanes()),
            Ok(d)
        );
    }

    #[test]
    fn weak_passphrases_are_rejected_with_a_reason() {
        let cases = [
            ("short1!", "too short"),
            ("aaaaaaaaaaaaaaaaaaaa", "repeats characters"),
            ("Password1234!", "common word \"password\""),
            ("P@ssw0rd-P@ssw0rd", "common word \"password\""),
            ("qwertyuiopasdfgh", "keyboard"),
            ("abcdefghijklmnop", "sequences"),
            ("x7Kx7Kx7Kx7Kx7Kx7K", "repeats a block"),
            ("correcthorse", "too easy"),
        ];
        for (pass, want) in cases {
            let err = check_strength(&Passphrase::new(pass))
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{pass}: {err}");
        }
        let long = "x".repeat(MAX_PASSPHRASE_BYTES + 1);
        assert!(matches!(
            check_strength(&Passphrase::new(long)),
            Err(WeakPassphrase::TooLong { .. })
        ));
    }

    #[test]
    fn strong_passphrases_are_accepted() {
        for pass in [
            "correct horse battery staple",
            "Tr0ub4dor&3 went to Mzx!",
            "kV9#qz2Lw8@Rt5Yp",
            "Sieben blaue Wale singen leise",
        ] {
            let est =
                check_strength(&Passphrase::new(pass)).unwrap_or_else(|e| panic!("{pass}: {e}"));
            assert!(est.estimated_bits >= REQUIRED_ENTROPY_BITS);
        }
        let generated = Passphrase::generate().unwrap();
        assert!(check_strength(&generated).is_ok());
    }

    #[test]
    fn debug_is_redacted() {
        let p = Passphrase::new("hunter2hunter2");
        assert_eq!(format!("{p:?}"), "Passphrase(redacted)");
    }
}
