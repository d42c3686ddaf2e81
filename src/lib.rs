//! maif-store: canonical MAIF 3.1 artifacts (MAIF 3.0 made rigorous, with append-only
//! commits) on local disk and object stores.
#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod artifact;
pub mod aws_profile;
pub mod error;
pub mod format;
pub mod keys;
pub mod location;
mod parallel;
pub mod store;

pub use artifact::{ArtifactReader, ArtifactWriter, CreateOptions, NewBlock};
pub use error::{Error, Result};
pub use keys::SigningKey;

/// The README's examples, compiled as doctests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
