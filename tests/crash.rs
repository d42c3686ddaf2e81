//! Crash tests. The deterministic one stops a child process appending blocks at each step
//! of the commit protocol (FORMAT.md 13.3) through the `MAIF_TEST_CRASH_AT` hook and checks
//! the state the crash table describes; the random one kills it with SIGKILL at random
//! moments. Every block whose commit had returned must still be there, and the file must
//! stay usable.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use maif_store::artifact::{
    ArtifactReader, RecoveryMode, VerifyOptions, format_id, recover_file, verify,
};

fn example_binary() -> PathBuf {
    // Integration tests live in target/<profile>/deps; cargo builds examples beside it.
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    let path = profile_dir.join("examples").join("append_blocks");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build --examples`",
        path.display()
    );
    path
}

/// A small deterministic generator; the seed is printed so a failure can be replayed.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn sigkill_at_random_moments_loses_no_committed_block() {
    let seed = std::env::var("MAIF_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    println!("crash test seed {seed} (replay with MAIF_CRASH_SEED={seed})");
    let mut random = XorShift(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let artifact = dir.path().join("crash.maif");
    let key_path = dir.path().join("key.pem");
    common::test_key().write_pem_file(&key_path).expect("key");
    let binary = example_binary();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");

    let mut committed: Vec<String> = Vec::new();
    let mut kills_mid_append = 0;
    const ROUNDS: usize = 25;
    for round in 0..ROUNDS {
        let mut child = Command::new(&binary)
            .arg(&artifact)
            .arg(&key_path)
            .arg("100000")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn writer");
        let stdout = child.stdout.take().expect("stdout");
        let (lines_tx, lines_rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Let it commit a few blocks, then kill it somewhere inside a later append.
        let delay = Duration::from_micros(20_000 + random.next() % 60_000);
        let start = Instant::now();
        while start.elapsed() < delay {
            std::thread::sleep(Duration::from_micros(200));
        }
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("wait");
        assert!(
            !status.success(),
            "round {round}: the writer finished before it was killed"
        );
        reader.join().expect("reader thread");
        committed.extend(
            lines_rx
                .try_iter()
                .filter_map(|l| l.strip_prefix("committed ").map(str::to_string)),
        );
        // Readers see the last committed state without writing anything.
        let before = std::fs::read(&artifact).expect("read");
        let reader = runtime
            .block_on(ArtifactReader::open(common::file_store(&artifact)))
            .unwrap_or_else(|e| {
                panic!("round {round}: the artifact does not open after a kill: {e}")
            });
        assert_eq!(
            std::fs::read(&artifact).expect("read"),
            before,
            "a read path wrote to the file"
        );
        let file_len = before.len() as u64;
        if file_len > reader.commit().end() || reader.completed_from_uncommitted() {
            kills_mid_append += 1;
        }
        let blocks = runtime.block_on(reader.blocks()).expect("list");
        let present: HashSet<String> = blocks
            .iter()
            .map(|b| format_id(&b.entry.block_id))
            .collect();
        for id in &committed {
            assert!(
                present.contains(id),
                "round {round}: committed block {id} was lost"
            );
        }
        // A commit can complete just before the kill, before it is reported: at most one
        // unreported block per round.
        assert!(
            blocks.len() <= committed.len() + round + 1,
            "round {round}: more blocks than were ever appended"
        );

        // Recovery gives the same committed state as a new valid file, byte for byte.
        let recovered = dir.path().join(format!("recovered-{round}.maif"));
        let report = runtime
            .block_on(recover_file(&artifact, &recovered, None))
            .expect("recover");
        assert_eq!(report.mode, RecoveryMode::CommittedState);
        let check = runtime
            .block_on(verify(
                common::file_store(&recovered),
                VerifyOptions::default(),
            ))
            .expect("verify");
        assert!(
            check.valid,
            "round {round}: recovered file invalid: {:?}",
            check.problems
        );
        assert_eq!(check.record_count as usize, blocks.len());
        std::fs::remove_file(&recovered).expect("cleanup");
    }
    println!(
        "{} blocks committed over {ROUNDS} kills; {kills_mid_append} kills interrupted an append",
        committed.len()
    );
    assert!(
        committed.len() >= ROUNDS,
        "too few commits to mean anything"
    );
    // Where the kills land is luck, so it is reported, not asserted: the deterministic test
    // below stops a writer at every step of an append.

    // Every kill's leftovers were discarded or completed by the next writer: the artifact is
    // valid, and readers and recovery agree on it.
    let final_report = runtime
        .block_on(verify(
            common::file_store(&artifact),
            VerifyOptions::default(),
        ))
        .expect("verify");
    assert!(final_report.valid, "{:?}", final_report.problems);
}

/// A runtime for the checks, a folder for the artifacts and the test key's PEM file in it.
fn crash_setup() -> (tokio::runtime::Runtime, tempfile::TempDir, PathBuf) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("key.pem");
    common::test_key().write_pem_file(&key).expect("key");
    (runtime, dir, key)
}

/// What one run of the example writer did.
struct Run {
    /// Block ids whose commit returned (printed by the writer).
    committed: Vec<String>,
    /// Whether the process aborted at the crash point (SIGABRT) rather than finishing.
    aborted: bool,
}

/// Runs the example writer for `count` single-block commits, crashing at `crash_at`
/// (`POINT@N`, see `MAIF_TEST_CRASH_AT` in `src/store/mod.rs`) when given.
fn run_writer(
    artifact: &std::path::Path,
    key: &std::path::Path,
    count: usize,
    crash_at: Option<&str>,
    abandon: bool,
) -> Run {
    use std::os::unix::process::ExitStatusExt;
    let mut command = Command::new(example_binary());
    command.arg(artifact).arg(key).arg(count.to_string());
    if abandon {
        command.arg("abandon");
    }
    match crash_at {
        Some(point) => command.env("MAIF_TEST_CRASH_AT", point),
        None => command.env_remove("MAIF_TEST_CRASH_AT"),
    };
    let output = command.output().expect("run the example writer");
    let aborted = output.status.signal() == Some(6);
    assert!(
        aborted || output.status.success(),
        "the writer failed ({:?}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    if let Some(point) = crash_at {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let name = point.split('@').next().unwrap_or(point);
        assert!(
            aborted && stderr.contains(&format!("aborting at {name}")),
            "the writer did not stop at {point}: {:?}, stderr {stderr}",
            output.status
        );
    }
    Run {
        committed: String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("committed ").map(str::to_string))
            .collect(),
        aborted,
    }
}

/// What FORMAT.md's crash table (13.3) says readers see after a crash at a point.
#[derive(Debug)]
struct Expected {
    /// The row of the table.
    row: &'static str,
    /// Whether readers use the commit the crashed append was making.
    new_commit_visible: bool,
    /// The areas of the warnings `verify` gives (the artifact is valid in every row).
    warnings: &'static [&'static str],
}

/// Checks the artifact after a crash against `expected`: readers open it without writing,
/// see every block whose commit returned (and the crashed one only where the table says),
/// `verify` is valid with exactly the warnings the table names; then the next writer
/// appends and everything is valid with no warning.
fn check_after_crash(
    runtime: &tokio::runtime::Runtime,
    artifact: &std::path::Path,
    key: &std::path::Path,
    committed: &[String],
    expected: &Expected,
) {
    let before = std::fs::read(artifact).expect("read");
    let reader = runtime
        .block_on(ArtifactReader::open(common::file_store(artifact)))
        .unwrap_or_else(|e| panic!("{}: the artifact does not open: {e}", expected.row));
    let blocks = runtime.block_on(reader.blocks()).expect("list");
    let ids: HashSet<String> = blocks
        .iter()
        .map(|b| format_id(&b.entry.block_id))
        .collect();
    for id in committed {
        assert!(
            ids.contains(id),
            "{}: committed block {id} was lost",
            expected.row
        );
    }
    let extra = usize::from(expected.new_commit_visible);
    assert_eq!(
        blocks.len(),
        committed.len() + extra,
        "{}: readers see {} blocks, {} committed, the crashed commit {}",
        expected.row,
        blocks.len(),
        committed.len(),
        if expected.new_commit_visible {
            "visible"
        } else {
            "not visible"
        }
    );
    let report = runtime
        .block_on(verify(
            common::file_store(artifact),
            VerifyOptions::default(),
        ))
        .expect("verify");
    assert!(report.valid, "{}: {:?}", expected.row, report.problems);
    let mut areas: Vec<&str> = report.warnings.iter().map(|w| w.area.as_str()).collect();
    areas.sort_unstable();
    let mut wanted = expected.warnings.to_vec();
    wanted.sort_unstable();
    assert_eq!(
        areas, wanted,
        "{}: warnings {:?}",
        expected.row, report.warnings
    );
    assert_eq!(
        std::fs::read(artifact).expect("read"),
        before,
        "{}: a read path wrote to the file",
        expected.row
    );

    // The next writer goes on from there.
    let next = run_writer(artifact, key, 1, None, false);
    assert!(
        !next.aborted && next.committed.len() == 1,
        "{}: the next writer",
        expected.row
    );
    let report = runtime
        .block_on(verify(
            common::file_store(artifact),
            VerifyOptions::default(),
        ))
        .expect("verify");
    assert!(
        report.valid && report.warnings.is_empty(),
        "{}: after the next append: {:?} {:?}",
        expected.row,
        report.problems,
        report.warnings
    );
    assert_eq!(
        report.record_count as usize,
        committed.len() + extra + 1,
        "{}: after the next append",
        expected.row
    );
}

/// Stops a writer at every step of the commit protocol (the `MAIF_TEST_CRASH_AT` hook), one
/// step per fresh artifact, and checks each crash state of FORMAT.md 13.3: no timing, so
/// every step is hit every run.
#[test]
fn a_crash_at_each_step_of_an_append_leaves_the_state_the_crash_table_describes() {
    let (runtime, dir, key) = crash_setup();
    // The third append of each run crashes; the first two returned.
    let cases: &[(&str, Expected)] = &[
        (
            "begin:examined",
            Expected {
                row: "A1",
                new_commit_visible: false,
                warnings: &[],
            },
        ),
        (
            "append:records-written",
            Expected {
                row: "A3 (records written)",
                new_commit_visible: false,
                warnings: &["storage"],
            },
        ),
        (
            "append:segment-half-written",
            Expected {
                row: "A3 (half the segment)",
                new_commit_visible: false,
                warnings: &["storage"],
            },
        ),
        // A killed process leaves its writes in the page cache: a whole segment is a whole
        // commit even before the phase-1 fdatasync (A3 loses it only on a power loss).
        (
            "append:segment-written",
            Expected {
                row: "A3 (whole segment, process crash)",
                new_commit_visible: true,
                warnings: &["trailer"],
            },
        ),
        (
            "append:phase-1-synced",
            Expected {
                row: "A4",
                new_commit_visible: true,
                warnings: &["trailer"],
            },
        ),
        (
            "append:trailer-half-written",
            Expected {
                row: "A5 (half the trailer)",
                new_commit_visible: true,
                warnings: &["trailer"],
            },
        ),
        (
            "append:trailer-written",
            Expected {
                row: "A5 (whole trailer)",
                new_commit_visible: true,
                warnings: &[],
            },
        ),
        (
            "append:phase-2-synced",
            Expected {
                row: "A6",
                new_commit_visible: true,
                warnings: &[],
            },
        ),
    ];
    for (n, (point, expected)) in cases.iter().enumerate() {
        let artifact = dir.path().join(format!("append-{n}.maif"));
        let run = run_writer(&artifact, &key, 5, Some(&format!("{point}@3")), false);
        assert_eq!(
            run.committed.len(),
            2,
            "{}: commits that returned",
            expected.row
        );
        check_after_crash(&runtime, &artifact, &key, &run.committed, expected);
    }

    // A2: the next writer writes a lost trailer back at begin, and crashes right after.
    let artifact = dir.path().join("write-back.maif");
    let run = run_writer(&artifact, &key, 5, Some("append:phase-1-synced@3"), false);
    let again = run_writer(
        &artifact,
        &key,
        1,
        Some("begin:trailer-written-back"),
        false,
    );
    assert!(again.committed.is_empty());
    let a2 = Expected {
        row: "A2",
        new_commit_visible: true,
        warnings: &[],
    };
    check_after_crash(&runtime, &artifact, &key, &run.committed, &a2);

    // A7: an append dropped after its records reached the file, crashing before the cut.
    let artifact = dir.path().join("abandoned.maif");
    let run = run_writer(&artifact, &key, 2, Some("rollback:before-cut"), true);
    assert_eq!(run.committed.len(), 2);
    let a7 = Expected {
        row: "A7",
        new_commit_visible: false,
        warnings: &["storage"],
    };
    check_after_crash(&runtime, &artifact, &key, &run.committed, &a7);
}

/// C1 and C2 of the crash table: `create` publishes a complete file or nothing.
#[test]
fn a_crash_while_creating_leaves_no_file_or_a_whole_one() {
    let (runtime, dir, key) = crash_setup();

    // C1: before the link, nothing is at the name (a temporary file may be beside it).
    let artifact = dir.path().join("c1.maif");
    let run = run_writer(&artifact, &key, 1, Some("create:temporary-written"), false);
    assert!(run.committed.is_empty());
    assert!(!artifact.exists(), "C1: a file appeared at the name");
    let opened = runtime.block_on(ArtifactReader::open(common::file_store(&artifact)));
    assert!(
        matches!(
            opened,
            Err(maif_store::Error::Store(
                maif_store::store::StoreError::NotFound { .. }
            ))
        ),
        "C1: {:?}",
        opened.err()
    );
    let c1 = Expected {
        row: "C1 then a create",
        new_commit_visible: false,
        warnings: &[],
    };
    let next = run_writer(&artifact, &key, 1, None, false);
    assert_eq!(next.committed.len(), 1, "C1: create can be run again");
    check_after_crash(&runtime, &artifact, &key, &next.committed, &c1);

    // C2: after the link, the file is whole: commit 0.
    let artifact = dir.path().join("c2.maif");
    let run = run_writer(&artifact, &key, 1, Some("create:linked"), false);
    assert!(run.committed.is_empty());
    let c2 = Expected {
        row: "C2",
        new_commit_visible: false,
        warnings: &[],
    };
    check_after_crash(&runtime, &artifact, &key, &[], &c2);
}
