//! `--shard i/n`: which of the selected rows this process runs, so several CI runners can split
//! one matrix and `report merge` can join their reports.
//!
//! The rule, which must not depend on anything but the selection (every runner computes it on
//! its own and they must agree without talking):
//!
//! 1. The selected rows are put in a stable order: by architecture (x86_64, then arm64), and
//!    within one architecture in selection order (user-supplied kernels, the lock's lines in lock
//!    order, the host last).
//! 2. The rows that boot something (a pinned or local kernel, a user kernel, the host) come
//!    first, then the rows the lock already calls unavailable (they cost nothing: no boot).
//! 3. Row `j` (counting from 0) of that sequence goes to shard `j mod n + 1`.
//!
//! Dealing the booting rows first spreads the real work evenly (every shard gets a guest before
//! any gets a second), and no shard is left with only unavailable rows while another boots two
//! kernels. Each row, the host row included, is in exactly one shard; `1/1` is the whole
//! selection in the same order.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::arch::Arch;

/// One shard of `count`, numbered from 1 as the command line writes it (`--shard 2/3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

/// A `--shard` value that is not `i/n` with `1 <= i <= n`.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ShardError {
    #[error("shard `{0}`: expected i/n, e.g. 1/2 (shard i of n, counting from 1)")]
    Syntax(String),
    #[error("shard `{0}`: the number of shards must be at least 1")]
    NoShards(String),
    #[error("shard `{text}`: the index must be between 1 and {count}")]
    OutOfRange { text: String, count: u32 },
}

impl Shard {
    /// The whole selection as one shard.
    pub const WHOLE: Shard = Shard { index: 1, count: 1 };

    /// Shard `index` of `count`, checked as the command line's is.
    pub fn new(index: u32, count: u32) -> Result<Self, ShardError> {
        format!("{index}/{count}").parse()
    }
}

impl FromStr for Shard {
    type Err = ShardError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let syntax = || ShardError::Syntax(text.to_owned());
        let (i, n) = text.split_once('/').ok_or_else(syntax)?;
        let number = |s: &str| {
            // u32::from_str takes a leading `+`; a shard number is plain digits.
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(syntax());
            }
            s.parse::<u32>().map_err(|_| syntax())
        };
        let (index, count) = (number(i.trim())?, number(n.trim())?);
        if count == 0 {
            return Err(ShardError::NoShards(text.to_owned()));
        }
        if index == 0 || index > count {
            return Err(ShardError::OutOfRange { text: text.to_owned(), count });
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// What the split needs to know of one selected row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub arch: Arch,
    /// Whether the row boots something; the lock's unavailable lines do not.
    pub boots: bool,
}

/// The shard (1-based) each candidate belongs to, by the rule in the module doc; `candidates`
/// is in selection order.
pub fn assign(candidates: &[Candidate], count: u32) -> Vec<u32> {
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    // A stable sort keeps selection order within one architecture and one kind.
    order.sort_by_key(|&i| (!candidates[i].boots, candidates[i].arch));
    let mut shard_of = vec![0; candidates.len()];
    for (j, &i) in order.iter().enumerate() {
        let j = u32::try_from(j).expect("fewer than 2^32 rows");
        shard_of[i] = j % count.max(1) + 1;
    }
    shard_of
}

/// The positions (in selection order) of the candidates in `shard`.
pub fn select(candidates: &[Candidate], shard: Shard) -> Vec<usize> {
    assign(candidates, shard.count).into_iter().enumerate().filter(|&(_, s)| s == shard.index).map(|(i, _)| i).collect()
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    #[rstest]
    #[case("1/1", 1, 1)]
    #[case("2/3", 2, 3)]
    #[case(" 3/3 ", 3, 3)]
    fn shards_parse(#[case] text: &str, #[case] index: u32, #[case] count: u32) {
        assert_eq!(text.trim().parse::<Shard>(), Ok(Shard { index, count }));
    }

    #[rstest]
    #[case::no_slash("2", "expected i/n")]
    #[case::not_a_number("a/2", "expected i/n")]
    #[case::signed("+1/2", "expected i/n")]
    #[case::negative("-1/2", "expected i/n")]
    #[case::zero_index("0/2", "between 1 and 2")]
    #[case::past_the_end("3/2", "between 1 and 2")]
    #[case::zero_shards("0/0", "at least 1")]
    #[case::extra("1/2/3", "expected i/n")]
    fn bad_shards_say_what_is_wrong(#[case] text: &str, #[case] message: &str) {
        let err = text.parse::<Shard>().unwrap_err().to_string();
        assert!(err.contains(message) && err.contains(text), "{text}: {err}");
    }

    /// The default matrix's shape: unavailable lines among the booting ones, the host last.
    fn default_like() -> Vec<Candidate> {
        let x = |boots| Candidate { arch: Arch::X86_64, boots };
        let a = |boots| Candidate { arch: Arch::Arm64, boots };
        vec![x(false), x(false), x(true), x(false), x(true), a(true), x(false), x(true), a(false), x(true), x(true), x(true), x(true)]
    }

    #[rstest]
    fn every_row_is_in_exactly_one_shard(#[values(1, 2, 3, 4, 7, 13, 20)] count: u32) {
        let rows = default_like();
        let mut seen = vec![0; rows.len()];
        for index in 1..=count {
            for i in select(&rows, Shard::new(index, count).unwrap()) {
                seen[i] += 1;
            }
        }
        assert!(seen.iter().all(|&n| n == 1), "{count} shards: {seen:?}");
    }

    #[rstest]
    fn booting_rows_are_spread_evenly(#[values(1, 2, 3, 4)] count: u32) {
        let rows = default_like();
        let booting = rows.iter().filter(|c| c.boots).count() as u32;
        for index in 1..=count {
            let mine = select(&rows, Shard::new(index, count).unwrap()).into_iter().filter(|&i| rows[i].boots).count() as u32;
            assert!(mine == booting / count || mine == booting / count + 1, "shard {index}/{count}: {mine} of {booting}");
        }
    }

    #[test]
    fn one_shard_is_the_whole_selection_in_order() {
        let rows = default_like();
        assert_eq!(select(&rows, Shard::WHOLE), (0..rows.len()).collect::<Vec<_>>());
    }

    #[test]
    fn the_split_is_deterministic_and_follows_the_documented_rule() {
        let rows = default_like();
        assert_eq!(assign(&rows, 2), assign(&rows, 2));
        // Booting x86_64 rows in order (2, 4, 7, 9, 10, 11, 12), then arm64 (5), then the
        // unavailable x86_64 (0, 1, 3, 6) and arm64 (8) rows, dealt 1, 2, 1, 2, ...
        assert_eq!(assign(&rows, 2), vec![1, 2, 1, 1, 2, 2, 2, 1, 1, 2, 1, 2, 1]);
    }
}
