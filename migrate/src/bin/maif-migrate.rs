//! `maif-migrate`: legacy MAIF (S3 layouts, local files, Python SDK files) into canonical
//! MAIF. The same command as `maif migrate`, kept under its own name for scripts.

use std::process::ExitCode;

use clap::Parser;
use maif_migrate::cli::{MigrateArgs, S3Args, init_logging, migrate_failed, run_migrate};

/// Migrate a legacy MAIF artifact into canonical MAIF (3.1); the same as `maif migrate`.
///
/// The source is never written. Re-running a migration into the same destination resumes
/// it.
///
/// Exit status: 0 everything migrated and verified (or unverifiable for want of a key),
/// 1 something lost, dangling, or failed verification, 2 usage or I/O error, 3 the outcome of
/// the last commit is unknown (run the same command again: it resumes and reports it).
#[derive(Debug, Parser)]
#[command(name = "maif-migrate", version, about, long_about)]
struct Cli {
    #[command(flatten)]
    migrate: MigrateArgs,
    #[command(flatten)]
    s3: S3Args,
}

fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("maif-migrate: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run_migrate(&cli.migrate, &cli.s3.settings())) {
        Ok(code) => ExitCode::from(code),
        Err(e) => ExitCode::from(migrate_failed("maif-migrate", &e)),
    }
}
