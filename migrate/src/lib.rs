//! Migrates legacy MAIF artifacts into canonical MAIF (3.1).
//!
//! Readers turn each legacy input (two S3 layouts, three local binary formats, Python SDK
//! 2.1 files) into one [`model::LegacyArtifact`]: blocks in migration order, each with its
//! verbatim legacy evidence and named checks. [`migrate::migrate`] then writes the blocks,
//! signed by the migrating key, to any `maif_store` location and returns a
//! [`report::Report`]. TEXT, EMBD and IMAG payloads get their canonical framing from the
//! legacy evidence ([`framing`]), or are kept verbatim as `BINA` when it cannot tell.
//! Legacy inputs are evidence, not truth: nothing is written to the source, and "cannot
//! verify" is never reported as tampering.

pub mod cli;
pub(crate) mod codec;
pub mod error;
pub mod export;
pub mod framing;
pub mod hmac;
pub mod inplace;
pub mod local;
pub mod migrate;
pub mod model;
pub mod pyjson;
pub mod report;
pub mod s3;
pub mod sdk;
pub mod source;

pub use error::{MigrateError, Result};
