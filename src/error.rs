//! Errors of the artifact layer.

use crate::format::FormatError;
use crate::keys::KeyError;
use crate::store::StoreError;

/// An artifact-level failure. Messages name the block, offset or location involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("{context}: {source}")]
    Format {
        context: String,
        source: FormatError,
    },
    #[error(
        "the key does not match the artifact: it is signed by {artifact}, the key given is {given}"
    )]
    KeyMismatch { artifact: String, given: String },
    #[error("the artifact is finalized: nothing can be appended after its finalize entry")]
    Finalized,
    #[error("no block with id {block_id}")]
    UnknownBlock { block_id: String },
    #[error("block {block_id} has no version {version} (latest is {latest})")]
    NoSuchVersion {
        block_id: String,
        version: u32,
        latest: u32,
    },
    #[error(
        "invalid block id {text:?}: expected a UUID such as 123e4567-e89b-12d3-a456-426614174000"
    )]
    InvalidBlockId { text: String },
    #[error("verification failed: {0}")]
    Verification(String),
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub(crate) fn format(context: impl Into<String>) -> impl FnOnce(FormatError) -> Error {
        let context = context.into();
        move |source| Error::Format { context, source }
    }

    /// Whether the artifact is in a format version this build does not read. Commands that
    /// read it report that as a usage error, not as damage; `verify` reports it as a problem
    /// (the bytes are not a valid artifact of this version, and a flipped version byte looks
    /// the same).
    pub fn is_unsupported_version(&self) -> bool {
        matches!(
            self,
            Error::Format {
                source: FormatError::UnsupportedVersion { .. },
                ..
            } | Error::Store(StoreError::Format {
                source: FormatError::UnsupportedVersion { .. },
                ..
            })
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
