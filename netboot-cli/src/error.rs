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
}

impl Error {
    /// A problem with a named subject (a flag, a store path, a file).
    pub fn new(subject: impl Display, problem: impl Display) -> Error {
        Error {
            subject: one_line(&subject.to_string()),
            problem: one_line(&problem.to_string()),
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

/// Keeps the error on one line whatever the input (names may hold newlines).
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
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
}
