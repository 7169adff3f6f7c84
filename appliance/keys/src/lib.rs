//! Keys and unlock for DataWarehouse VDEs.
//!
//! Each VDE has a random 256-bit [`MasterKey`]. It is never stored in clear: a [`KeyStore`]
//! (serialized into the VDE's key-slot area) holds it wrapped in key slots, and any one working
//! slot opens the VDE:
//!
//! - **TPM2**: a wrapping key sealed to the TPM under a PCR policy, optionally with a PIN
//!   ([`NewSlot::tpm2`]);
//! - **recovery passphrase**: Argon2id with the parameters recorded in the slot
//!   ([`NewSlot::generated_passphrase`], [`NewSlot::user_passphrase`]);
//! - **SEV-SNP**: a key the firmware derives from the launch measurement ([`NewSlot::sev_snp`]);
//! - **peer release**: a share released by a key-release service after it verified a fresh TPM
//!   quote (and SEV-SNP report) over TLS ([`NewSlot::peer`], [`peer`]).
//!
//! Planned firmware or boot changes never lock anyone out: [`ops::prepare_update`] adds a
//! temporary slot before the update and [`ops::reseal`] brings every slot to the new, trusted
//! state with the still-open key. [`unlock()`] tries slots in order and says exactly which failed
//! and why. Every change is recorded in a hash-chained, MAC'd audit log inside the store.
//!
//! The design, the binary formats and the threat model are in docs/KEYS.md.
#![deny(missing_docs)]

pub mod audit;
mod codec;
pub mod ops;
pub mod passphrase;
pub mod pcr;
pub mod peer;
mod secret;
pub mod snp;
mod store;
pub mod tpm;
pub mod types;
pub mod unlock;
mod wrap;

pub use audit::{AuditAction, AuditEntry, AuditSummary, AuditVerifyError};
pub use codec::Truncated;
pub use ops::{
    PassphraseSlotError, PeerEnrollOptions, PeerSlotError, PrepareUpdateError, ResealEnv,
    ResealError, ResealOutcome, ResealReport, SnpSlotError, TpmSlotError, TpmSlotOptions,
    UnenrollError, prepare_update, reseal, unenroll_peer,
};
pub use passphrase::{Argon2Params, Passphrase, WeakPassphrase, check_strength};
pub use pcr::{PcrChange, PcrSelection, PcrValues};
pub use secret::{MasterKey, Pin, RandomError};
pub use store::{
    AddSlotError, DecodeKeyStoreError, EscrowError, KeyStore, MAX_ENCODED_LEN, MAX_LABEL_BYTES,
    MAX_SLOTS, NewSlot, RemovePolicy, RemoveSlotError, RotateError, SlotDetails, SlotInfo,
    WrongMasterKey, WrongVde,
};
#[doc(hidden)]
pub use store::{SlotWrappingKeys, repair_checksum_for_fuzzing};
pub use types::{Clock, FixedClock, SlotId, SlotKind, SystemClock, UnixTime, VdeId};
pub use unlock::{
    Attempt, AttemptFailure, SlotRef, UnlockConfig, UnlockFailed, UnlockOutcome, unlock,
    unlock_with, unlock_with_passphrase,
};
