//! The crate's error types: [`Error`] for building/rendering, [`ParseError`] for reading.

/// Which argument of a command a rendering error is about.
pub type Arg = &'static str;

/// Why a script could not be rendered (or a netboot script built).
///
/// `line` is the index of the offending [`Line`](crate::Line) in
/// [`Script::lines`](crate::Script::lines) (0-based; the `#!ipxe` header and
/// the escape preamble are not counted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A newline, carriage return or NUL in a value: iPXE would end the
    /// line there (script injection) or truncate the C string.
    #[error("line {line}: {arg} contains {ch:?}, which cannot appear in an iPXE script line")]
    ForbiddenChar {
        /// Line index.
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
        /// Line index.
        line: usize,
        /// Argument.
        arg: Arg,
        /// The value.
        value: String,
    },
    /// An argument that must not be empty is empty.
    #[error("line {line}: {arg} is empty")]
    Empty {
        /// Line index.
        line: usize,
        /// Argument.
        arg: Arg,
    },
    /// A literal `${` followed later in the same word by `}` (or by a setting
    /// expansion): iPXE rescans expanded text, so no escaping can make it
    /// come out literally.
    #[error("line {line}: {arg} {value:?} contains `${{` followed by `}}` in one word; iPXE would expand it")]
    DollarBrace {
        /// Line index.
        line: usize,
        /// Argument.
        arg: Arg,
        /// The value.
        value: String,
    },
    /// An image name starting with `-` (would be read as an option).
    #[error("line {line}: {arg} {value:?} must not start with '-'")]
    LeadingDash {
        /// Line index.
        line: usize,
        /// Argument.
        arg: Arg,
        /// The value.
        value: String,
    },
    /// A setting name outside `[A-Za-z0-9_.:/@-]+`.
    #[error("line {line}: invalid setting name {name:?} (allowed: A-Z a-z 0-9 _ . : / @ -)")]
    InvalidSettingName {
        /// Line index.
        line: usize,
        /// The name.
        name: String,
    },
    /// A setting name in the `nbrs-` namespace this crate uses for escapes.
    #[error("line {line}: setting name {name:?} is reserved for this crate's escapes")]
    ReservedSetting {
        /// Line index.
        line: usize,
        /// The name.
        name: String,
    },
    /// A label that is empty or contains whitespace or control characters.
    #[error("line {line}: invalid label {label:?}")]
    InvalidLabel {
        /// Line index.
        line: usize,
        /// The label.
        label: String,
    },
    /// A raw command name that is not a plain word (or would be read as a
    /// comment, label, separator or option).
    #[error("line {line}: invalid command name {name:?}")]
    InvalidCommandName {
        /// Line index.
        line: usize,
        /// The name.
        name: String,
    },
    /// A comment ending in `\`: iPXE would join the next line onto it.
    #[error("line {line}: comment ends with a backslash, which would swallow the next line")]
    TrailingBackslash {
        /// Line index.
        line: usize,
    },
    /// `kernel`/`initrd`/`imgfetch`/`chain` without a URI.
    #[error("line {line}: `{command}` needs a URI")]
    MissingUri {
        /// Line index.
        line: usize,
        /// The command.
        command: &'static str,
    },
    /// A line whose commands are joined by separators but which has none.
    #[error("line {line}: separator without a following command slot")]
    DanglingSeparator {
        /// Line index.
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
    /// A netboot kernel parameter, init path or image name that is not usable.
    #[error("netboot {what} {value:?}: {why}")]
    InvalidNetbootValue {
        /// Which input.
        what: &'static str,
        /// The value.
        value: String,
        /// Why.
        why: &'static str,
    },
}

/// Where and why [`parse`](crate::parse()) failed.
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
