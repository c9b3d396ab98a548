//! The one error type of the CLI: every failure names the file (or flag)
//! it is about and says what is wrong, so `main` can print exactly one line
//! `netboot: error: <subject>: <problem>`.

use std::fmt::Display;
use std::path::Path;

/// A failure, attributed to a file, a store path or a command-line flag.
#[derive(Debug, thiserror::Error)]
#[error("{subject}: {problem}")]
pub struct Error {
    /// What the problem is about: a path on disk, a store path, or a flag
    /// such as `--jobs`.
    pub subject: String,
    /// What is wrong, one line.
    pub problem: String,
    /// Standard output was closed by its reader (`netboot inspect … | head`):
    /// not a failure, `main` ends quietly with success (as ripgrep does).
    pub stdout_closed: bool,
}

/// The longest message `main` prints: whatever a library error says, the
/// line stays readable (an error must never carry a buffer).
pub const MAX_MESSAGE: usize = 300;

impl Error {
    /// A problem with a named subject (a flag, a store path, a file).
    pub fn new(subject: impl Display, problem: impl Display) -> Error {
        Error {
            subject: one_line(&subject.to_string()),
            problem: one_line(&problem.to_string()),
            stdout_closed: false,
        }
    }

    /// A failed write to standard output.
    pub fn stdout(err: std::io::Error) -> Error {
        let closed = err.kind() == std::io::ErrorKind::BrokenPipe;
        Error {
            stdout_closed: closed,
            ..Error::new("standard output", err)
        }
    }

    /// A problem with a file on disk.
    pub fn at(path: &Path, problem: impl Display) -> Error {
        Error::new(path.display(), problem)
    }

    /// An I/O error on a file on disk; disk full, permission denied and
    /// vanished files all arrive here.
    pub fn io(path: &Path, err: std::io::Error) -> Error {
        Error::at(path, err)
    }
}

/// Keeps the error on one line whatever the input (names may hold
/// newlines), and at most [`MAX_MESSAGE`] characters: a longer text is cut
/// in the middle, keeping its start (what) and its end (the innermost cause).
pub fn one_line(s: &str) -> String {
    let chars: Vec<char> = s
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if chars.len() <= MAX_MESSAGE {
        return chars.into_iter().collect();
    }
    let head: String = chars[..MAX_MESSAGE / 2].iter().collect();
    let tail: String = chars[chars.len() - (MAX_MESSAGE / 2 - 6)..]
        .iter()
        .collect();
    format!("{head} [..] {tail}")
}

/// Result with the CLI error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches a path to I/O results.
pub trait IoContext<T> {
    /// Maps an `io::Error` to [`Error::io`] for `path`.
    fn at(self, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: &Path) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_do_not_break_the_line() {
        let e = Error::new("a\nb", "x\ty");
        assert_eq!(e.to_string(), "a?b: x?y");
    }

    #[test]
    fn long_messages_are_cut_to_one_readable_line() {
        let long = format!("zlib: {:?} end", vec![50u8; 100_000]);
        let e = Error::new("nix-store", &long);
        assert!(
            e.problem.chars().count() <= MAX_MESSAGE,
            "{}",
            e.problem.len()
        );
        assert!(e.problem.starts_with("zlib: [50, 50"), "{}", e.problem);
        assert!(e.problem.ends_with("50] end"), "{}", e.problem);
        assert_eq!(Error::new("x", "short").problem, "short");
    }

    #[test]
    fn broken_pipe_is_not_a_failure() {
        let e = Error::stdout(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert!(e.stdout_closed);
        let e = Error::stdout(std::io::Error::from(std::io::ErrorKind::StorageFull));
        assert!(!e.stdout_closed);
    }
}
