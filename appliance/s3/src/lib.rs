//! S3-compatible API of DataWarehouse.
//!
//! Layers, bottom to top:
//! - [`ObjectStore`] ([`store`]): the blocking, streaming storage interface this crate needs.
//!   The daemon implements it over the VDE; [`MemStore`] is a complete in-memory version.
//! - [`Authorizer`] ([`auth`]): access keys and per-key bucket permissions; [`StaticAuth`] is
//!   the in-memory version.
//! - [`S3Api`] ([`service`]): the `s3s::S3` implementation (s3s does HTTP parsing, XML and SigV4).
//! - [`serve`] ([`server`]): hyper on a TCP listener with bounded connections, requests,
//!   headers and timeouts, plus an [`S3Observer`] hook for metrics.
//!
//! See `docs/S3.md` for the operations, error mapping, limits and client setup.

pub mod auth;
pub mod body;
pub mod linger;
pub mod listing;
pub mod mem;
pub mod parse;
pub mod server;
pub mod service;
pub mod store;

pub use auth::{Access, Authorizer, StaticAuth};
pub use body::{BodyDigest, BodyError, BodyLimits, ObjectBody};
pub use mem::MemStore;
pub use server::{
    Acceptor, PlainTcp, RequestEvent, S3Config, S3Observer, ServeError, build_service, serve,
    serve_with,
};
pub use service::{S3Api, map_store_error};
pub use store::{ObjectStore, ObjectStoreError};
