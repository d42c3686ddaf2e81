//! What a migration found and did: per-block verdicts, counts, findings, exit code.

use std::fmt::Write as _;

use serde::Serialize;

use crate::framing::Framing;
use crate::model::{BlockStatus, Check, Finding, Outcome, Severity, SourceKind};

/// The overall verdict on one block's legacy evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every check passed, including at least one over the payload or a signature.
    Verified,
    /// Some evidence contradicts the data.
    Failed,
    /// Nothing failed, but something could not be checked (no key, unsigned, no hash).
    Unverifiable,
}

impl Verdict {
    /// A signature over the payload that verifies stands in for a content hash the source
    /// never stored (layout-A v0 objects).
    pub fn of(checks: &[Check]) -> Verdict {
        let signed = checks
            .iter()
            .any(|c| c.outcome == Outcome::Pass && c.check.contains("signature"));
        let open = |c: &&Check| {
            matches!(c.outcome, Outcome::Unverifiable(_)) && !(signed && c.check == "content_hash")
        };
        if checks.iter().any(|c| matches!(c.outcome, Outcome::Fail(_))) {
            Verdict::Failed
        } else if checks.iter().any(|c| open(&c))
            || !checks.iter().any(|c| c.outcome == Outcome::Pass)
        {
            Verdict::Unverifiable
        } else {
            Verdict::Verified
        }
    }
}

/// One legacy block in the report.
#[derive(Debug, Clone, Serialize)]
pub struct BlockReport {
    pub legacy_id: String,
    pub block_id: String,
    pub legacy_type: String,
    /// The type written: the canonical type, or `BINA` for a typed payload kept unframed.
    pub block_type: String,
    /// How a TEXT, EMBD or IMAG payload was framed, or why it was kept unframed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub framing: Option<Framing>,
    pub status: BlockStatus,
    /// Migrated in this run, or by an earlier run that this one resumed.
    pub migrated: bool,
    pub already_present: bool,
    pub size: Option<u64>,
    pub sha256: Option<String>,
    pub verdict: Verdict,
    pub checks: Vec<Check>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    pub blocks: usize,
    pub migrated: usize,
    pub already_present: usize,
    pub not_migrated: usize,
    pub live: usize,
    pub orphan: usize,
    pub dangling: usize,
    pub soft_deleted: usize,
    pub overwritten_in_place: usize,
    pub superseded: usize,
    pub update_records: usize,
    pub deletion_records: usize,
    pub encrypted: usize,
    pub verified: usize,
    pub failed: usize,
    pub unverifiable: usize,
    pub bytes: u64,
    /// Typed payloads given their canonical framing, by type.
    pub framed_text: usize,
    pub framed_embeddings: usize,
    pub framed_images: usize,
    /// Typed payloads the evidence could not frame, kept verbatim as `BINA`.
    pub kept_unframed: usize,
}

/// The result of one migration run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub source: String,
    pub kind: SourceKind,
    pub destination: Option<String>,
    pub dry_run: bool,
    /// The destination already held part of this migration; only the rest was added.
    pub resumed: bool,
    /// The destination already held all of it (nothing written).
    pub already_complete: bool,
    pub counts: Counts,
    pub source_checks: Vec<Check>,
    pub findings: Vec<Finding>,
    pub blocks: Vec<BlockReport>,
    /// Whether the written artifact passed a full `maif verify` (None for dry runs).
    pub output_verified: Option<bool>,
    pub output_problems: Vec<String>,
    pub elapsed_seconds: f64,
}

impl Report {
    pub fn count(&mut self) {
        let mut counts = Counts {
            blocks: self.blocks.len(),
            ..Counts::default()
        };
        for block in &self.blocks {
            if block.migrated {
                counts.migrated += 1;
                counts.bytes += block.size.unwrap_or(0);
            } else {
                counts.not_migrated += 1;
            }
            counts.already_present += usize::from(block.already_present);
            match block.status {
                BlockStatus::Live => counts.live += 1,
                BlockStatus::Orphan => counts.orphan += 1,
                BlockStatus::Dangling => counts.dangling += 1,
                BlockStatus::SoftDeleted => counts.soft_deleted += 1,
                BlockStatus::OverwrittenInPlace => counts.overwritten_in_place += 1,
                BlockStatus::Superseded => counts.superseded += 1,
                BlockStatus::UpdateRecord => counts.update_records += 1,
                BlockStatus::DeletionRecord => counts.deletion_records += 1,
                BlockStatus::Encrypted => counts.encrypted += 1,
            }
            match block.verdict {
                Verdict::Verified => counts.verified += 1,
                Verdict::Failed => counts.failed += 1,
                Verdict::Unverifiable => counts.unverifiable += 1,
            }
            match block.framing {
                Some(Framing::Text { .. }) => counts.framed_text += 1,
                Some(Framing::Embedding { .. }) => counts.framed_embeddings += 1,
                Some(Framing::Image { .. }) => counts.framed_images += 1,
                Some(Framing::Unframed { .. }) => counts.kept_unframed += 1,
                None => {}
            }
        }
        self.counts = counts;
    }

    /// 0: everything migrated and nothing contradicted; 1: something lost, dangling, or
    /// failed verification (the source's or the output's).
    pub fn exit_code(&self) -> i32 {
        let lost = self.counts.not_migrated > 0;
        let failed = self.counts.failed > 0
            || self
                .source_checks
                .iter()
                .any(|c| matches!(c.outcome, Outcome::Fail(_)))
            || self.findings.iter().any(|f| f.severity == Severity::Error)
            || self.output_verified == Some(false);
        i32::from(lost || failed)
    }

    /// The human summary printed at the end of a run.
    pub fn summary(&self) -> String {
        let c = &self.counts;
        let mut out = String::new();
        let _ = writeln!(out, "source       {} ({})", self.source, self.kind.as_str());
        match (&self.destination, self.dry_run) {
            (_, true) => {
                let _ = writeln!(out, "destination  (dry run: nothing written)");
            }
            (Some(d), false) => {
                let _ = writeln!(out, "destination  {d}");
            }
            (None, false) => {}
        }
        let _ = writeln!(
            out,
            "blocks       {} found: {} migrated ({} bytes){}, {} not migrated",
            c.blocks,
            c.migrated,
            c.bytes,
            if c.already_present > 0 {
                format!(", {} of them by an earlier run", c.already_present)
            } else {
                String::new()
            },
            c.not_migrated
        );
        let mut statuses = vec![format!("{} live", c.live)];
        for (n, label) in [
            (c.orphan, "orphaned (not in the legacy index)"),
            (c.dangling, "dangling (indexed, object missing)"),
            (c.soft_deleted, "soft-deleted"),
            (c.overwritten_in_place, "overwritten in place"),
            (c.superseded, "superseded"),
            (c.update_records, "update records"),
            (c.deletion_records, "deletion records"),
            (c.encrypted, "encrypted (not migrated)"),
        ] {
            if n > 0 {
                statuses.push(format!("{n} {label}"));
            }
        }
        let _ = writeln!(out, "status       {}", statuses.join(", "));
        let _ = writeln!(
            out,
            "legacy proof {} verified, {} unverifiable, {} FAILED",
            c.verified, c.unverifiable, c.failed
        );
        if c.framed_text + c.framed_embeddings + c.framed_images + c.kept_unframed > 0 {
            let _ = writeln!(
                out,
                "payloads     framed: {} TEXT, {} EMBD, {} IMAG; {} typed kept unframed as BINA{}",
                c.framed_text,
                c.framed_embeddings,
                c.framed_images,
                c.kept_unframed,
                if c.kept_unframed > 0 {
                    " (typed_payload_unframed warnings say why)"
                } else {
                    ""
                }
            );
        }
        let source_failures: Vec<&Check> = self
            .source_checks
            .iter()
            .filter(|c| matches!(c.outcome, Outcome::Fail(_)))
            .collect();
        let _ = writeln!(
            out,
            "source file  {} checks, {} failed",
            self.source_checks.len(),
            source_failures.len()
        );
        for check in source_failures {
            if let Outcome::Fail(why) = &check.outcome {
                let _ = writeln!(out, "  FAILED {}: {why}", check.check);
            }
        }
        for block in self.blocks.iter().filter(|b| b.verdict == Verdict::Failed) {
            for check in &block.checks {
                if let Outcome::Fail(why) = &check.outcome {
                    let _ = writeln!(
                        out,
                        "  FAILED block {} {}: {why}",
                        block.legacy_id, check.check
                    );
                }
            }
        }
        let shown = self
            .findings
            .iter()
            .filter(|f| f.severity >= Severity::Warning)
            .take(20);
        for finding in shown {
            let _ = writeln!(
                out,
                "  {:?} {} {}: {}",
                finding.severity, finding.kind, finding.subject, finding.message
            );
        }
        let warnings = self
            .findings
            .iter()
            .filter(|f| f.severity >= Severity::Warning)
            .count();
        if warnings > 20 {
            let _ = writeln!(out, "  ... and {} more (see --report)", warnings - 20);
        }
        match self.output_verified {
            Some(true) => {
                let _ = writeln!(out, "output       verified (full verify passed)");
            }
            Some(false) => {
                let _ = writeln!(
                    out,
                    "output       VERIFY FAILED: {}",
                    self.output_problems.join("; ")
                );
            }
            None => {}
        }
        if self.already_complete {
            let _ = writeln!(
                out,
                "note         destination already held this migration; nothing written"
            );
        } else if self.resumed {
            let _ = writeln!(out, "note         resumed an interrupted migration");
        }
        out
    }
}
