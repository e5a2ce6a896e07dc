//! Walks a log's chain and reports the first broken line.
//!
//! Each line must parse, hash to its stated `hash`, carry the next `seq`
//! and name the previous line's hash as `prev`. One exception keeps crashes
//! honest rather than fatal: lines that do not parse (a write torn by a
//! crash) are accepted when the very next record is a `chain_restart` that
//! continues the chain from the last good record, which is what the writer
//! appends on its next start.

use crate::chain::{GENESIS, Hasher, split_hash};
use serde::Deserialize;
use std::fmt;
use std::io::BufRead;

/// A chain found intact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Records checked (lines skipped as torn not counted).
    pub records: u64,
    /// Line numbers (1-based) of `chain_restart` records, with their reason.
    pub restarts: Vec<(u64, String)>,
    /// `hash` of the last record: write it down elsewhere to detect a later
    /// truncation of the file.
    pub head: String,
}

/// Where and why a chain is broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    /// 1-based line number.
    pub line: u64,
    /// What is wrong with that line.
    pub problem: Problem,
}

/// The first inconsistency [`verify()`](crate::verify()) found in a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Not a JSON record with `seq`, `event`, `prev` and a final `hash`.
    Unparseable(String),
    /// The line's bytes do not hash to its `hash`: it was altered (or the key is wrong).
    HashMismatch {
        /// On the first record, where a wrong key is the likelier cause.
        first: bool,
    },
    /// `seq` is not the previous record's plus one: records were removed, added or reordered.
    SeqGap {
        /// The previous record's `seq` plus one.
        expected: u64,
        /// The `seq` this line carries.
        found: u64,
    },
    /// `prev` is not the previous record's `hash`.
    PrevMismatch,
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: ", self.line)?;
        match &self.problem {
            Problem::Unparseable(why) => write!(f, "unparseable: {why}"),
            Problem::HashMismatch { first } => {
                f.write_str("hash mismatch: the record was altered")?;
                if *first {
                    f.write_str(
                        " (or it was written with another key: pass the log's audit.hmac_key with --key-env, or none for a log written without one)",
                    )?;
                }
                Ok(())
            }
            Problem::SeqGap { expected, found } => write!(
                f,
                "seq gap: expected seq {expected}, found {found} (records removed, inserted or reordered)"
            ),
            Problem::PrevMismatch => f.write_str(
                "prev mismatch: `prev` is not the previous record's hash (records removed, inserted or rewritten)",
            ),
        }
    }
}

/// Why a log could not be verified.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The file could not be opened or read.
    #[error("cannot read the log: {0}")]
    Io(#[from] std::io::Error),
    /// The file was read, and its chain is broken at this line.
    #[error("{0}")]
    Broken(Broken),
}

#[derive(Deserialize)]
struct Head {
    seq: u64,
    event: String,
    prev: String,
    hash: String,
    reason: Option<String>,
}

/// Verifies a whole log; `key` is the HMAC key it was written with, if any.
pub fn verify(mut input: impl BufRead, key: Option<&[u8]>) -> Result<Verified, VerifyError> {
    let hasher = Hasher::new(key);
    let mut prev = GENESIS.to_string();
    let mut next_seq = 1u64;
    let mut records = 0u64;
    let mut restarts = Vec::new();
    // The first unparseable line since the last good record, if any.
    let mut torn: Option<(u64, String)> = None;
    let mut buf = Vec::new();
    let mut n = 0u64;
    loop {
        buf.clear();
        if input.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        n += 1;
        let complete = buf.last() == Some(&b'\n');
        let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let head = match parse(line, complete) {
            Ok(h) => h,
            Err(why) => {
                torn.get_or_insert((n, why));
                continue;
            }
        };
        if let Some((at, why)) = torn.take()
            && head.0.event != "chain_restart"
        {
            return Err(broken(at, Problem::Unparseable(why)));
        }
        let (head, body) = head;
        if hasher.hash(head.prev.as_bytes(), &body) != head.hash {
            return Err(broken(
                n,
                Problem::HashMismatch {
                    first: records == 0,
                },
            ));
        }
        if head.seq != next_seq {
            return Err(broken(
                n,
                Problem::SeqGap {
                    expected: next_seq,
                    found: head.seq,
                },
            ));
        }
        if head.prev != prev {
            return Err(broken(n, Problem::PrevMismatch));
        }
        if head.event == "chain_restart" {
            restarts.push((n, head.reason.unwrap_or_default()));
        }
        records += 1;
        next_seq += 1;
        prev = head.hash;
    }
    if let Some((at, why)) = torn {
        return Err(broken(at, Problem::Unparseable(why)));
    }
    Ok(Verified {
        records,
        restarts,
        head: prev,
    })
}

fn broken(line: u64, problem: Problem) -> VerifyError {
    VerifyError::Broken(Broken { line, problem })
}

fn parse(line: &[u8], complete: bool) -> Result<(Head, Vec<u8>), String> {
    if !complete {
        return Err(
            "the last line is incomplete (a write in progress, or a crash during one)".into(),
        );
    }
    let head: Head = serde_json::from_slice(line).map_err(|e| format!("not a record ({e})"))?;
    let Some((body, stated)) = split_hash(line) else {
        return Err("`hash` is not the last member of the record".into());
    };
    if stated != head.hash {
        return Err("`hash` is not the last member of the record".into());
    }
    Ok((head, body))
}

/// The last record of a log's tail, as the writer needs it to continue.
pub(crate) struct Tail {
    /// `seq` and `hash` of the last record that parses, if any.
    pub last: Option<(u64, String)>,
    /// Whether that record's hash verifies under the configured key.
    pub verifies: bool,
    /// Lines after it that do not parse (a torn write).
    pub torn_lines: usize,
    /// Whether the file ends without a newline.
    pub open_line: bool,
}

/// Reads what follows the last good record from the end of a log (`bytes`:
/// its last bytes; `whole`: whether they are the whole file).
pub(crate) fn tail(bytes: &[u8], whole: bool, hasher: &Hasher) -> Tail {
    let open_line = !bytes.is_empty() && !bytes.ends_with(b"\n");
    let mut lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
    if !open_line {
        lines.pop(); // the empty piece after the final newline
    }
    if !whole && !lines.is_empty() {
        lines.remove(0); // may start mid-line
    }
    let mut torn_lines = 0;
    for (i, line) in lines.iter().enumerate().rev() {
        let complete = i + 1 < lines.len() || !open_line;
        match parse(line, complete) {
            Ok((head, body)) => {
                let verifies = hasher.hash(head.prev.as_bytes(), &body) == head.hash;
                return Tail {
                    last: Some((head.seq, head.hash)),
                    verifies,
                    torn_lines,
                    open_line,
                };
            }
            Err(_) => torn_lines += 1,
        }
    }
    Tail {
        last: None,
        verifies: true,
        torn_lines,
        open_line,
    }
}
