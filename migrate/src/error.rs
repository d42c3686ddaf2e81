//! Errors of the migrator.

/// Why a migration could not run. Problems *inside* a legacy artifact that still allow
/// migrating what is there are reported as findings and checks, not as errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    /// The input is not any legacy format this tool knows.
    #[error("{source_name}: {reason}")]
    Unrecognized { source_name: String, reason: String },
    /// A structure that must be intact to read anything at all is not.
    #[error("{source_name}: {what} at byte {offset}: {reason}")]
    Malformed {
        source_name: String,
        what: String,
        offset: u64,
        reason: String,
    },
    /// Bad command-line input (a key file, a flag combination, a location).
    #[error("{0}")]
    Usage(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("object {key}: {source}")]
    Object {
        key: String,
        #[source]
        source: object_store::Error,
    },
    #[error(transparent)]
    Store(#[from] maif_store::Error),
    /// A migrated artifact whose original cannot be re-created (not a migration, or
    /// evidence missing), named with the block or section at fault.
    #[error("{artifact}: cannot export the original: {reason}")]
    Export { artifact: String, reason: String },
}

impl MigrateError {
    pub fn malformed(
        source_name: &str,
        what: impl Into<String>,
        offset: u64,
        reason: impl Into<String>,
    ) -> Self {
        MigrateError::Malformed {
            source_name: source_name.to_owned(),
            what: what.into(),
            offset,
            reason: reason.into(),
        }
    }
}

pub type Result<T, E = MigrateError> = std::result::Result<T, E>;
