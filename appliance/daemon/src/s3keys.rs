//! S3 access keys and their per-bucket grants (management side; [`crate::s3store::DbAuth`]
//! is the S3 side).

use dw_api::types::{BucketGrant, CreateS3KeyRequest, CreateS3KeyResponse, S3KeyInfo};

use crate::appliance::Appliance;
use crate::error::{OpError, OpResult};
use crate::state::{GRANTS, S3_KEYS, S3KeyRecord, StateDb};
use crate::util::{now_secs, random_string};

const KEY_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const SECRET_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn info(db: &StateDb, k: &S3KeyRecord) -> OpResult<S3KeyInfo> {
    let prefix = format!("{}/", k.access_key);
    let grants = db
        .list::<String>(GRANTS)?
        .into_iter()
        .filter_map(|(key, access)| {
            key.strip_prefix(&prefix).map(|b| BucketGrant {
                bucket: b.to_owned(),
                access,
            })
        })
        .collect();
    Ok(S3KeyInfo {
        access_key: k.access_key.clone(),
        name: k.name.clone(),
        created: k.created,
        admin: k.admin,
        can_create_buckets: k.can_create_buckets,
        grants,
    })
}

/// Every key.
///
/// # Errors
/// State errors.
pub fn list(db: &StateDb) -> OpResult<Vec<S3KeyInfo>> {
    db.list::<S3KeyRecord>(S3_KEYS)?
        .iter()
        .map(|(_, k)| info(db, k))
        .collect()
}

/// Creates a key: `DW` + 18 base32 characters, secret of 40 base64 characters (240 bits).
///
/// # Errors
/// [`OpError::Invalid`] for a bad label.
pub fn create(db: &StateDb, req: &CreateS3KeyRequest) -> OpResult<CreateS3KeyResponse> {
    if req.name.is_empty() || req.name.len() > 128 || req.name.chars().any(char::is_control) {
        return Err(OpError::Invalid(
            "a key label must be 1-128 printable characters".into(),
        ));
    }
    let access_key = format!(
        "DW{}",
        random_string(18, KEY_ALPHABET).map_err(OpError::Internal)?
    );
    let secret = random_string(40, SECRET_ALPHABET).map_err(OpError::Internal)?;
    let rec = S3KeyRecord {
        access_key: access_key.clone(),
        secret: secret.clone(),
        name: req.name.clone(),
        admin: req.admin,
        can_create_buckets: req.can_create_buckets,
        created: now_secs(),
    };
    if !db.insert_new(S3_KEYS, &access_key, &rec)? {
        return Err(OpError::Conflict("access key collision, try again".into()));
    }
    Ok(CreateS3KeyResponse {
        info: info(db, &rec)?,
        secret_key: secret,
    })
}

/// Deletes a key and its grants.
///
/// # Errors
/// [`OpError::NotFound`].
pub fn delete(db: &StateDb, access_key: &str) -> OpResult<()> {
    if !db.remove(S3_KEYS, access_key)? {
        return Err(OpError::NotFound(format!("no S3 key {access_key:?}")));
    }
    db.remove_prefix(GRANTS, &format!("{access_key}/"))?;
    Ok(())
}

/// Sets (or with `none` removes) a key's access to a bucket.
///
/// # Errors
/// [`OpError::NotFound`] for an unknown key or bucket, [`OpError::Invalid`] for the level.
pub fn grant(app: &Appliance, access_key: &str, bucket: &str, access: &str) -> OpResult<S3KeyInfo> {
    let k: S3KeyRecord = app
        .db
        .get(S3_KEYS, access_key)?
        .ok_or_else(|| OpError::NotFound(format!("no S3 key {access_key:?}")))?;
    let rec = app
        .container_records()?
        .into_iter()
        .find(|r| r.name == bucket && r.kind == "bucket");
    if rec.is_none() {
        return Err(OpError::NotFound(format!("no bucket {bucket:?}")));
    }
    let key = format!("{access_key}/{bucket}");
    if access == "none" {
        app.db.remove(GRANTS, &key)?;
    } else {
        crate::s3store::parse_access(access).map_err(OpError::Invalid)?;
        app.db.put(GRANTS, &key, &access.to_owned())?;
    }
    info(&app.db, &k)
}
