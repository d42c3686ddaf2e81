//! Turning a user's location string into a store.

use std::path::PathBuf;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::store::{BlockStore, FileStore};

/// Where an artifact lives, as the user named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A single file on the local file system.
    File(PathBuf),
}

impl Location {
    /// Parses a location: a path to a single file (`notes.maif`, `/data/a.maif`).
    pub fn parse(text: &str) -> Result<Self> {
        if text.is_empty() {
            return Err(Error::Invalid("empty location".into()));
        }
        if let Some((scheme, _)) = text.split_once("://") {
            return Err(Error::Invalid(format!(
                "location {text:?}: the {scheme}:// scheme is not supported by this build; give a path to a .maif file"
            )));
        }
        Ok(Location::File(PathBuf::from(text)))
    }

    /// Opens the store behind the location.
    pub fn store(&self) -> Result<Arc<dyn BlockStore>> {
        match self {
            Location::File(path) => Ok(Arc::new(FileStore::new(path.clone()))),
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::File(path) => write!(f, "{}", path.display()),
        }
    }
}
