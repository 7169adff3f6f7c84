//! Who may use the management API over HTTPS: admin accounts (Argon2id password hashes),
//! login sessions and API tokens, with rate-limited login.
//!
//! Tokens have the form `dws_<hex>` (session, in memory, ends with the daemon or after the
//! session lifetime) and `dwt_<id>_<hex>` (API token, persistent, only its BLAKE3 hash is
//! stored). Both carry 256 random bits, so comparing hashes is as strong as comparing secrets
//! and needs no constant-time care beyond what a hash lookup gives.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use parking_lot::Mutex;

use crate::state::{StateDb, StateError, TOKENS, TokenRecord, USERS, UserRecord};
use crate::util::{hex, now_secs, random_bytes};

/// Shortest password accepted.
pub const MIN_PASSWORD: usize = 12;
/// Longest password accepted (Argon2 cost does not depend on it, but memory for the request does).
pub const MAX_PASSWORD: usize = 1024;
/// Argon2 verifications running at once; more logins wait (bounds CPU and memory).
const MAX_HASHING: usize = 2;
/// Sessions kept at once; the oldest is dropped beyond this.
const MAX_SESSIONS: usize = 4096;
/// Client addresses tracked by the login limiter.
const MAX_TRACKED: usize = 65_536;

/// Why authentication or an account operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No or malformed credentials.
    #[error(
        "authentication required: send `Authorization: Bearer <token>` (get one with POST /api/v1/auth/login)"
    )]
    Missing,
    /// Wrong user name or password (which one is not said).
    #[error("wrong user name or password")]
    BadLogin,
    /// The token is unknown, revoked or expired.
    #[error("the token is invalid, revoked or expired")]
    BadToken,
    /// Too many failed logins from this address.
    #[error("too many failed logins from {addr}: try again in {retry_after_secs} s")]
    RateLimited {
        /// Client.
        addr: IpAddr,
        /// Seconds to wait.
        retry_after_secs: u64,
    },
    /// A name or password that breaks the rules.
    #[error("{0}")]
    Invalid(String),
    /// Not found.
    #[error("{0}")]
    NotFound(String),
    /// Already exists / would remove the last account.
    #[error("{0}")]
    Conflict(String),
    /// The state database failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// Hashing failed (out of memory, bad stored hash).
    #[error("password hashing failed: {0}")]
    Hash(String),
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Account name (`root` for the Unix socket).
    pub user: String,
    /// How: `socket`, `session` or `token:<id>`.
    pub via: String,
    /// Hash of the session token used (to log out).
    pub session: Option<String>,
}

#[derive(Debug)]
struct Session {
    user: String,
    expires: Instant,
    created: Instant,
}

#[derive(Debug, Default)]
struct Failures {
    window_start: Option<Instant>,
    count: u32,
}

/// Accounts, sessions and tokens.
#[derive(Debug)]
pub struct Auth {
    db: Arc<StateDb>,
    sessions: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<IpAddr, Failures>>,
    hashing: tokio::sync::Semaphore,
    session_ttl: Duration,
    attempts_per_minute: u32,
}

/// Checks an account name.
///
/// # Errors
/// [`AuthError::Invalid`].
pub fn check_name(name: &str) -> Result<(), AuthError> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(AuthError::Invalid(format!(
            "account name {name:?} must be 1-64 characters of a-z A-Z 0-9 . _ -"
        )));
    }
    Ok(())
}

fn check_password(pw: &str) -> Result<(), AuthError> {
    let n = pw.chars().count();
    if n < MIN_PASSWORD {
        return Err(AuthError::Invalid(format!(
            "the password must have at least {MIN_PASSWORD} characters"
        )));
    }
    if pw.len() > MAX_PASSWORD {
        return Err(AuthError::Invalid(format!(
            "the password must have at most {MAX_PASSWORD} bytes"
        )));
    }
    Ok(())
}

fn hash_password(pw: &str) -> Result<String, AuthError> {
    let salt = random_bytes::<16>().map_err(AuthError::Hash)?;
    Argon2::default()
        .hash_password_with_salt(pw.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

/// A real hash of a throw-away password, verified for unknown accounts so a login takes as long
/// whether or not the account exists.
fn dummy_hash() -> String {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY
        .get_or_init(|| hash_password("not the password of anyone").unwrap_or_default())
        .clone()
}

fn token_hash(secret: &str) -> String {
    hex(blake3::hash(secret.as_bytes()).as_bytes())
}

impl Auth {
    /// Over the state database.
    #[must_use]
    pub fn new(db: Arc<StateDb>, session_ttl: Duration, attempts_per_minute: u32) -> Self {
        Self {
            db,
            sessions: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            hashing: tokio::sync::Semaphore::new(MAX_HASHING),
            session_ttl,
            attempts_per_minute: attempts_per_minute.max(1),
        }
    }

    /// Whether any account exists.
    ///
    /// # Errors
    /// [`AuthError::State`].
    pub fn has_users(&self) -> Result<bool, AuthError> {
        Ok(!self.db.list::<UserRecord>(USERS)?.is_empty())
    }

    /// Creates an account.
    ///
    /// # Errors
    /// [`AuthError::Invalid`], [`AuthError::Conflict`].
    pub fn create_user(&self, name: &str, password: &str) -> Result<UserRecord, AuthError> {
        check_name(name)?;
        check_password(password)?;
        let rec = UserRecord {
            name: name.to_owned(),
            password_hash: hash_password(password)?,
            created: now_secs(),
        };
        if !self.db.insert_new(USERS, name, &rec)? {
            return Err(AuthError::Conflict(format!(
                "account {name:?} already exists"
            )));
        }
        Ok(rec)
    }

    /// Every account.
    ///
    /// # Errors
    /// [`AuthError::State`].
    pub fn users(&self) -> Result<Vec<UserRecord>, AuthError> {
        Ok(self.db.list(USERS)?.into_iter().map(|(_, u)| u).collect())
    }

    /// Deletes an account (never the last), its sessions and tokens.
    ///
    /// # Errors
    /// [`AuthError::NotFound`], [`AuthError::Conflict`].
    pub fn delete_user(&self, name: &str) -> Result<(), AuthError> {
        let users = self.users()?;
        if !users.iter().any(|u| u.name == name) {
            return Err(AuthError::NotFound(format!("no account {name:?}")));
        }
        if users.len() == 1 {
            return Err(AuthError::Conflict(
                "the last admin account cannot be deleted".into(),
            ));
        }
        self.db.remove(USERS, name)?;
        self.end_sessions_of(name);
        for t in self.tokens()? {
            if t.user == name {
                self.db.remove(TOKENS, &t.id)?;
            }
        }
        Ok(())
    }

    /// Changes a password and ends the account's sessions.
    ///
    /// # Errors
    /// [`AuthError::NotFound`], [`AuthError::Invalid`].
    pub fn set_password(&self, name: &str, password: &str) -> Result<(), AuthError> {
        check_password(password)?;
        let mut u: UserRecord = self
            .db
            .get(USERS, name)?
            .ok_or_else(|| AuthError::NotFound(format!("no account {name:?}")))?;
        u.password_hash = hash_password(password)?;
        self.db.put(USERS, name, &u)?;
        self.end_sessions_of(name);
        Ok(())
    }

    fn end_sessions_of(&self, name: &str) {
        self.sessions.lock().retain(|_, s| s.user != name);
    }

    /// Refuses early when `addr` is over its failed-login budget.
    fn check_rate(&self, addr: IpAddr) -> Result<(), AuthError> {
        let mut f = self.failures.lock();
        let Some(entry) = f.get_mut(&addr) else {
            return Ok(());
        };
        let now = Instant::now();
        match entry.window_start {
            Some(start) if now.duration_since(start) < Duration::from_secs(60) => {
                if entry.count >= self.attempts_per_minute {
                    let left = Duration::from_secs(60).saturating_sub(now.duration_since(start));
                    return Err(AuthError::RateLimited {
                        addr,
                        retry_after_secs: left.as_secs().max(1),
                    });
                }
            }
            _ => *entry = Failures::default(),
        }
        Ok(())
    }

    fn record_failure(&self, addr: IpAddr) {
        let mut f = self.failures.lock();
        if f.len() >= MAX_TRACKED && !f.contains_key(&addr) {
            // Bounded memory: forget windows that have ended, then anything if still full.
            let now = Instant::now();
            f.retain(|_, e| {
                e.window_start
                    .is_some_and(|s| now.duration_since(s) < Duration::from_secs(60))
            });
            if f.len() >= MAX_TRACKED {
                f.clear();
            }
        }
        let e = f.entry(addr).or_default();
        let now = Instant::now();
        if e.window_start
            .is_none_or(|s| now.duration_since(s) >= Duration::from_secs(60))
        {
            e.window_start = Some(now);
            e.count = 0;
        }
        e.count += 1;
    }

    /// Checks a password and opens a session. At most [`MAX_HASHING`] checks run at once;
    /// an address with too many recent failures is refused before any hashing.
    ///
    /// # Errors
    /// [`AuthError::RateLimited`], [`AuthError::BadLogin`].
    pub async fn login(
        self: &Arc<Self>,
        user: &str,
        password: &str,
        addr: IpAddr,
    ) -> Result<(String, u64), AuthError> {
        self.check_rate(addr)?;
        if user.len() > 64 || password.len() > MAX_PASSWORD {
            self.record_failure(addr);
            return Err(AuthError::BadLogin);
        }
        let _permit = self
            .hashing
            .acquire()
            .await
            .map_err(|e| AuthError::Hash(e.to_string()))?;
        let rec: Option<UserRecord> = self.db.get(USERS, user)?;
        let password = password.to_owned();
        // Hash even for an unknown user so timing does not tell which accounts exist.
        let stored = match &rec {
            Some(u) => u.password_hash.clone(),
            None => dummy_hash(),
        };
        let ok = tokio::task::spawn_blocking(move || {
            Argon2::default()
                .verify_password(password.as_bytes(), stored.as_str())
                .is_ok()
        })
        .await
        .map_err(|e| AuthError::Hash(e.to_string()))?;
        let Some(rec) = rec.filter(|_| ok) else {
            self.record_failure(addr);
            tracing::warn!(%addr, user, "failed login");
            return Err(AuthError::BadLogin);
        };
        let token = format!(
            "dws_{}",
            hex(&random_bytes::<32>().map_err(AuthError::Hash)?)
        );
        let expires_at = now_secs() + self.session_ttl.as_secs();
        let mut sessions = self.sessions.lock();
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| k.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(
            token_hash(&token),
            Session {
                user: rec.name.clone(),
                expires: now + self.session_ttl,
                created: now,
            },
        );
        tracing::info!(%addr, user = rec.name, "login");
        Ok((token, expires_at))
    }

    /// Ends a session.
    pub fn logout(&self, session_hash: &str) {
        self.sessions.lock().remove(session_hash);
    }

    /// Checks a bearer token.
    ///
    /// # Errors
    /// [`AuthError::BadToken`].
    pub fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        if token.len() > 256 {
            return Err(AuthError::BadToken);
        }
        let h = token_hash(token);
        if token.starts_with("dws_") {
            let mut sessions = self.sessions.lock();
            let Some(s) = sessions.get(&h) else {
                return Err(AuthError::BadToken);
            };
            if s.expires <= Instant::now() {
                sessions.remove(&h);
                return Err(AuthError::BadToken);
            }
            return Ok(Principal {
                user: s.user.clone(),
                via: "session".into(),
                session: Some(h),
            });
        }
        let Some(rest) = token.strip_prefix("dwt_") else {
            return Err(AuthError::BadToken);
        };
        let Some((id, _)) = rest.split_once('_') else {
            return Err(AuthError::BadToken);
        };
        let rec: TokenRecord = self.db.get(TOKENS, id)?.ok_or(AuthError::BadToken)?;
        if rec.hash != h || rec.expires_at.is_some_and(|e| e <= now_secs()) {
            return Err(AuthError::BadToken);
        }
        // The account may have been deleted since (`root`: made over the owner-only socket).
        if rec.user != "root" && self.db.get::<UserRecord>(USERS, &rec.user)?.is_none() {
            return Err(AuthError::BadToken);
        }
        Ok(Principal {
            user: rec.user,
            via: format!("token:{id}"),
            session: None,
        })
    }

    /// Creates an API token for `user`.
    ///
    /// # Errors
    /// [`AuthError`].
    pub fn create_token(
        &self,
        user: &str,
        name: &str,
        expires_in_days: Option<u32>,
    ) -> Result<(TokenRecord, String), AuthError> {
        if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
            return Err(AuthError::Invalid(
                "a token label must be 1-128 printable characters".into(),
            ));
        }
        let id = hex(&random_bytes::<6>().map_err(AuthError::Hash)?);
        let secret = format!(
            "dwt_{id}_{}",
            hex(&random_bytes::<32>().map_err(AuthError::Hash)?)
        );
        let rec = TokenRecord {
            id: id.clone(),
            name: name.to_owned(),
            user: user.to_owned(),
            hash: token_hash(&secret),
            created: now_secs(),
            expires_at: expires_in_days.map(|d| now_secs() + u64::from(d) * 86_400),
        };
        if !self.db.insert_new(TOKENS, &id, &rec)? {
            return Err(AuthError::Conflict("token id collision, try again".into()));
        }
        Ok((rec, secret))
    }

    /// Every API token.
    ///
    /// # Errors
    /// [`AuthError::State`].
    pub fn tokens(&self) -> Result<Vec<TokenRecord>, AuthError> {
        Ok(self.db.list(TOKENS)?.into_iter().map(|(_, t)| t).collect())
    }

    /// Revokes an API token.
    ///
    /// # Errors
    /// [`AuthError::NotFound`].
    pub fn delete_token(&self, id: &str) -> Result<(), AuthError> {
        if self.db.remove(TOKENS, id)? {
            Ok(())
        } else {
            Err(AuthError::NotFound(format!("no API token {id:?}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn auth(per_minute: u32) -> (tempfile::TempDir, Arc<Auth>) {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(StateDb::open(&dir.path().join("s")).unwrap());
        (
            dir,
            Arc::new(Auth::new(db, Duration::from_secs(60), per_minute)),
        )
    }

    #[tokio::test]
    async fn login_sessions_tokens() {
        let (_d, a) = auth(10);
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        a.create_user("admin", "correct horse battery").unwrap();
        assert!(matches!(
            a.create_user("admin", "correct horse battery"),
            Err(AuthError::Conflict(_))
        ));
        assert!(matches!(
            a.create_user("x", "short"),
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            a.create_user("a/b", "correct horse battery"),
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            a.login("admin", "wrong password!!", ip).await,
            Err(AuthError::BadLogin)
        ));
        assert!(matches!(
            a.login("nobody", "correct horse battery", ip).await,
            Err(AuthError::BadLogin)
        ));
        let (tok, _) = a.login("admin", "correct horse battery", ip).await.unwrap();
        let p = a.authenticate(&tok).unwrap();
        assert_eq!(p.user, "admin");
        a.logout(p.session.as_deref().unwrap());
        assert!(matches!(a.authenticate(&tok), Err(AuthError::BadToken)));

        let (rec, secret) = a.create_token("admin", "ci", None).unwrap();
        assert_eq!(
            a.authenticate(&secret).unwrap().via,
            format!("token:{}", rec.id)
        );
        assert!(matches!(
            a.authenticate(&format!("{secret}x")),
            Err(AuthError::BadToken)
        ));
        assert!(matches!(
            a.authenticate("garbage"),
            Err(AuthError::BadToken)
        ));
        a.delete_token(&rec.id).unwrap();
        assert!(matches!(a.authenticate(&secret), Err(AuthError::BadToken)));

        // Password change ends sessions; the last account cannot go.
        let (tok, _) = a.login("admin", "correct horse battery", ip).await.unwrap();
        a.set_password("admin", "another long password").unwrap();
        assert!(a.authenticate(&tok).is_err());
        assert!(matches!(
            a.delete_user("admin"),
            Err(AuthError::Conflict(_))
        ));
    }

    #[tokio::test]
    async fn failed_logins_are_rate_limited_per_address() {
        let (_d, a) = auth(3);
        a.create_user("admin", "correct horse battery").unwrap();
        let bad = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let good = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
        for _ in 0..3 {
            assert!(matches!(
                a.login("admin", "nope nope nope", bad).await,
                Err(AuthError::BadLogin)
            ));
        }
        // Even the right password is refused from that address now, without hashing.
        assert!(matches!(
            a.login("admin", "correct horse battery", bad).await,
            Err(AuthError::RateLimited { .. })
        ));
        assert!(
            a.login("admin", "correct horse battery", good)
                .await
                .is_ok()
        );
    }
}
