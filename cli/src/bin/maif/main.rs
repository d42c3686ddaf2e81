//! `maif`: create, read, verify and repair MAIF artifacts.

mod commands;
mod demo;
mod import;
mod legacy;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use maif_migrate::cli::{MigrateArgs, S3Args, init_logging, migrate_failed, run_migrate};

/// Signed, hash-chained, Merkle-rooted MAIF 3.1 artifacts (MAIF 3.0 made rigorous, with
/// append-only commits).
///
/// Exit status: 0 success, 1 verification failed (or a verified read found tampering),
/// 2 usage or I/O error (a write that failed did not land and is safe to re-run), 3 the
/// outcome of a write is unknown (the message names the command that settles it).
#[derive(Debug, Parser)]
#[command(name = "maif", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    s3: S3Args,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Subcommand)]
enum Command {
    /// Generate an Ed25519 signing key (PKCS#8 PEM, mode 0600) and print its public key.
    Keygen {
        /// Where to write the key; never overwritten.
        path: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Create a new, empty artifact.
    Create {
        location: String,
        /// Signing key (PEM) whose public key the artifact will carry.
        #[arg(long)]
        key: PathBuf,
        /// Agent id recorded in the metadata and provenance.
        #[arg(long)]
        agent: String,
        /// Custom metadata, repeatable: --meta project=alpha
        #[arg(long = "meta", value_name = "KEY=VALUE")]
        meta: Vec<String>,
        #[arg(long, default_value = "")]
        content_type: String,
        #[arg(long)]
        json: bool,
    },
    /// Append blocks in one commit (or, with --update, a new version of a block). Durable on
    /// return.
    Add(AddArgs),
    /// Append one block per line of a JSON Lines file, committing every N blocks or bytes.
    /// Each commit is made durable while the next lines are signed; on failure, the lines
    /// named as committed are exactly those whose commit is durable.
    Import(ImportArgs),
    /// List blocks: id, type, version, size, timestamp, metadata. Each listed record (up to
    /// 4 MiB) is checked against its committed digest: an altered one exits 1.
    Ls {
        location: String,
        /// Only blocks of this type (FourCC, e.g. TEXT).
        #[arg(long = "type")]
        block_type: Option<String>,
        /// Only blocks whose metadata has KEY equal to VALUE.
        #[arg(long = "meta", value_name = "KEY=VALUE")]
        meta: Option<String>,
        /// Only the latest version of each block.
        #[arg(long)]
        latest: bool,
        /// Only the block whose record digest, or the SHA-256 of whose payload (as `cat`
        /// prints it), is this (64 hex digits).
        #[arg(long, value_name = "HEX")]
        digest: Option<String>,
        /// Only blocks written at or after this time (RFC 3339 UTC, or microseconds).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Only blocks written at or before this time.
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        /// Only blocks of this agent: the block metadata's `agent_id` when it has one (legacy
        /// blocks do), else the artifact's agent.
        #[arg(long, value_name = "AGENT_ID")]
        agent: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Every version of a block, oldest first: version, time, size, record digest, payload
    /// SHA-256 and position.
    History {
        location: String,
        block_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Write a block's payload to stdout (text, image or vector bytes without their framing).
    Cat {
        location: String,
        #[arg(required_unless_present = "index")]
        block_id: Option<String>,
        /// The block at this position in record order (0 = the first record written).
        #[arg(long, conflicts_with_all = ["block_id", "version"])]
        index: Option<u64>,
        /// Version number (1 = first); latest by default.
        #[arg(long)]
        version: Option<u32>,
        /// Write the stored payload with its typed framing.
        #[arg(long)]
        raw: bool,
    },
    /// Show the file header, metadata section, trailer, provenance and every block header.
    Inspect {
        location: String,
        #[arg(long)]
        json: bool,
    },
    /// Verify an artifact. Exit 0 valid, 1 verification failed, 2 usage or I/O error.
    Verify {
        location: String,
        /// The newest commit only (its signature, chain seed, Merkle frontier, trailer,
        /// provenance and run head): a few small reads whatever the size.
        #[arg(long)]
        quick: bool,
        /// Check every signature individually with strict semantics instead of in batches.
        #[arg(long)]
        strict: bool,
        /// Require this signer (64 hex digits), e.g. the key printed by `maif keygen`; for a
        /// Python SDK file read in place, the key its signatures must be made with.
        #[arg(long, value_name = "HEX")]
        public_key: Option<String>,
        /// For a legacy source read in place: a legacy HMAC session key, repeatable,
        /// LABEL=PATH (32 raw bytes), as `maif migrate` takes it.
        #[arg(long = "legacy-key", value_name = "LABEL=PATH")]
        legacy_keys: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Write a self-contained proof that a block is in the newest commit, or (with
    /// --consistency) that one commit extends another.
    Prove {
        location: String,
        /// The block to prove (latest version unless --version).
        #[arg(required_unless_present = "consistency")]
        block_id: Option<String>,
        #[arg(long, conflicts_with = "consistency")]
        version: Option<u32>,
        /// Prove that commit NEW extends commit OLD (commit numbers, as `inspect` lists them).
        #[arg(long, num_args = 2, value_names = ["OLD", "NEW"], conflicts_with = "block_id")]
        consistency: Option<Vec<u64>>,
    },
    /// Check a proof written by `maif prove`, offline. Exit 0 valid, 1 invalid, 2 usage or I/O.
    VerifyProof {
        /// The proof file (`-` reads standard input).
        proof: PathBuf,
        /// Require this signer (64 hex digits).
        #[arg(long, value_name = "HEX")]
        public_key: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Rebuild a valid artifact from the intact prefix of a torn or damaged file.
    Recover {
        damaged: PathBuf,
        output: PathBuf,
        /// The artifact's key, needed only when no committed state survives.
        #[arg(long)]
        key: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Copy an artifact between any two locations, byte for byte (resumes if interrupted).
    Convert {
        source: String,
        destination: String,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
        #[arg(long)]
        json: bool,
    },
    /// Merge every live index run into one, in a commit of its own, so that a lookup reads
    /// one run. Copies every index entry once (about 92 bytes per block); nothing is rewritten.
    Compact {
        location: String,
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Delete record objects no commit references (left by appends that never committed),
    /// on the object layout. Only objects older than the grace period are deleted, so a
    /// live writer's uncommitted records are spared.
    Gc {
        location: String,
        /// The grace period: a number and a unit (s, m, h or d), e.g. 36h.
        #[arg(long, default_value = "7d", value_name = "DURATION")]
        older_than: String,
        /// List what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Seal an artifact: appends a finalize entry; later appends are refused.
    Finalize {
        location: String,
        #[arg(long)]
        key: PathBuf,
    },
    /// Migrate a legacy MAIF artifact (legacy S3 layouts, legacy local files, Python SDK 2.1
    /// files) into canonical MAIF. The source is never written; re-running resumes. Exit 0
    /// everything migrated and verified (or unverifiable for want of a key), 1 something
    /// lost, dangling or failed verification, 2 usage or I/O error, 3 outcome unknown.
    Migrate(MigrateArgs),
    /// Re-create the legacy source of a migrated artifact exactly: the original file byte for
    /// byte, or every original object (body and user metadata) under DESTINATION. Checks
    /// every block it reads against the signed commits, and the rebuilt file against the
    /// length and SHA-256 recorded at migration, before anything appears at DESTINATION.
    /// An existing file or object is refused; under a prefix, objects already holding
    /// exactly what the export writes are kept (a re-run completes an interrupted export)
    /// and any other object is refused before the first write.
    Export {
        /// The migrated artifact.
        migrated: String,
        /// A file path for a file source (or one object: s3://bucket/key.maif); a prefix
        /// (s3://bucket/prefix, memory://…) for an S3 source.
        destination: String,
        /// Re-create the legacy original (the one export there is; `maif convert` copies
        /// canonical artifacts).
        #[arg(long)]
        original: bool,
        /// Replace destination files or objects that already exist.
        #[arg(long)]
        overwrite: bool,
        #[arg(long)]
        json: bool,
    },
    /// Create, read and verify a real artifact under a local folder.
    Demo {
        /// Folder for the demo's files.
        #[arg(long, default_value = "maif-demo")]
        dir: PathBuf,
    },
}

#[derive(Debug, Clone, Args)]
struct AddArgs {
    location: String,
    #[arg(long)]
    key: PathBuf,
    /// Block type: TEXT, EMBD, IMAG, AUDI, VIDE, KGRF, BINA, META, LIFE, or any FourCC.
    #[arg(long = "type")]
    block_type: String,
    /// Text payload.
    #[arg(long, conflicts_with = "file")]
    text: Option<String>,
    /// Payload file, repeatable (one block each, all in one commit); `-` reads standard input.
    #[arg(long)]
    file: Vec<PathBuf>,
    /// Language of a TEXT block (ISO 639-1, e.g. en).
    #[arg(long)]
    lang: Option<String>,
    /// EMBD: elements per vector of the little-endian float32 input (default: one vector).
    #[arg(long)]
    dim: Option<u32>,
    /// Block metadata, repeatable: --meta source=camera
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    meta: Vec<String>,
    /// Compress the block with zstd.
    #[arg(long)]
    zstd: bool,
    /// zstd level (with --zstd).
    #[arg(long, default_value_t = 3)]
    zstd_level: i32,
    /// Append a new version of this block id instead of a new block.
    #[arg(long, value_name = "BLOCK_ID", conflicts_with = "id")]
    update: Option<String>,
    /// The new block's id (UUID), repeatable: one per block, in order. Makes the add safe to
    /// re-run: a block already committed under this id with the same type and content counts
    /// as done and is not added twice.
    #[arg(long = "id", value_name = "BLOCK_ID")]
    id: Vec<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Args)]
struct ImportArgs {
    location: String,
    #[arg(long)]
    key: PathBuf,
    /// JSON Lines input (`-` reads standard input). Each line is an object:
    /// {"type": "TEXT", "text": "..." | "base64": "...", "meta": {...}, "update": BLOCK_ID,
    /// "lang": "en", "id": BLOCK_ID}. With "id" on every line a re-run after a failure skips
    /// the lines already committed; without, a failure says which lines are committed.
    #[arg(long)]
    jsonl: PathBuf,
    /// Commit after this many blocks.
    #[arg(long, default_value_t = 10_000)]
    commit_every: usize,
    /// Commit after this many payload bytes.
    #[arg(long, default_value_t = 64 << 20)]
    commit_bytes: u64,
    /// Do not merge the index runs into one at the end (done when the import added at least
    /// a quarter of the artifact's records).
    #[arg(long)]
    no_compact: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    // Die quietly on a closed pipe (`maif ls ... | head`), as other Unix tools do, instead
    // of panicking inside println!: Rust ignores SIGPIPE by default.
    #[cfg(unix)]
    // SAFETY: restoring the default action of one signal before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    init_logging();
    let settings = cli.s3.settings();
    // A migration reads and writes many objects at once; everything else is one request
    // after another and starts faster on one thread.
    let runtime = match &cli.command {
        Command::Migrate(_) | Command::Export { .. } => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
        _ => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("maif: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match &cli.command {
        Command::Migrate(args) => {
            return match runtime.block_on(run_migrate(args, &settings)) {
                Ok(code) => ExitCode::from(code),
                Err(e) => ExitCode::from(migrate_failed("maif", &e)),
            };
        }
        Command::Export {
            migrated,
            destination,
            original,
            overwrite,
            json,
        } => {
            return match runtime.block_on(commands::export(
                migrated,
                destination,
                *original,
                *overwrite,
                *json,
                &settings,
            )) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("maif: {e}");
                    ExitCode::from(commands::migrate_exit_code(&e))
                }
            };
        }
        _ => {}
    }
    // `ls`, `cat`, `history`, `inspect` and `verify` read every MAIF variant: a legacy
    // source is read in place (see `legacy`).
    if runtime.block_on(legacy::is_legacy_file(&cli.command, &settings)) {
        return run_legacy(&runtime, cli.command, &settings);
    }
    let command = cli.command.clone();
    match runtime.block_on(commands::run(cli.command, &settings)) {
        Ok(code) => code,
        Err(e) => {
            if runtime.block_on(legacy::is_legacy_objects(&command, &settings)) {
                return run_legacy(&runtime, command, &settings);
            }
            eprintln!("maif: {e}");
            ExitCode::from(commands::exit_code(&e))
        }
    }
}

fn run_legacy(
    runtime: &tokio::runtime::Runtime,
    command: Command,
    settings: &maif_store::location::S3Settings,
) -> ExitCode {
    match runtime.block_on(legacy::run(command, settings)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("maif: {e}");
            ExitCode::from(legacy::exit_code(&e))
        }
    }
}
