//! The error every appliance operation returns, and its HTTP mapping.
//!
//! One enum for all operations on purpose: the API edge needs the same classification (status
//! and code) for every call, and the causes come from the layers below with their own specific
//! messages, which are kept verbatim in the text.

use dw_vde::{OpenError, VdeError};

/// Why an appliance operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// The request is malformed or a value is out of range.
    #[error("{0}")]
    Invalid(String),
    /// Something named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// It exists already, or the state forbids the change (not empty, last slot, busy).
    #[error("{0}")]
    Conflict(String),
    /// The VDE is locked: unlock it first.
    #[error("{0}")]
    Locked(String),
    /// Refused by retention, legal hold or a policy.
    #[error("{0}")]
    Forbidden(String),
    /// The backing storage is offline or missing, or the device cannot serve.
    #[error("{0}")]
    Unavailable(String),
    /// Out of space or over quota.
    #[error("{0}")]
    NoSpace(String),
    /// A feature that cannot run on this machine (no TPM, no SEV-SNP).
    #[error("{0}")]
    NotAvailable(String),
    /// Anything else (I/O errors, damaged metadata): logged in full.
    #[error("{0}")]
    Internal(String),
}

impl OpError {
    /// HTTP status.
    #[must_use]
    pub fn status(&self) -> u16 {
        match self {
            OpError::Invalid(_) => 400,
            OpError::Forbidden(_) => 403,
            OpError::NotFound(_) => 404,
            OpError::Conflict(_) => 409,
            OpError::Locked(_) => 423,
            OpError::NoSpace(_) => 507,
            OpError::NotAvailable(_) => 501,
            OpError::Unavailable(_) => 503,
            OpError::Internal(_) => 500,
        }
    }

    /// Code for [`dw_api::types::ErrorBody::code`].
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            OpError::Invalid(_) => "bad_request",
            OpError::Forbidden(_) => "forbidden",
            OpError::NotFound(_) => "not_found",
            OpError::Conflict(_) => "conflict",
            OpError::Locked(_) => "locked",
            OpError::NoSpace(_) => "no_space",
            OpError::NotAvailable(_) => "not_available",
            OpError::Unavailable(_) => "unavailable",
            OpError::Internal(_) => "internal",
        }
    }
}

impl From<VdeError> for OpError {
    fn from(e: VdeError) -> Self {
        let msg = e.to_string();
        match e {
            VdeError::NoSuchContainer(_)
            | VdeError::NoSuchObject { .. }
            | VdeError::NoSuchSnapshot { .. }
            | VdeError::NoSuchUpload(_) => OpError::NotFound(msg),
            VdeError::ContainerExists(_) | VdeError::ContainerNotEmpty(_) => OpError::Conflict(msg),
            VdeError::WrongKind { .. } | VdeError::Invalid(_) | VdeError::OutOfRange { .. } => {
                OpError::Invalid(msg)
            }
            VdeError::Retained(_) | VdeError::Policy(_) | VdeError::ReadOnly(_) => {
                OpError::Forbidden(msg)
            }
            VdeError::QuotaExceeded(_) | VdeError::NoSpace(_) => OpError::NoSpace(msg),
            _ => OpError::Internal(msg),
        }
    }
}

impl From<OpenError> for OpError {
    fn from(e: OpenError) -> Self {
        let msg = e.to_string();
        match e {
            OpenError::NotAVde | OpenError::Unsuitable(_) => OpError::Invalid(msg),
            OpenError::SealMismatch
            | OpenError::WrongKey
            | OpenError::Tampered
            | OpenError::RecoveryBlockAltered => OpError::Forbidden(msg),
            _ => OpError::Internal(msg),
        }
    }
}

impl From<crate::state::StateError> for OpError {
    fn from(e: crate::state::StateError) -> Self {
        OpError::Internal(e.to_string())
    }
}

impl From<crate::auth::AuthError> for OpError {
    fn from(e: crate::auth::AuthError) -> Self {
        use crate::auth::AuthError as A;
        let msg = e.to_string();
        match e {
            A::Invalid(_) => OpError::Invalid(msg),
            A::NotFound(_) => OpError::NotFound(msg),
            A::Conflict(_) => OpError::Conflict(msg),
            _ => OpError::Internal(msg),
        }
    }
}

impl From<dw_raid::ManageError> for OpError {
    fn from(e: dw_raid::ManageError) -> Self {
        use dw_raid::ManageError as M;
        let msg = e.to_string();
        match e {
            M::Offline(_) => OpError::Unavailable(msg),
            M::NoSuchRole { .. } => OpError::NotFound(msg),
            M::Unsuitable { .. } => OpError::Invalid(msg),
            M::Busy(_) | M::InvalidState(_) | M::TableFull { .. } => OpError::Conflict(msg),
            _ => OpError::Internal(msg),
        }
    }
}

impl From<dw_raid::CreateError> for OpError {
    fn from(e: dw_raid::CreateError) -> Self {
        use dw_raid::CreateError as C;
        let msg = e.to_string();
        match e {
            C::Io(_) => OpError::Internal(msg),
            _ => OpError::Invalid(msg),
        }
    }
}

impl From<dw_raid::ArrayIoError> for OpError {
    fn from(e: dw_raid::ArrayIoError) -> Self {
        OpError::Unavailable(e.to_string())
    }
}

impl From<tokio::task::JoinError> for OpError {
    fn from(e: tokio::task::JoinError) -> Self {
        OpError::Internal(format!("a worker thread failed: {e}"))
    }
}

/// `Result` of appliance operations.
pub type OpResult<T> = Result<T, OpError>;
