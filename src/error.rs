//! Errors of the artifact layer.

use crate::format::FormatError;
use crate::keys::KeyError;
use crate::store::StoreError;

/// An artifact-level failure. Messages name the block, offset or location involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A store failed: the artifact is missing, damaged, in conflict, or the I/O failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A key file could not be read, written or parsed, or a public key is unusable.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A structure of the artifact failed to decode.
    #[error("{context}: {source}")]
    Format {
        /// What was being decoded (for example `"metadata section"` or a block and its offset).
        context: String,
        /// The decoding failure, with its structure, field and offset.
        source: FormatError,
    },
    /// The signing key given is not the key the artifact is signed with.
    #[error(
        "the key does not match the artifact: it is signed by {artifact}, the key given is {given}"
    )]
    KeyMismatch {
        /// Hex of the public key the artifact is signed with.
        artifact: String,
        /// Hex of the public key of the key given.
        given: String,
    },
    /// The artifact holds a finalize entry, after which nothing may be appended.
    #[error("the artifact is finalized: nothing can be appended after its finalize entry")]
    Finalized,
    /// No block with the given id exists in the artifact.
    #[error("no block with id {block_id}")]
    UnknownBlock {
        /// The id asked for, as a UUID string.
        block_id: String,
    },
    /// The block exists but has no record with the version number asked for.
    #[error("block {block_id} has no version {version} (latest is {latest})")]
    NoSuchVersion {
        /// The block id, as a UUID string.
        block_id: String,
        /// The version asked for (1 is the first record of the block).
        version: u32,
        /// The block's newest version.
        latest: u32,
    },
    /// A block id given as text is not a UUID.
    #[error(
        "invalid block id {text:?}: expected a UUID such as 123e4567-e89b-12d3-a456-426614174000"
    )]
    InvalidBlockId {
        /// The text given.
        text: String,
    },
    /// Verification found the artifact invalid; the message says why.
    #[error("verification failed: {0}")]
    Verification(String),
    /// A request or input the library cannot act on (a bad argument, a refused operation); the message says why.
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

/// A result whose error defaults to this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
