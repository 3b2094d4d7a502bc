// SPDX-License-Identifier: MIT

//! A minimal IGT-compatible harness.
//!
//! Each binary is a list of subtests and follows the contract `igt_runner`
//! relies on:
//! - `--list-subtests` prints one subtest name per line;
//! - `--run-subtest GLOB` runs the subtests matching GLOB (comma-separated
//!   globs with `*` and `?`); no option runs them all;
//! - each subtest prints `Starting subtest: NAME` then
//!   `Subtest NAME: SUCCESS|FAIL|SKIP (N.NNNs)`;
//! - exit status 0 when something passed and nothing failed, 77 when all
//!   skipped, 98 when anything failed.
//!
//! A subtest returns `Ok(())`, [`skip!`] to skip, or an error (typically
//! from [`check!`]) to fail. Each subtest runs in a forked child, as in IGT,
//! so a crash or a leaked mapping stays within it.

use std::{io::Write, time::Instant};

pub mod queued;
pub mod svm;

/// IGT's exit status for success.
pub const EXIT_SUCCESS: i32 = 0;
/// IGT's exit status when every subtest skipped.
pub const EXIT_SKIP: i32 = 77;
/// IGT's exit status when a subtest failed.
pub const EXIT_FAILURE: i32 = 98;

/// Why a subtest did not pass.
#[derive(Debug)]
pub enum Outcome {
    /// The subtest does not apply here.
    Skip(String),
    /// The subtest found a bug.
    Fail(String),
}

/// What a subtest returns.
pub type TestResult = Result<(), Outcome>;

impl From<nsvm_uapi::Error> for Outcome {
    fn from(e: nsvm_uapi::Error) -> Self {
        Outcome::Fail(format!("unexpected error: {e}"))
    }
}

impl From<std::io::Error> for Outcome {
    fn from(e: std::io::Error) -> Self {
        Outcome::Fail(format!("unexpected I/O error: {e}"))
    }
}

/// Fails the subtest unless `cond` holds.
#[macro_export]
macro_rules! check {
    ($cond:expr) => {
        if !$cond {
            return Err($crate::Outcome::Fail(format!(
                "{}:{}: check failed: {}", file!(), line!(), stringify!($cond)
            )));
        }
    };
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($crate::Outcome::Fail(format!(
                "{}:{}: check failed: {}: {}", file!(), line!(), stringify!($cond),
                format!($($fmt)+)
            )));
        }
    };
}

/// Fails the subtest unless `left == right`.
#[macro_export]
macro_rules! check_eq {
    ($left:expr, $right:expr $(,)?) => {
        $crate::check_eq!($left, $right, "")
    };
    ($left:expr, $right:expr, $($fmt:tt)+) => {{
        let (l, r) = (&$left, &$right);
        if l != r {
            return Err($crate::Outcome::Fail(format!(
                "{}:{}: {} == {} failed: {:?} != {:?} {}",
                file!(), line!(), stringify!($left), stringify!($right), l, r,
                format!($($fmt)+)
            )));
        }
    }};
}

/// Skips the subtest.
#[macro_export]
macro_rules! skip {
    ($($fmt:tt)+) => {
        return Err($crate::Outcome::Skip(format!($($fmt)+)))
    };
}

/// A subtest: its name and body.
pub struct Subtest {
    /// Name, as listed by `--list-subtests`.
    pub name: &'static str,
    /// Body.
    pub run: fn() -> TestResult,
}

/// Matches `name` against an IGT glob (`*`, `?`).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fn rec(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => rec(&p[1..], n) || (!n.is_empty() && rec(p, &n[1..])),
            (Some(b'?'), Some(_)) => rec(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => rec(&p[1..], &n[1..]),
            _ => false,
        }
    }
    pattern
        .split(',')
        .any(|p| rec(p.as_bytes(), name.as_bytes()))
}

enum Status {
    Success,
    Skip,
    Fail,
}

/// Runs one subtest in a forked child and reports its status.
fn run_one(t: &Subtest) -> Status {
    println!("Starting subtest: {}", t.name);
    let _ = std::io::stdout().flush();
    let start = Instant::now();
    // SAFETY: The harness is single-threaded here; the child only runs the
    // subtest and exits.
    let pid = unsafe { libc::fork() };
    let status = match pid {
        -1 => Status::Fail,
        0 => {
            let code = match (t.run)() {
                // The queue mode's pass is for what goes through queues.
                Ok(()) if queued::enabled() && queued::jobs() == 0 => {
                    println!("Test requirement not met: no EXEC through the queue helpers");
                    EXIT_SKIP
                }
                Ok(()) => {
                    if queued::enabled() {
                        println!("jobs through queues: {}", queued::jobs());
                    }
                    EXIT_SUCCESS
                }
                Err(Outcome::Skip(why)) => {
                    println!("Test requirement not met: {why}");
                    EXIT_SKIP
                }
                Err(Outcome::Fail(why)) => {
                    println!("{why}");
                    EXIT_FAILURE
                }
            };
            let _ = std::io::stdout().flush();
            // SAFETY: Ends the child without running the parent's atexit state.
            unsafe { libc::_exit(code) }
        }
        pid => {
            let mut wstatus = 0;
            // SAFETY: `pid` is our child.
            while unsafe { libc::waitpid(pid, &mut wstatus, 0) } < 0 {}
            if libc::WIFEXITED(wstatus) {
                match libc::WEXITSTATUS(wstatus) {
                    EXIT_SUCCESS => Status::Success,
                    EXIT_SKIP => Status::Skip,
                    _ => Status::Fail,
                }
            } else {
                println!("subtest died: wait status {wstatus:#x}");
                Status::Fail
            }
        }
    };
    let word = match status {
        Status::Success => "SUCCESS",
        Status::Skip => "SKIP",
        Status::Fail => "FAIL",
    };
    println!(
        "Subtest {}: {} ({:.3}s)",
        t.name,
        word,
        start.elapsed().as_secs_f64()
    );
    let _ = std::io::stdout().flush();
    status
}

/// The `main` of a test binary: parses the IGT options, runs, exits.
pub fn main(tests: &[Subtest]) -> ! {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut filter: Option<String> = None;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--list-subtests" => {
                for t in tests {
                    println!("{}", t.name);
                }
                std::process::exit(EXIT_SUCCESS);
            }
            "--run-subtest" => {
                i += 1;
                filter = args.get(i).cloned();
                if filter.is_none() {
                    eprintln!("--run-subtest needs a glob");
                    std::process::exit(EXIT_FAILURE);
                }
            }
            a if a.starts_with("--run-subtest=") => filter = Some(a[14..].to_string()),
            "--help" | "-h" => {
                println!("usage: [--list-subtests] [--run-subtest GLOB]");
                std::process::exit(EXIT_SUCCESS);
            }
            other => {
                eprintln!("unknown option {other}");
                std::process::exit(EXIT_FAILURE);
            }
        }
        i += 1;
    }

    let selected: Vec<&Subtest> = tests
        .iter()
        .filter(|t| filter.as_deref().is_none_or(|f| glob_match(f, t.name)))
        .collect();
    if selected.is_empty() {
        eprintln!("no subtest matches {:?}", filter.unwrap_or_default());
        std::process::exit(EXIT_SKIP);
    }
    let (mut pass, mut fail) = (0, 0);
    for t in selected {
        match run_one(t) {
            Status::Success => pass += 1,
            Status::Fail => fail += 1,
            Status::Skip => {}
        }
    }
    std::process::exit(if fail > 0 {
        EXIT_FAILURE
    } else if pass > 0 {
        EXIT_SUCCESS
    } else {
        EXIT_SKIP
    })
}

/// Declares the subtests of a binary and its `main`.
#[macro_export]
macro_rules! igt_main {
    ($($name:literal => $f:path),* $(,)?) => {
        fn main() {
            $crate::main(&[$($crate::Subtest { name: $name, run: $f }),*])
        }
    };
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match("*", "anything"));
        assert!(glob_match("getparam-*", "getparam-bad-size"));
        assert!(!glob_match("getparam-*", "version-name"));
        assert!(glob_match("a?c", "abc"));
        assert!(glob_match("x,version-*", "version-name"));
        assert!(!glob_match("abc", "abcd"));
    }
}
