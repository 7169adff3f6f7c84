//! `dwd`, the DataWarehouse appliance daemon.
//!
//! It owns drives, arrays, VDEs and keys ([`appliance`]), and serves them: the management API
//! on a local Unix socket and HTTPS ([`api`], contract in the `dw-api` crate), S3
//! ([`s3store`] over the `dw-s3` front end), NBD ([`nbdexport`] over `dw-nbd`) and Prometheus
//! metrics ([`metrics`]); it runs scrubs, health polling and snapshot retention on schedules
//! ([`scheduler`]). See docs/DAEMON.md for configuration and operation, docs/API.md for the API.

#![deny(missing_docs)]

pub mod api;
pub mod appliance;
pub mod auth;
pub mod config;
pub mod demo;
pub mod devices;
pub mod error;
pub mod jobs;
pub mod metrics;
pub mod nbdexport;
pub mod policy_dto;
pub mod s3keys;
pub mod s3store;
pub mod scheduler;
pub mod server;
pub mod state;
pub mod tls;
pub mod util;
pub mod vdekeys;

pub use appliance::Appliance;
pub use config::Config;
