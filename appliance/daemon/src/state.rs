//! The daemon's own state: which devices make up which array, where each VDE lives, accounts,
//! API tokens, S3 keys and grants, and the S3 attributes of buckets. Kept in a redb database
//! (`state.redb` in the state directory), one ACID transaction per change.
//!
//! Values are JSON: this state is small, changes rarely and is read by people when something
//! goes wrong (`dwd --dump-state`). Every record carries its own schema through serde; fields
//! added later get `#[serde(default)]`. The user data itself never lives here: it is in the
//! VDEs, whose format is in docs/FORMAT.md.
//!
//! Secrets here: S3 secret keys (SigV4 needs them in clear on the server, as in every S3
//! implementation) and password/token hashes. The file is created owner-only (0600).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Why the state database failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Opening or creating it failed.
    #[error("cannot open the state database {path}: {detail}")]
    Open {
        /// File.
        path: String,
        /// Why.
        detail: String,
    },
    /// A transaction failed.
    #[error("state database error: {0}")]
    Db(String),
    /// A record does not decode (damaged or from a newer dwd).
    #[error("state record {table}/{key} is unreadable: {detail}")]
    Record {
        /// Table.
        table: &'static str,
        /// Key.
        key: String,
        /// Why.
        detail: String,
    },
}

macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl From<$t> for StateError {
            fn from(e: $t) -> Self {
                StateError::Db(e.to_string())
            }
        }
    )*};
}
db_err!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// A table of JSON records keyed by string.
#[derive(Debug, Clone, Copy)]
pub struct Table {
    name: &'static str,
}

impl Table {
    const fn def(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        TableDefinition::new(self.name)
    }
}

/// Arrays: UUID → [`ArrayRecord`].
pub const ARRAYS: Table = Table { name: "arrays" };
/// VDEs: UUID → [`VdeRecord`].
pub const VDES: Table = Table { name: "vdes" };
/// Containers: name → [`ContainerRecord`].
pub const CONTAINERS: Table = Table { name: "containers" };
/// Accounts: name → [`UserRecord`].
pub const USERS: Table = Table { name: "users" };
/// API tokens: id → [`TokenRecord`].
pub const TOKENS: Table = Table { name: "tokens" };
/// S3 keys: access key → [`S3KeyRecord`].
pub const S3_KEYS: Table = Table { name: "s3_keys" };
/// Grants: `access_key/bucket` → access (`read`, `write`, `manage`).
pub const GRANTS: Table = Table { name: "grants" };
/// Daemon facts: `schema`, `created`, ...
pub const META: Table = Table { name: "meta" };

const ALL: [Table; 8] = [
    ARRAYS, VDES, CONTAINERS, USERS, TOKENS, S3_KEYS, GRANTS, META,
];

/// Schema of this state database.
pub const SCHEMA: u32 = 1;

/// An array the daemon created or adopted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArrayRecord {
    /// UUID.
    pub id: String,
    /// Name.
    pub name: String,
    /// Every device path that was a member or spare; assembly offers all that exist.
    pub devices: Vec<String>,
}

/// Where a VDE lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackingRecord {
    /// On an array.
    Array {
        /// Array UUID.
        id: String,
    },
    /// In a file or on a single device.
    File {
        /// Path.
        path: String,
    },
}

/// A VDE.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VdeRecord {
    /// UUID.
    pub id: String,
    /// Name.
    pub name: String,
    /// Where it lives.
    pub backing: BackingRecord,
    /// Created, Unix seconds.
    pub created: u64,
}

/// A container's daemon-side attributes (its data is in the VDE).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// Name (unique across the appliance).
    pub name: String,
    /// VDE UUID.
    pub vde: String,
    /// `bucket` or `volume`.
    pub kind: String,
    /// Buckets: owning S3 key.
    #[serde(default)]
    pub owner: Option<String>,
    /// Buckets: S3 object lock enabled.
    #[serde(default)]
    pub object_lock: bool,
    /// Buckets: default retention (`governance`/`compliance`, days).
    #[serde(default)]
    pub default_retention: Option<(String, u32)>,
    /// Created, Unix seconds.
    pub created: u64,
}

/// An admin account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// Name.
    pub name: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// Created, Unix seconds.
    pub created: u64,
}

/// An API token (only its hash is kept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Id (public).
    pub id: String,
    /// Label.
    pub name: String,
    /// Account it acts as.
    pub user: String,
    /// Hex BLAKE3 of the secret.
    pub hash: String,
    /// Created, Unix seconds.
    pub created: u64,
    /// Expiry, Unix seconds.
    #[serde(default)]
    pub expires_at: Option<u64>,
}

/// An S3 access key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct S3KeyRecord {
    /// Access key id.
    pub access_key: String,
    /// Secret (SigV4 needs it).
    pub secret: String,
    /// Label.
    pub name: String,
    /// Full access to every bucket.
    pub admin: bool,
    /// May create buckets.
    pub can_create_buckets: bool,
    /// Created, Unix seconds.
    pub created: u64,
}

/// The state database.
#[derive(Debug)]
pub struct StateDb {
    db: Database,
}

impl StateDb {
    /// Opens or creates `path` (mode 0600).
    ///
    /// # Errors
    /// [`StateError::Open`].
    pub fn open(path: &Path) -> Result<Self, StateError> {
        let open_err = |detail: String| StateError::Open {
            path: path.display().to_string(),
            detail,
        };
        let db = Database::create(path).map_err(|e| open_err(e.to_string()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| open_err(e.to_string()))?;
        let s = Self { db };
        // Create every table so readers never see "table does not exist".
        let tx = s.db.begin_write()?;
        for t in ALL {
            tx.open_table(t.def())?;
        }
        tx.commit()?;
        match s.get::<u32>(META, "schema")? {
            None => s.put(META, "schema", &SCHEMA)?,
            Some(v) if v == SCHEMA => {}
            Some(v) => {
                return Err(open_err(format!(
                    "it has schema {v}, this dwd understands {SCHEMA}: use a newer dwd"
                )));
            }
        }
        Ok(s)
    }

    /// One record.
    ///
    /// # Errors
    /// [`StateError`].
    pub fn get<T: DeserializeOwned>(&self, t: Table, key: &str) -> Result<Option<T>, StateError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(t.def())?;
        match table.get(key)? {
            None => Ok(None),
            Some(v) => decode(t, key, v.value()).map(Some),
        }
    }

    /// Every record, sorted by key.
    ///
    /// # Errors
    /// [`StateError`].
    pub fn list<T: DeserializeOwned>(&self, t: Table) -> Result<Vec<(String, T)>, StateError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(t.def())?;
        let mut out = Vec::new();
        for r in table.iter()? {
            let (k, v) = r?;
            let key = k.value().to_owned();
            let val = decode(t, &key, v.value())?;
            out.push((key, val));
        }
        Ok(out)
    }

    /// Inserts or replaces a record (durably).
    ///
    /// # Errors
    /// [`StateError`].
    pub fn put<T: Serialize>(&self, t: Table, key: &str, value: &T) -> Result<(), StateError> {
        let bytes = serde_json::to_vec(value).map_err(|e| StateError::Db(e.to_string()))?;
        let tx = self.db.begin_write()?;
        {
            let mut table = tx.open_table(t.def())?;
            table.insert(key, bytes.as_slice())?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Inserts a record only if the key is free; `false` if it exists.
    ///
    /// # Errors
    /// [`StateError`].
    pub fn insert_new<T: Serialize>(
        &self,
        t: Table,
        key: &str,
        value: &T,
    ) -> Result<bool, StateError> {
        let bytes = serde_json::to_vec(value).map_err(|e| StateError::Db(e.to_string()))?;
        let tx = self.db.begin_write()?;
        {
            let mut table = tx.open_table(t.def())?;
            if table.get(key)?.is_some() {
                return Ok(false);
            }
            table.insert(key, bytes.as_slice())?;
        }
        tx.commit()?;
        Ok(true)
    }

    /// Removes a record; `true` if it existed.
    ///
    /// # Errors
    /// [`StateError`].
    pub fn remove(&self, t: Table, key: &str) -> Result<bool, StateError> {
        let tx = self.db.begin_write()?;
        let existed = {
            let mut table = tx.open_table(t.def())?;
            table.remove(key)?.is_some()
        };
        tx.commit()?;
        Ok(existed)
    }

    /// Removes every record whose key starts with `prefix`; returns how many.
    ///
    /// # Errors
    /// [`StateError`].
    pub fn remove_prefix(&self, t: Table, prefix: &str) -> Result<usize, StateError> {
        let tx = self.db.begin_write()?;
        let n = {
            let mut table = tx.open_table(t.def())?;
            let keys: Vec<String> = table
                .range(prefix..)?
                .map_while(|r| {
                    r.ok()
                        .map(|(k, _)| k.value().to_owned())
                        .filter(|k| k.starts_with(prefix))
                })
                .collect();
            for k in &keys {
                table.remove(k.as_str())?;
            }
            keys.len()
        };
        tx.commit()?;
        Ok(n)
    }

    /// Every table as JSON (for `dwd --dump-state`; secrets are redacted).
    ///
    /// # Errors
    /// [`StateError`].
    pub fn dump(&self) -> Result<serde_json::Value, StateError> {
        let mut out = serde_json::Map::new();
        for t in ALL {
            let mut rows = serde_json::Map::new();
            for (k, mut v) in self.list::<serde_json::Value>(t)? {
                for secret in ["secret", "password_hash", "hash"] {
                    if let Some(f) = v.get_mut(secret) {
                        *f = serde_json::Value::String("<redacted>".into());
                    }
                }
                rows.insert(k, v);
            }
            out.insert(t.name.to_owned(), serde_json::Value::Object(rows));
        }
        Ok(serde_json::Value::Object(out))
    }
}

fn decode<T: DeserializeOwned>(t: Table, key: &str, bytes: &[u8]) -> Result<T, StateError> {
    serde_json::from_slice(bytes).map_err(|e| StateError::Record {
        table: t.name,
        key: key.to_owned(),
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.redb");
        {
            let db = StateDb::open(&p).unwrap();
            let r = ArrayRecord {
                id: "u".into(),
                name: "a".into(),
                devices: vec!["/x".into()],
            };
            db.put(ARRAYS, "u", &r).unwrap();
            assert!(!db.insert_new(ARRAYS, "u", &r).unwrap());
            db.put(GRANTS, "k1/b1", &"read").unwrap();
            db.put(GRANTS, "k1/b2", &"write").unwrap();
            db.put(GRANTS, "k2/b1", &"read").unwrap();
            assert_eq!(db.remove_prefix(GRANTS, "k1/").unwrap(), 2);
        }
        let db = StateDb::open(&p).unwrap();
        let got: Vec<(String, ArrayRecord)> = db.list(ARRAYS).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1.devices, vec!["/x".to_owned()]);
        assert_eq!(db.list::<String>(GRANTS).unwrap().len(), 1);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn damaged_records_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(&dir.path().join("s")).unwrap();
        db.put(USERS, "bob", &"not a user").unwrap();
        let e = db.get::<UserRecord>(USERS, "bob").unwrap_err();
        assert!(e.to_string().contains("users/bob"), "{e}");
    }

    #[test]
    fn dump_redacts_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(&dir.path().join("s")).unwrap();
        db.put(
            S3_KEYS,
            "AK",
            &S3KeyRecord {
                access_key: "AK".into(),
                secret: "very-secret".into(),
                name: "n".into(),
                admin: false,
                can_create_buckets: true,
                created: 0,
            },
        )
        .unwrap();
        let d = db.dump().unwrap().to_string();
        assert!(!d.contains("very-secret"));
        assert!(d.contains("<redacted>"));
    }
}
