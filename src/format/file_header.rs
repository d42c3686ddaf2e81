//! The 32-byte file header.

use super::FormatError;
use super::codec::{Codec, FixedCodec, Reader, Writer};

/// Magic number at offset 0 of every MAIF file.
pub const FILE_MAGIC: [u8; 4] = *b"MAIF";
/// Encoded size of the file header.
pub const FILE_HEADER_LEN: usize = 32;
/// The major version this build writes and reads.
pub const MAJOR_VERSION: u8 = 3;
/// The minor version this build writes and reads: 3.1 is the append-only commit layout.
/// 3.0, the pre-release layout that rewrote its tail on every commit, is refused by name.
pub const MINOR_VERSION: u8 = 1;

/// The file header. Written once at creation and never rewritten: appends only ever add bytes
/// at the end of the file; the counts the MAIF 3.0 text keeps here live in each commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileHeader {
    /// Major format version ([`MAJOR_VERSION`] for everything this build writes).
    pub major: u8,
    /// Minor format version ([`MINOR_VERSION`] for everything this build writes).
    pub minor: u8,
    /// Reserved for future use; writers store 0, readers ignore unknown bits.
    pub flags: u16,
    /// Creation time, microseconds since the Unix epoch.
    pub created_us: u64,
    /// Random identifier of the artifact (a UUID).
    pub artifact_id: [u8; 16],
}

impl FileHeader {
    /// A header of this build's version (3.1) with no flags, created at `created_us` (microseconds since the Unix epoch).
    pub fn new(created_us: u64, artifact_id: [u8; 16]) -> Self {
        Self {
            major: MAJOR_VERSION,
            minor: MINOR_VERSION,
            flags: 0,
            created_us,
            artifact_id,
        }
    }
}

impl Codec for FileHeader {
    const STRUCTURE: &'static str = "file header";

    fn encode(&self, out: &mut impl Writer) {
        out.put_bytes(&FILE_MAGIC);
        out.put_u8(self.major);
        out.put_u8(self.minor);
        out.put_u16(self.flags);
        out.put_u64(self.created_us);
        out.put_bytes(&self.artifact_id);
    }

    /// Reads the 32 bytes. The version is checked before anything else is read, so a file of
    /// another version is named as such rather than reported as damaged.
    fn read(r: &mut Reader<'_>) -> Result<Self, FormatError> {
        r.magic(&FILE_MAGIC, "magic")?;
        let major = r.u8("major_version")?;
        let minor = r.u8("minor_version")?;
        if (major, minor) != (MAJOR_VERSION, MINOR_VERSION) {
            return Err(FormatError::UnsupportedVersion { major, minor });
        }
        Ok(FileHeader {
            major,
            minor,
            flags: r.u16("flags")?,
            created_us: r.u64("created")?,
            artifact_id: r.array("artifact_id")?,
        })
    }
}

impl FixedCodec<FILE_HEADER_LEN> for FileHeader {}
