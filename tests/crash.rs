//! Crash test: a child process appending blocks is killed with SIGKILL at random moments;
//! every block whose commit had returned must still be there, and the file must stay usable.

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
    assert!(
        kills_mid_append > 0,
        "no kill landed inside an append; the test exercised nothing"
    );

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
