//! The crate's error types: [`Error`] for building/rendering, [`ParseError`] for reading.

/// Which argument of a command a rendering error is about.
pub type Arg = &'static str;

/// Why a script could not be rendered (or a netboot script built).
///
/// `line` numbers the offending [`Line`](crate::Line) among
/// [`Script::lines`](crate::Script::lines) from 1, as [`ParseError::line`]
/// numbers the lines of a script's text from 1: "line 1" is always the first
/// line in both. (A render error has no line of output text to point at:
/// the `#!ipxe` header and the escape preamble are added once every line
/// rendered, so it counts the lines the caller wrote.)
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A newline, carriage return or NUL in a value: iPXE would end the
    /// line there (script injection) or truncate the C string.
    #[error("line {line}: {arg} contains {ch:?}, which cannot appear in an iPXE script line")]
    ForbiddenChar {
        /// Line number (1-based).
        line: usize,
        /// Argument.
        arg: Arg,
        /// The character.
        ch: char,
    },
    /// Whitespace in an argument that must be a single word (URI, image
    /// name, interface, label).
    #[error("line {line}: {arg} {value:?} contains whitespace but must be a single word")]
    Whitespace {
        /// Line number (1-based).
        line: usize,
        /// Argument.
        arg: Arg,
        /// The value.
        value: String,
    },
    /// An argument that must not be empty is empty.
    #[error("line {line}: {arg} is empty")]
    Empty {
        /// Line number (1-based).
        line: usize,
        /// Argument.
        arg: Arg,
    },
    /// A literal `${` followed later in the same word by `}` (or by a setting
    /// expansion): iPXE rescans expanded text, so no escaping can make it
    /// come out literally.
    #[error("line {line}: {arg} {value:?} contains `${{` followed by `}}` in one word; iPXE would expand it")]
    DollarBrace {
        /// Line number (1-based).
        line: usize,
        /// Argument.
        arg: Arg,
        /// The value.
        value: String,
    },
    /// An image name starting with `-` (would be read as an option).
    #[error("line {line}: {arg} {value:?} must not start with '-'")]
    LeadingDash {
        /// Line number (1-based).
        line: usize,
        /// Argument.
        arg: Arg,
        /// The value.
        value: String,
    },
    /// A setting name outside `[A-Za-z0-9_.:/@-]+`.
    #[error("line {line}: invalid setting name {name:?} (allowed: A-Z a-z 0-9 _ . : / @ -)")]
    InvalidSettingName {
        /// Line number (1-based).
        line: usize,
        /// The name.
        name: String,
    },
    /// A setting name in the `nbrs-` namespace this crate uses for escapes.
    #[error("line {line}: setting name {name:?} is reserved for this crate's escapes")]
    ReservedSetting {
        /// Line number (1-based).
        line: usize,
        /// The name.
        name: String,
    },
    /// A label that is empty or contains whitespace or control characters.
    #[error("line {line}: invalid label {label:?}")]
    InvalidLabel {
        /// Line number (1-based).
        line: usize,
        /// The label.
        label: String,
    },
    /// A raw command name that is not a plain word (or would be read as a
    /// comment, label, separator or option).
    #[error("line {line}: invalid command name {name:?}")]
    InvalidCommandName {
        /// Line number (1-based).
        line: usize,
        /// The name.
        name: String,
    },
    /// A comment ending in `\`: iPXE would join the next line onto it.
    #[error("line {line}: comment ends with a backslash, which would swallow the next line")]
    TrailingBackslash {
        /// Line number (1-based).
        line: usize,
    },
    /// `kernel`/`initrd`/`imgfetch`/`chain` without a URI.
    #[error("line {line}: `{command}` needs a URI")]
    MissingUri {
        /// Line number (1-based).
        line: usize,
        /// The command.
        command: &'static str,
    },
    /// A line whose commands are joined by separators but which has none.
    #[error("line {line}: separator without a following command slot")]
    DanglingSeparator {
        /// Line number (1-based).
        line: usize,
    },
    /// The kernel command line (including the `<image name> ` prefix that
    /// EFI iPXE puts in front) exceeds what the kernel keeps.
    #[error(
        "kernel command line is {len} bytes (incl. EFI image-name prefix), the limit is {max}"
    )]
    CmdlineTooLong {
        /// Length in bytes, including the EFI image-name prefix.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// [`NetbootScript`](crate::netboot::NetbootScript) without any initrd
    /// (EFI iPXE would boot the kernel without an initramfs).
    #[error("netboot script has no initrd")]
    NoInitrd,
    /// A netboot init path, URI or image name that is not usable.
    #[error("netboot {what} {value:?}: {why}")]
    InvalidNetbootValue {
        /// Which input.
        what: &'static str,
        /// The value.
        value: String,
        /// Why.
        why: &'static str,
    },
    /// A string that is not an iPXE setting name (`[SETTINGS/]NAME[:TYPE]`,
    /// see [`SettingName`](crate::SettingName)).
    #[error("invalid iPXE setting name {setting:?}: {why}")]
    InvalidSetting {
        /// The string.
        setting: String,
        /// Why.
        why: &'static str,
    },
    /// A kernel parameter given to
    /// [`NetbootScript`](crate::netboot::NetbootScript) that it refuses;
    /// `param` is the parameter as the caller gave it.
    #[error("kernel parameter {param:?}: {problem}")]
    KernelParam {
        /// The parameter.
        param: String,
        /// What is wrong with it.
        problem: KernelParamProblem,
    },
}

/// What is wrong with a netboot kernel parameter ([`Error::KernelParam`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KernelParamProblem {
    /// The parameter is empty.
    #[error("is empty")]
    Empty,
    /// A control character (newline, tab, ...): a newline would end the
    /// script line (injection).
    #[error("contains the control character {0:?}")]
    ControlChar(char),
    /// `${...}` naming a setting that is not allowed: iPXE would expand it.
    #[error("{}", not_allowed(setting, allowed))]
    SettingNotAllowed {
        /// The setting as written between `${` and `}`.
        setting: String,
        /// The allowed settings (empty: none were allowed).
        allowed: Vec<String>,
    },
    /// A `${` that does not open a well-formed setting expansion.
    #[error("`{expansion}` {why}; iPXE would expand it")]
    BadExpansion {
        /// The text from `${`.
        expansion: String,
        /// Why.
        why: &'static str,
    },
    /// `init=`: the script sets it itself; a second one would override the
    /// system's (the kernel keeps the last).
    #[error("sets init=, which the script sets itself (a second init= overrides the system's)")]
    Init,
    /// `initrd=`: the script names its own initrds; the UEFI stub would
    /// look for this file too and fail to boot when it does not exist.
    #[error("sets initrd=, which the script sets for its own initrds (the UEFI stub would look for this file too)")]
    Initrd,
}

fn not_allowed(setting: &str, allowed: &[String]) -> String {
    if allowed.is_empty() {
        format!(
            "iPXE would expand `${{{setting}}}`; settings in kernel parameters need an explicit opt-in"
        )
    } else {
        format!(
            "iPXE would expand `${{{setting}}}`, which is not an allowed setting (allowed: {})",
            allowed.join(", ")
        )
    }
}

/// Where and why [`parse`](crate::parse()) failed: `line` is the 1-based
/// physical line of the input text (the `#!ipxe` header is line 1), counted
/// from 1 like [`Error`]'s lines.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {kind}")]
pub struct ParseError {
    /// 1-based physical line in the input.
    pub line: usize,
    /// 1-based column (in characters) in that line.
    pub column: usize,
    /// What went wrong.
    pub kind: ParseErrorKind,
}

/// What [`parse`](crate::parse()) rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// The file does not start with `#!ipxe` (or `#!gpxe`) followed by whitespace.
    #[error("missing `#!ipxe` magic followed by whitespace")]
    Magic,
    /// A NUL byte: iPXE would silently truncate the line there.
    #[error("NUL character")]
    Nul,
    /// The last line ends with `\`: iPXE fails the script (EINVAL) there.
    #[error("the last line ends with a continuation backslash")]
    TrailingContinuation,
    /// A `${...}` expansion this model cannot represent (nested expansion or
    /// a setting name outside `[A-Za-z0-9_.:/@-]`).
    #[error("unsupported setting expansion `{0}`")]
    UnsupportedExpansion(String),
    /// A command name that is itself a setting expansion.
    #[error("command name contains a setting expansion")]
    ExpandedCommandName,
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use crate::{parse, Line, Script, Value};

    /// "line 1" means the first line for both error types.
    #[test]
    fn render_and_parse_errors_count_lines_from_one() {
        let s = Script::new()
            .echo(Value::text("ok"))
            .line(Line::comment("ends in \\"));
        match s.render() {
            Err(crate::Error::TrailingBackslash { line }) => assert_eq!(line, 2),
            other => panic!("{other:?}"),
        }
        let s = Script::new().line(Line::comment("x\\"));
        assert!(s.render().unwrap_err().to_string().starts_with("line 1: "));
        let e = parse("#!ipxe\necho a\\").unwrap_err();
        assert_eq!(e.line, 2);
        let e = parse("nope").unwrap_err();
        assert_eq!(e.line, 1);
    }
}
