//! The provenance rules of FORMAT.md 9.2, written once: which action may follow which.
//!
//! [`ProvenanceRules`] is a small state machine fed an artifact's commits and, within each,
//! its entries in order. Each step says whether it is allowed; a refused step names its
//! [`Refusal`], whose text is the reason full verification reports (and FORMAT.md 9.2
//! quotes) and which converts into the error the writer returns.
//!
//! * Full verification (`ChainCheck::check` in `verify.rs`) feeds every commit
//!   ([`ProvenanceRules::begin_commit`], [`ProvenanceRules::records_left`],
//!   [`ProvenanceRules::end_commit`]) and every entry ([`ProvenanceRules::entry`]); a refused
//!   step is reported and verification carries on.
//! * The writer (`writer.rs`) holds the rules of the commit it builds
//!   ([`ProvenanceRules::writing_after`]; [`ProvenanceRules::create`] for commit 0): it asks
//!   before queueing blocks ([`ProvenanceRules::entry_allowed`]) and events
//!   ([`ProvenanceRules::event`]), gives each block its entry's action and version
//!   ([`ProvenanceRules::block_action`], [`ProvenanceRules::block_version`]), checks the base
//!   before committing ([`ProvenanceRules::commit_allowed`]) and takes the sealed flag from
//!   the rules ([`ProvenanceRules::sealed_flag`]). The subjects it writes (record digests,
//!   the root before each event) are the ones the rules ask for by construction. It does
//!   not feed its block entries one by one: a block entry is never an artifact's first, and
//!   only what comes before it (a finalize entry, a sealed commit) can refuse it, which
//!   [`ProvenanceRules::entry_allowed`] checks once per add. So the writer does no per-block
//!   work for the rules beyond choosing the action and version, as before.
//! * Recovery (`recover.rs`) appends its salvaged records and its `recover` event through the
//!   writer, so through these rules, and accepts a commit only when full verification, so
//!   these rules, finds nothing.

use super::format_id;
use crate::error::Error;
use crate::format::Action;
use crate::format::digest::Digest;
use crate::format::run::RunEntry;
use crate::format::segment::SegmentHeader;

/// Why a step is not allowed. `Display` gives the reason full verification reports (it adds
/// where: `entry #N (action): ` or `commit N: `).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// A commit after the commit `sealed`, whose sealed flag is set.
    FollowsSealedCommit { sealed: u64 },
    /// An entry after a finalize entry of its commit.
    FollowsFinalize,
    /// A create entry that is not entry #0.
    CreateNotFirst,
    /// Entry #0 is a create entry naming another chain seed.
    CreateNotGenesis,
    /// Entry #0 is not a create entry.
    FirstNotCreate,
    /// An add_block entry whose record is not version 1 of its id.
    AddsExisting { block_id: [u8; 16] },
    /// An update entry whose record is version 1 of its id (the id did not exist).
    UpdatesMissing { block_id: [u8; 16] },
    /// A block already at the highest version a record can carry.
    NoVersionAfter { block_id: [u8; 16], version: u32 },
    /// An add_block or update entry naming another digest than the commit's next record.
    WrongRecord {
        subject: Digest,
        position: u64,
        digest: Digest,
    },
    /// An add_block or update entry when the commit has no record left to name.
    NoRecordLeft,
    /// An event (finalize, convert, ...) not naming the Merkle root of the records before it.
    NotTheRoot,
    /// An add_block, update or create entry offered as an event (events name the root).
    NotAnEvent { action: Action },
    /// Records a commit adds that no add_block or update entry names.
    UnnamedRecords { count: usize },
    /// A commit holding a finalize entry without the sealed flag.
    FinalizeNotSealed,
    /// A commit with the sealed flag and no finalize entry.
    SealedWithoutFinalize,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::FollowsSealedCommit { sealed } => {
                write!(f, "follows commit {sealed}, which finalized the artifact")
            }
            Refusal::FollowsFinalize => f.write_str("follows the finalize entry"),
            Refusal::CreateNotFirst => {
                f.write_str("create must be the first entry, and only the first")
            }
            Refusal::CreateNotGenesis => {
                f.write_str("does not name this artifact's header and metadata")
            }
            Refusal::FirstNotCreate => f.write_str("the first entry must be create"),
            Refusal::AddsExisting { block_id } => {
                write!(f, "adds block {} which already exists", format_id(block_id))
            }
            Refusal::UpdatesMissing { block_id } => {
                write!(
                    f,
                    "updates block {} which did not exist",
                    format_id(block_id)
                )
            }
            Refusal::NoVersionAfter { block_id, version } => write!(
                f,
                "block {} is at version {version}, the last a record can carry",
                format_id(block_id)
            ),
            Refusal::WrongRecord {
                subject,
                position,
                digest,
            } => write!(
                f,
                "names digest {} but record #{position} has {}",
                hex::encode(subject),
                hex::encode(digest)
            ),
            Refusal::NoRecordLeft => f.write_str("names a record this commit does not add"),
            Refusal::NotTheRoot => {
                f.write_str("does not name the Merkle root of the records before it")
            }
            Refusal::NotAnEvent { action } => write!(
                f,
                "{} is not an event: its entry names a record or the chain seed, not the Merkle root",
                action.name()
            ),
            Refusal::UnnamedRecords { count } => write!(
                f,
                "{count} of the records it adds have no add_block or update entry"
            ),
            Refusal::FinalizeNotSealed => {
                f.write_str("has a finalize entry but is not marked sealed")
            }
            Refusal::SealedWithoutFinalize => {
                f.write_str("is marked sealed without a finalize entry")
            }
        }
    }
}

/// The error the writer returns when the rules refuse what it was asked to append.
impl From<Refusal> for Error {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::FollowsSealedCommit { .. } | Refusal::FollowsFinalize => Error::Finalized,
            Refusal::UpdatesMissing { block_id } => Error::UnknownBlock {
                block_id: format_id(&block_id),
            },
            // The writer adds nothing for a committed block with the same content, so an add
            // refused here has other content.
            Refusal::AddsExisting { block_id } => Error::Invalid(format!(
                "block {} already exists with other content; use update to add a new version",
                format_id(&block_id)
            )),
            other => Error::Invalid(format!("provenance: {other}")),
        }
    }
}

/// What a commit's entries can name, as full verification sees it.
pub(crate) trait Subjects {
    /// The artifact's chain seed (what its create entry names).
    fn genesis(&self) -> Digest;
    /// The commit's next record, in record order, which an add_block or update entry names;
    /// `None` when none is left. Taking it adds it to the records before the next entry,
    /// whether or not the entry names it.
    fn next_record(&mut self) -> Option<RunEntry>;
    /// The Merkle root of the records before the entry (an event names it).
    fn root(&mut self) -> Digest;
}

/// Where an artifact's provenance stands: the state the rules of FORMAT.md 9.2 need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProvenanceRules {
    /// The number, in the artifact's chain, of the next entry.
    next_entry: u64,
    /// The commit whose sealed flag is set, if one is.
    sealed_at: Option<u64>,
    /// The open commit holds a finalize entry.
    finalized: bool,
}

impl ProvenanceRules {
    /// Before an artifact's first commit.
    pub(crate) fn new() -> Self {
        Self {
            next_entry: 0,
            sealed_at: None,
            finalized: false,
        }
    }

    /// The rules for the commit a writer builds on the commit `base` (which is assumed to
    /// hold: the writer appends only on a commit signed by its key). Queueing an entry after a
    /// sealed `base` is refused.
    pub(crate) fn writing_after(base: &SegmentHeader) -> Self {
        Self {
            next_entry: base.provenance_count,
            sealed_at: base.is_sealed().then_some(base.seq),
            finalized: false,
        }
    }

    /// May a commit follow the commits so far? Not one after a sealed commit.
    pub(crate) fn commit_allowed(&self) -> Result<(), Refusal> {
        match self.sealed_at {
            Some(sealed) => Err(Refusal::FollowsSealedCommit { sealed }),
            None => Ok(()),
        }
    }

    /// Opens the next commit, whose first entry is number `first_entry` of the artifact's
    /// chain. It is opened even when refused (see [`Self::commit_allowed`]), so that its
    /// entries can still be checked.
    pub(crate) fn begin_commit(&mut self, first_entry: u64) -> Result<(), Refusal> {
        self.next_entry = first_entry;
        self.finalized = false;
        self.commit_allowed()
    }

    /// May an entry be queued in the open commit (the writer's question before adding
    /// blocks)? Not after a sealed commit, nor after a finalize entry.
    pub(crate) fn entry_allowed(&self) -> Result<(), Refusal> {
        self.commit_allowed()?;
        if self.finalized {
            return Err(Refusal::FollowsFinalize);
        }
        Ok(())
    }

    /// Checks the next entry of the open commit, `action` naming `subject`, against what
    /// `subjects` says it must name, and takes the step whatever it finds (so that the entries
    /// after it are checked too). Each broken rule is passed to `found`, in this order: after
    /// a finalize entry; what the action must name; entry #0 not a create entry.
    pub(crate) fn entry(
        &mut self,
        action: Action,
        subject: &Digest,
        subjects: &mut impl Subjects,
        mut found: impl FnMut(Refusal),
    ) {
        let number = self.next_entry;
        if self.finalized {
            found(Refusal::FollowsFinalize);
        }
        match action {
            Action::Create => {
                if number != 0 {
                    found(Refusal::CreateNotFirst);
                } else if *subject != subjects.genesis() {
                    found(Refusal::CreateNotGenesis);
                }
            }
            Action::AddBlock | Action::Update => match subjects.next_record() {
                Some(record) if record.entry.digest == *subject => {
                    if let Err(refusal) =
                        Self::check_version(action, &record.entry.block_id, record.version)
                    {
                        found(refusal);
                    }
                }
                Some(record) => found(Refusal::WrongRecord {
                    subject: *subject,
                    position: record.position,
                    digest: record.entry.digest,
                }),
                None => found(Refusal::NoRecordLeft),
            },
            Action::Finalize
            | Action::Convert
            | Action::Migrate
            | Action::Recover
            | Action::Compact => {
                if *subject != subjects.root() {
                    found(Refusal::NotTheRoot);
                }
                self.finalized |= action == Action::Finalize;
            }
            // Opaque: only the rules for every entry apply.
            Action::Unknown(_) => {}
        }
        if number == 0 && action != Action::Create {
            found(Refusal::FirstNotCreate);
        }
        self.next_entry = number.saturating_add(1);
    }

    /// Queues the create entry in the open commit, if the rules allow it: the writer's step
    /// for commit 0. Nothing changes when it is refused.
    pub(crate) fn create(&mut self) -> Result<(), Refusal> {
        self.entry_allowed()?;
        if self.next_entry != 0 {
            return Err(Refusal::CreateNotFirst);
        }
        self.next_entry = 1;
        Ok(())
    }

    /// Queues an event (an entry naming the Merkle root: finalize, convert, migrate, recover,
    /// compact, or an unknown code) in the open commit, if the rules allow it: the writer's
    /// step for `record_event`. Nothing changes when it is refused.
    pub(crate) fn event(&mut self, action: Action) -> Result<(), Refusal> {
        self.check_event(action)?;
        self.finalized |= action == Action::Finalize;
        self.next_entry = self.next_entry.saturating_add(1);
        Ok(())
    }

    /// Whether [`Self::event`] would queue `action`, without queueing it.
    pub(crate) fn check_event(&self, action: Action) -> Result<(), Refusal> {
        self.entry_allowed()?;
        match action {
            Action::Create if self.next_entry != 0 => Err(Refusal::CreateNotFirst),
            Action::Create | Action::AddBlock | Action::Update => {
                Err(Refusal::NotAnEvent { action })
            }
            _ if self.next_entry == 0 => Err(Refusal::FirstNotCreate),
            _ => Ok(()),
        }
    }

    /// The version an entry `action` (add_block or update) gives the block `block_id`, whose
    /// newest version so far is `existing`: add_block gives version 1 of a new id, update the
    /// version after an existing one.
    pub(crate) fn block_version(
        action: Action,
        block_id: &[u8; 16],
        existing: Option<u32>,
    ) -> Result<u32, Refusal> {
        let version = match existing {
            None => 1,
            Some(v) => v.checked_add(1).ok_or(Refusal::NoVersionAfter {
                block_id: *block_id,
                version: v,
            })?,
        };
        Self::check_version(action, block_id, version)?;
        Ok(version)
    }

    /// The action of the entry that appends a record of a block whose newest version so far
    /// is `existing`: add_block for a new id, update for an existing one.
    pub(crate) fn block_action(existing: Option<u32>) -> Action {
        match existing {
            None => Action::AddBlock,
            Some(_) => Action::Update,
        }
    }

    /// An add_block entry names version 1 of its id; an update entry a later version.
    /// (Version 0 does not exist: index runs that hold it do not decode.)
    pub(crate) fn check_version(
        action: Action,
        block_id: &[u8; 16],
        version: u32,
    ) -> Result<(), Refusal> {
        match action {
            Action::AddBlock if version != 1 => Err(Refusal::AddsExisting {
                block_id: *block_id,
            }),
            Action::Update if version == 1 => Err(Refusal::UpdatesMissing {
                block_id: *block_id,
            }),
            _ => Ok(()),
        }
    }

    /// After the open commit's entries: `count` of the records it adds were named by none.
    pub(crate) fn records_left(&self, count: usize) -> Result<(), Refusal> {
        if count > 0 {
            return Err(Refusal::UnnamedRecords { count });
        }
        Ok(())
    }

    /// The sealed flag the open commit must carry: set if and only if it holds a finalize
    /// entry.
    pub(crate) fn sealed_flag(&self) -> bool {
        self.finalized
    }

    /// Closes the open commit, number `seq`, whose header carries the sealed flag `sealed`.
    /// The flag, even when refused, is what seals the artifact for the commits after it.
    pub(crate) fn end_commit(&mut self, seq: u64, sealed: bool) -> Result<(), Refusal> {
        let finalized = std::mem::take(&mut self.finalized);
        if sealed {
            self.sealed_at = Some(seq);
        }
        match (finalized, sealed) {
            (true, false) => Err(Refusal::FinalizeNotSealed),
            (false, true) => Err(Refusal::SealedWithoutFinalize),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{FourCC, IndexEntry};

    const GENESIS: Digest = [7u8; 32];
    const ROOT: Digest = [9u8; 32];
    const ID: [u8; 16] = [1u8; 16];

    fn record(position: u64, digest: u8, version: u32) -> RunEntry {
        RunEntry {
            entry: IndexEntry {
                offset: 0,
                record_len: 0,
                block_id: ID,
                block_type: FourCC::TEXT,
                metadata_len: 0,
                timestamp_us: 0,
                digest: [digest; 32],
            },
            position,
            version,
        }
    }

    /// A commit's records, and the root before each entry (fixed here).
    struct Fake {
        records: std::vec::IntoIter<RunEntry>,
    }

    impl Fake {
        fn new(records: Vec<RunEntry>) -> Self {
            Self {
                records: records.into_iter(),
            }
        }
    }

    impl Subjects for Fake {
        fn genesis(&self) -> Digest {
            GENESIS
        }
        fn next_record(&mut self) -> Option<RunEntry> {
            self.records.next()
        }
        fn root(&mut self) -> Digest {
            ROOT
        }
    }

    fn step(
        rules: &mut ProvenanceRules,
        action: Action,
        subject: Digest,
        subjects: &mut Fake,
    ) -> Vec<Refusal> {
        let mut found = Vec::new();
        rules.entry(action, &subject, subjects, |r| found.push(r));
        found
    }

    /// The rules after commit 0 (a create entry, nothing else).
    fn created() -> ProvenanceRules {
        let mut rules = ProvenanceRules::new();
        assert_eq!(rules.begin_commit(0), Ok(()));
        let mut none = Fake::new(vec![]);
        assert!(step(&mut rules, Action::Create, GENESIS, &mut none).is_empty());
        assert_eq!(rules.records_left(0), Ok(()));
        assert_eq!(rules.end_commit(0, false), Ok(()));
        rules
    }

    #[test]
    fn create_is_allowed_first_only_and_names_the_seed() {
        created();
        let mut rules = ProvenanceRules::new();
        rules.begin_commit(0).unwrap();
        let mut none = Fake::new(vec![]);
        assert_eq!(
            step(&mut rules, Action::Create, ROOT, &mut none),
            [Refusal::CreateNotGenesis]
        );
        let mut rules = created();
        rules.begin_commit(1).unwrap();
        assert_eq!(
            step(&mut rules, Action::Create, GENESIS, &mut none),
            [Refusal::CreateNotFirst]
        );
    }

    #[test]
    fn the_first_entry_must_be_create() {
        for action in [Action::Convert, Action::Unknown(9), Action::AddBlock] {
            let mut rules = ProvenanceRules::new();
            rules.begin_commit(0).unwrap();
            let mut one = Fake::new(vec![record(0, 3, 1)]);
            let subject = if action == Action::AddBlock {
                [3u8; 32]
            } else {
                ROOT
            };
            assert_eq!(
                step(&mut rules, action, subject, &mut one),
                [Refusal::FirstNotCreate],
                "{action:?}"
            );
        }
        // The writer's event step refuses the same.
        assert_eq!(
            ProvenanceRules::new().event(Action::Convert),
            Err(Refusal::FirstNotCreate)
        );
    }

    #[test]
    fn add_block_and_update_name_the_next_record_and_its_version() {
        let mut rules = created();
        rules.begin_commit(1).unwrap();
        let mut records = Fake::new(vec![record(0, 3, 1), record(1, 4, 2), record(2, 5, 1)]);
        assert!(step(&mut rules, Action::AddBlock, [3; 32], &mut records).is_empty());
        assert!(step(&mut rules, Action::Update, [4; 32], &mut records).is_empty());
        assert_eq!(
            step(&mut rules, Action::Update, [5; 32], &mut records),
            [Refusal::UpdatesMissing { block_id: ID }]
        );
        assert_eq!(
            step(&mut rules, Action::AddBlock, [6; 32], &mut records),
            [Refusal::NoRecordLeft]
        );
        assert_eq!(rules.end_commit(1, false), Ok(()));

        let mut rules = created();
        rules.begin_commit(1).unwrap();
        let mut records = Fake::new(vec![record(0, 3, 2), record(1, 4, 1)]);
        assert_eq!(
            step(&mut rules, Action::AddBlock, [3; 32], &mut records),
            [Refusal::AddsExisting { block_id: ID }]
        );
        assert_eq!(
            step(&mut rules, Action::AddBlock, [8; 32], &mut records),
            [Refusal::WrongRecord {
                subject: [8; 32],
                position: 1,
                digest: [4; 32]
            }]
        );
    }

    #[test]
    fn records_left_without_an_entry_are_refused() {
        let rules = created();
        assert_eq!(rules.records_left(0), Ok(()));
        assert_eq!(
            rules.records_left(2),
            Err(Refusal::UnnamedRecords { count: 2 })
        );
    }

    #[test]
    fn events_name_the_root() {
        for action in [
            Action::Finalize,
            Action::Convert,
            Action::Migrate,
            Action::Recover,
            Action::Compact,
        ] {
            let mut rules = created();
            rules.begin_commit(1).unwrap();
            let mut none = Fake::new(vec![]);
            assert!(step(&mut rules, action, ROOT, &mut none).is_empty());
            assert_eq!(
                step(&mut rules, Action::Convert, GENESIS, &mut none),
                if action == Action::Finalize {
                    vec![Refusal::FollowsFinalize, Refusal::NotTheRoot]
                } else {
                    vec![Refusal::NotTheRoot]
                }
            );
        }
        // An unknown action names anything.
        let mut rules = created();
        rules.begin_commit(1).unwrap();
        let mut none = Fake::new(vec![]);
        assert!(step(&mut rules, Action::Unknown(200), [0; 32], &mut none).is_empty());
    }

    #[test]
    fn nothing_follows_finalize_and_the_sealed_flag_goes_with_it() {
        let mut rules = created();
        rules.begin_commit(1).unwrap();
        let mut records = Fake::new(vec![record(0, 3, 1)]);
        assert!(!rules.sealed_flag());
        assert!(step(&mut rules, Action::Finalize, ROOT, &mut records).is_empty());
        assert!(rules.sealed_flag());
        assert_eq!(rules.entry_allowed(), Err(Refusal::FollowsFinalize));
        assert_eq!(
            step(&mut rules, Action::AddBlock, [3; 32], &mut records),
            [Refusal::FollowsFinalize]
        );
        assert_eq!(rules.end_commit(1, true), Ok(()));
        // No commit follows the sealed one, but its entries are still checked.
        assert_eq!(
            rules.commit_allowed(),
            Err(Refusal::FollowsSealedCommit { sealed: 1 })
        );
        assert_eq!(
            rules.begin_commit(3),
            Err(Refusal::FollowsSealedCommit { sealed: 1 })
        );
        let mut none = Fake::new(vec![]);
        assert!(step(&mut rules, Action::Convert, ROOT, &mut none).is_empty());
    }

    #[test]
    fn the_sealed_flag_is_set_iff_a_finalize_entry_is_there() {
        let mut rules = created();
        rules.begin_commit(1).unwrap();
        let mut none = Fake::new(vec![]);
        step(&mut rules, Action::Finalize, ROOT, &mut none);
        assert_eq!(rules.end_commit(1, false), Err(Refusal::FinalizeNotSealed));
        // Without the flag, the artifact is not sealed.
        assert_eq!(rules.commit_allowed(), Ok(()));

        let mut rules = created();
        rules.begin_commit(1).unwrap();
        assert_eq!(
            rules.end_commit(1, true),
            Err(Refusal::SealedWithoutFinalize)
        );
        // The flag seals the artifact all the same.
        assert_eq!(
            rules.commit_allowed(),
            Err(Refusal::FollowsSealedCommit { sealed: 1 })
        );
    }

    #[test]
    fn the_writers_create_step() {
        let mut rules = ProvenanceRules::new();
        assert_eq!(rules.create(), Ok(()));
        assert_eq!(rules.create(), Err(Refusal::CreateNotFirst));
        assert_eq!(rules.event(Action::Convert), Ok(()));
        assert_eq!(rules.event(Action::Finalize), Ok(()));
        assert_eq!(
            ProvenanceRules::new().event(Action::Create),
            Err(Refusal::NotAnEvent {
                action: Action::Create
            })
        );
    }

    #[test]
    fn the_writers_steps() {
        let mut header = SegmentHeader {
            seq: 4,
            committed_us: 0,
            segment_offset: 0,
            segment_len: 0,
            records_start: 0,
            record_count: 0,
            records_added: 0,
            provenance_count: 9,
            provenance_added: 1,
            provenance_len: 0,
            run_len: 0,
            flags: 0,
            genesis: GENESIS,
            previous_commit: [0; 32],
            previous_segment_offset: 0,
            last_record_digest: GENESIS,
            provenance_head: [0; 32],
            merkle_root: ROOT,
            newest_run: None,
        };
        let mut rules = ProvenanceRules::writing_after(&header);
        assert_eq!(rules.entry_allowed(), Ok(()));
        assert_eq!(rules.commit_allowed(), Ok(()));
        for action in [Action::Create, Action::AddBlock, Action::Update] {
            let refused = rules.event(action);
            assert!(refused.is_err(), "{action:?}");
        }
        assert_eq!(rules.event(Action::Create), Err(Refusal::CreateNotFirst));
        assert_eq!(
            rules.event(Action::Update),
            Err(Refusal::NotAnEvent {
                action: Action::Update
            })
        );
        assert_eq!(rules.event(Action::Migrate), Ok(()));
        assert_eq!(rules.event(Action::Unknown(42)), Ok(()));
        assert!(!rules.sealed_flag());
        assert_eq!(rules.check_event(Action::Finalize), Ok(()));
        assert!(!rules.sealed_flag(), "checking queues nothing");
        assert_eq!(rules.event(Action::Finalize), Ok(()));
        assert!(rules.sealed_flag());
        assert_eq!(rules.event(Action::Convert), Err(Refusal::FollowsFinalize));
        assert_eq!(rules.entry_allowed(), Err(Refusal::FollowsFinalize));
        // A finalize pending does not stop the commit that holds it.
        assert_eq!(rules.commit_allowed(), Ok(()));

        header.flags = crate::format::segment::FLAG_SEALED;
        let rules = ProvenanceRules::writing_after(&header);
        let sealed = Err(Refusal::FollowsSealedCommit { sealed: 4 });
        assert_eq!(rules.entry_allowed(), sealed);
        assert_eq!(rules.commit_allowed(), sealed);
        assert_eq!(rules.check_event(Action::Convert), sealed);
    }

    #[test]
    fn block_versions() {
        let v = |action, existing| ProvenanceRules::block_version(action, &ID, existing);
        assert_eq!(v(Action::AddBlock, None), Ok(1));
        assert_eq!(
            v(Action::AddBlock, Some(1)),
            Err(Refusal::AddsExisting { block_id: ID })
        );
        assert_eq!(v(Action::Update, Some(1)), Ok(2));
        assert_eq!(v(Action::Update, Some(6)), Ok(7));
        assert_eq!(
            v(Action::Update, None),
            Err(Refusal::UpdatesMissing { block_id: ID })
        );
        assert_eq!(
            v(Action::Update, Some(u32::MAX)),
            Err(Refusal::NoVersionAfter {
                block_id: ID,
                version: u32::MAX
            })
        );
        for existing in [None, Some(1), Some(8)] {
            let action = ProvenanceRules::block_action(existing);
            assert_eq!(
                action,
                if existing.is_none() {
                    Action::AddBlock
                } else {
                    Action::Update
                }
            );
            assert_eq!(v(action, existing), Ok(existing.map_or(1, |e| e + 1)));
        }
    }

    #[test]
    fn reasons_and_writer_errors_are_the_documented_texts() {
        let id = format_id(&ID);
        let cases: &[(Refusal, &str)] = &[
            (
                Refusal::FollowsSealedCommit { sealed: 3 },
                "follows commit 3, which finalized the artifact",
            ),
            (Refusal::FollowsFinalize, "follows the finalize entry"),
            (
                Refusal::CreateNotFirst,
                "create must be the first entry, and only the first",
            ),
            (
                Refusal::CreateNotGenesis,
                "does not name this artifact's header and metadata",
            ),
            (Refusal::FirstNotCreate, "the first entry must be create"),
            (
                Refusal::NoRecordLeft,
                "names a record this commit does not add",
            ),
            (
                Refusal::NotTheRoot,
                "does not name the Merkle root of the records before it",
            ),
            (
                Refusal::UnnamedRecords { count: 1 },
                "1 of the records it adds have no add_block or update entry",
            ),
            (
                Refusal::FinalizeNotSealed,
                "has a finalize entry but is not marked sealed",
            ),
            (
                Refusal::SealedWithoutFinalize,
                "is marked sealed without a finalize entry",
            ),
        ];
        for (refusal, text) in cases {
            assert_eq!(refusal.to_string(), *text);
        }
        assert_eq!(
            Refusal::AddsExisting { block_id: ID }.to_string(),
            format!("adds block {id} which already exists")
        );
        assert_eq!(
            Refusal::UpdatesMissing { block_id: ID }.to_string(),
            format!("updates block {id} which did not exist")
        );
        assert_eq!(
            Refusal::WrongRecord {
                subject: [0xab; 32],
                position: 4,
                digest: [0xcd; 32]
            }
            .to_string(),
            format!(
                "names digest {} but record #4 has {}",
                "ab".repeat(32),
                "cd".repeat(32)
            )
        );
        assert!(matches!(
            Error::from(Refusal::FollowsFinalize),
            Error::Finalized
        ));
        assert!(matches!(
            Error::from(Refusal::FollowsSealedCommit { sealed: 1 }),
            Error::Finalized
        ));
        assert!(
            matches!(Error::from(Refusal::UpdatesMissing { block_id: ID }), Error::UnknownBlock { block_id } if block_id == id)
        );
        assert_eq!(
            Error::from(Refusal::AddsExisting { block_id: ID }).to_string(),
            Error::Invalid(format!(
                "block {id} already exists with other content; use update to add a new version"
            ))
            .to_string()
        );
    }
}
