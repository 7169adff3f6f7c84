//! Access keys and per-key bucket permissions: [`Authorizer`] and the in-memory [`StaticAuth`].
//!
//! s3s verifies SigV4 (headers, presigned URLs, streaming payloads) with the secret key the
//! authorizer returns; the S3 layer then asks [`Authorizer::allowed`] for every bucket a request
//! touches (a copy touches two).

use std::collections::HashMap;

use crate::store::BucketInfo;

/// What a request does to a bucket. Levels are ordered: a grant of `Write` includes `Read`,
/// `Manage` includes both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Access {
    /// List objects, uploads and parts; get/head objects; read location, lock configuration,
    /// retention and legal hold.
    Read,
    /// Put, copy into, delete objects; multipart uploads; set retention (extend) and legal hold.
    Write,
    /// Delete the bucket, change its object lock configuration, bypass governance retention.
    Manage,
}

/// Decides who may do what. Implemented by [`StaticAuth`] here and by the daemon over its key
/// database. Methods are called on the async path and must not block.
pub trait Authorizer: Send + Sync + 'static {
    /// The secret of an access key, `None` if the key is unknown or disabled.
    fn secret_key(&self, access_key: &str) -> Option<String>;
    /// Whether the key may create buckets.
    fn can_create_buckets(&self, access_key: &str) -> bool;
    /// Whether the key may access the bucket at that level. Implementations should allow the
    /// bucket's owner ([`BucketInfo::owner`]) everything.
    fn allowed(&self, access_key: &str, bucket: &BucketInfo, access: Access) -> bool;
}

#[derive(Debug, Clone)]
struct KeyEntry {
    secret: String,
    admin: bool,
    can_create: bool,
}

/// A fixed set of keys and grants, for tests, benchmarks and small deployments.
///
/// Model: the owner (creator) of a bucket has full access; an admin key has full access to every
/// bucket; any other key needs a grant of at least the requested [`Access`] level.
#[derive(Debug, Clone, Default)]
pub struct StaticAuth {
    keys: HashMap<String, KeyEntry>,
    grants: HashMap<(String, String), Access>,
}

impl StaticAuth {
    /// No keys: every request is refused.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) an ordinary key that may create buckets.
    #[must_use]
    pub fn with_key(mut self, access_key: &str, secret: &str) -> Self {
        self.keys.insert(
            access_key.to_owned(),
            KeyEntry {
                secret: secret.to_owned(),
                admin: false,
                can_create: true,
            },
        );
        self
    }

    /// Adds (or replaces) a key with full access to all buckets.
    #[must_use]
    pub fn with_admin(mut self, access_key: &str, secret: &str) -> Self {
        self.keys.insert(
            access_key.to_owned(),
            KeyEntry {
                secret: secret.to_owned(),
                admin: true,
                can_create: true,
            },
        );
        self
    }

    /// Forbids a key to create buckets.
    #[must_use]
    pub fn without_create(mut self, access_key: &str) -> Self {
        if let Some(k) = self.keys.get_mut(access_key) {
            k.can_create = false;
        }
        self
    }

    /// Grants `access_key` the `level` on `bucket` (replacing an earlier grant).
    #[must_use]
    pub fn with_grant(mut self, access_key: &str, bucket: &str, level: Access) -> Self {
        self.grants
            .insert((access_key.to_owned(), bucket.to_owned()), level);
        self
    }
}

impl Authorizer for StaticAuth {
    fn secret_key(&self, access_key: &str) -> Option<String> {
        self.keys.get(access_key).map(|k| k.secret.clone())
    }

    fn can_create_buckets(&self, access_key: &str) -> bool {
        self.keys.get(access_key).is_some_and(|k| k.can_create)
    }

    fn allowed(&self, access_key: &str, bucket: &BucketInfo, access: Access) -> bool {
        let Some(k) = self.keys.get(access_key) else {
            return false;
        };
        if k.admin || bucket.owner == access_key {
            return true;
        }
        self.grants
            .get(&(access_key.to_owned(), bucket.name.clone()))
            .is_some_and(|&level| level >= access)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn bucket(name: &str, owner: &str) -> BucketInfo {
        BucketInfo {
            name: name.into(),
            created: SystemTime::UNIX_EPOCH,
            owner: owner.into(),
            lock: None,
        }
    }

    #[test]
    fn owner_grant_admin() {
        let a = StaticAuth::new()
            .with_key("A", "sa")
            .with_key("B", "sb")
            .with_admin("ROOT", "sr")
            .with_grant("A", "bb", Access::Read)
            .without_create("B");
        let bb = bucket("bb", "B");
        assert!(a.allowed("B", &bb, Access::Manage));
        assert!(a.allowed("A", &bb, Access::Read));
        assert!(!a.allowed("A", &bb, Access::Write));
        assert!(!a.allowed("A", &bucket("other", "B"), Access::Read));
        assert!(a.allowed("ROOT", &bb, Access::Manage));
        assert!(!a.allowed("NOPE", &bb, Access::Read));
        assert!(a.can_create_buckets("A"));
        assert!(!a.can_create_buckets("B"));
        assert_eq!(a.secret_key("A").as_deref(), Some("sa"));
        assert_eq!(a.secret_key("X"), None);
    }
}
