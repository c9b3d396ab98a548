//! A whole script: lines of commands, and rendering to iPXE's text format
//! (`image/script.c`).

use crate::command::{check_label, Command, Image};
use crate::error::Error;
use crate::value::{escape_def, Ctx, Value};

/// How a command is joined to the previous one on the same line
/// (exec.c `command_terminator`; evaluated left to right, no precedence).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Joiner {
    /// `&&`: run if the previous command succeeded.
    And,
    /// `||`: run if the previous command failed.
    Or,
    /// `;`: run regardless.
    Then,
}

impl Joiner {
    /// The separator token.
    pub fn as_str(self) -> &'static str {
        match self {
            Joiner::And => "&&",
            Joiner::Or => "||",
            Joiner::Then => ";",
        }
    }
}

/// One script line: optional `:label`, a chain of commands joined by
/// [`Joiner`]s (any slot may be empty, e.g. `cmd ||` to ignore a failure),
/// optional trailing `# comment`. An all-empty line renders as a blank line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Line {
    /// `:label` at the start of the line.
    pub label: Option<String>,
    /// The first command slot.
    pub first: Option<Command>,
    /// Further command slots, each after its separator.
    pub rest: Vec<(Joiner, Option<Command>)>,
    /// Comment text after `#` (one space is written after `#` when the text
    /// is not empty).
    pub comment: Option<String>,
}

impl Line {
    /// A line holding one command.
    pub fn command(c: Command) -> Line {
        Line {
            first: Some(c),
            ..Line::default()
        }
    }

    /// A comment-only line.
    pub fn comment(text: impl Into<String>) -> Line {
        Line {
            comment: Some(text.into()),
            ..Line::default()
        }
    }

    /// All command slots in order.
    pub fn commands(&self) -> impl Iterator<Item = &Command> {
        self.first
            .iter()
            .chain(self.rest.iter().filter_map(|(_, c)| c.as_ref()))
    }

    fn render(&self, cx: &mut Ctx) -> Result<String, Error> {
        let mut words: Vec<String> = Vec::new();
        if let Some(l) = &self.label {
            check_label(cx, l)?;
            words.push(format!(":{l}"));
        }
        if let Some(c) = &self.first {
            words.extend(c.render(cx)?);
        }
        for (j, c) in &self.rest {
            words.push(j.as_str().to_owned());
            if let Some(c) = c {
                words.extend(c.render(cx)?);
            }
        }
        let mut out = words.join(" ");
        if let Some(text) = &self.comment {
            if let Some(ch) = text.chars().find(|c| matches!(c, '\n' | '\r' | '\0')) {
                return Err(Error::ForbiddenChar {
                    line: cx.line,
                    arg: "comment",
                    ch,
                });
            }
            if text.ends_with('\\') {
                return Err(Error::TrailingBackslash { line: cx.line });
            }
            if !out.is_empty() {
                out.push(' ');
            }
            out.push('#');
            if !text.is_empty() {
                out.push(' ');
                out.push_str(text);
            }
        } else if out.ends_with('\\') {
            // script.c joins a line ending in `\` with the next one. A label
            // is never expanded, so a label-only line gets a trailing space
            // (which ends the label token) instead of `${}`.
            if words.len() == 1 && self.label.is_some() {
                out.push(' ');
            } else {
                out.push_str("${}");
            }
        }
        Ok(out)
    }
}

/// An iPXE script, built by value:
///
/// ```
/// use ipxe_script::Script;
/// let text = Script::new().imgfree().kernel("bzImage", "console=ttyS0").initrd("initrd").boot().render()?;
/// assert_eq!(text, "#!ipxe\nimgfree\nkernel bzImage console=ttyS0\ninitrd initrd\nboot\n");
/// # Ok::<(), ipxe_script::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Script {
    lines: Vec<Line>,
}

impl Script {
    /// An empty script (renders as just `#!ipxe`).
    pub fn new() -> Script {
        Script::default()
    }

    /// A script from lines.
    pub fn from_lines(lines: Vec<Line>) -> Script {
        Script { lines }
    }

    /// The lines (without the `#!ipxe` header and the escape preamble).
    pub fn lines(&self) -> &[Line] {
        &self.lines
    }

    /// Alias of [`lines`](Script::lines), the contract's name.
    pub fn commands(&self) -> &[Line] {
        &self.lines
    }

    /// Consumes the script, returning its lines.
    pub fn into_lines(self) -> Vec<Line> {
        self.lines
    }

    /// Appends a line.
    pub fn line(mut self, line: Line) -> Script {
        self.lines.push(line);
        self
    }

    /// Appends a line with one command.
    pub fn command(self, c: Command) -> Script {
        self.line(Line::command(c))
    }

    /// Joins `c` to the last line with `joiner` (or starts a line).
    pub fn join(mut self, joiner: Joiner, c: Command) -> Script {
        match self.lines.last_mut() {
            Some(l) if l.first.is_some() || !l.rest.is_empty() => {
                l.rest.push((joiner, Some(c)));
                self
            }
            _ => self.command(c),
        }
    }

    /// `|| c` on the last line.
    pub fn or(self, c: Command) -> Script {
        self.join(Joiner::Or, c)
    }

    /// `&& c` on the last line.
    pub fn and(self, c: Command) -> Script {
        self.join(Joiner::And, c)
    }

    /// Appends a trailing `||` to the last line: ignore its failure.
    pub fn or_ignore(mut self) -> Script {
        if let Some(l) = self.lines.last_mut() {
            l.rest.push((Joiner::Or, None));
        }
        self
    }

    /// `# text` line.
    pub fn comment(self, text: impl Into<String>) -> Script {
        self.line(Line::comment(text))
    }

    /// `:name` label line.
    pub fn label(self, name: impl Into<String>) -> Script {
        self.line(Line {
            label: Some(name.into()),
            ..Line::default()
        })
    }

    /// `echo TEXT`.
    pub fn echo(self, text: impl Into<Value>) -> Script {
        self.command(Command::Echo {
            no_newline: false,
            text: text.into(),
        })
    }

    /// `set NAME VALUE`.
    pub fn set(self, name: impl Into<String>, value: impl Into<Value>) -> Script {
        self.command(Command::Set {
            name: name.into(),
            value: value.into(),
        })
    }

    /// `clear NAME`.
    pub fn clear(self, name: impl Into<String>) -> Script {
        self.command(Command::Clear { name: name.into() })
    }

    /// `dhcp` (all interfaces).
    pub fn dhcp(self) -> Script {
        self.command(Command::Dhcp { interface: None })
    }

    /// `ifconf` (all interfaces).
    pub fn ifconf(self) -> Script {
        self.command(Command::Ifconf {
            configurator: None,
            interface: None,
        })
    }

    /// `kernel URI ARGS`.
    pub fn kernel(self, uri: impl Into<Value>, args: impl Into<Value>) -> Script {
        self.command(Command::Kernel(Image::new(uri).args(args)))
    }

    /// `kernel` with options.
    pub fn kernel_image(self, image: Image) -> Script {
        self.command(Command::Kernel(image))
    }

    /// `initrd URI`.
    pub fn initrd(self, uri: impl Into<Value>) -> Script {
        self.command(Command::Initrd(Image::new(uri)))
    }

    /// `initrd` with options/arguments.
    pub fn initrd_image(self, image: Image) -> Script {
        self.command(Command::Initrd(image))
    }

    /// `imgfetch` with options/arguments.
    pub fn imgfetch(self, image: Image) -> Script {
        self.command(Command::Imgfetch(image))
    }

    /// `imgargs NAME ARGS`.
    pub fn imgargs(self, name: impl Into<Value>, args: impl Into<Value>) -> Script {
        self.command(Command::Imgargs(Image::new(name).args(args)))
    }

    /// `imgfree` (all images).
    pub fn imgfree(self) -> Script {
        self.command(Command::Imgfree { image: None })
    }

    /// `chain` with options/arguments.
    pub fn chain(self, image: Image) -> Script {
        self.command(Command::Chain(image))
    }

    /// `boot` (the selected image).
    pub fn boot(self) -> Script {
        self.command(Command::Boot(Image::default()))
    }

    /// `sleep SECONDS`.
    pub fn sleep(self, seconds: u32) -> Script {
        self.command(Command::Sleep { seconds })
    }

    /// `shell`.
    pub fn shell(self) -> Script {
        self.command(Command::Shell)
    }

    /// `exit [CODE]`.
    pub fn exit(self, code: Option<u32>) -> Script {
        self.command(Command::Exit { code })
    }

    /// `goto LABEL`.
    pub fn goto(self, label: impl Into<String>) -> Script {
        self.command(Command::Goto {
            label: label.into(),
        })
    }

    /// Any other command; each argument is one iPXE argv entry.
    pub fn raw(self, name: impl Into<String>, args: Vec<Value>) -> Script {
        self.command(Command::Other {
            name: name.into(),
            args,
        })
    }

    /// Renders the script: `#!ipxe`, the escape settings it needs (if any),
    /// then one line per [`Line`], each ending in `\n`.
    pub fn render(&self) -> Result<String, Error> {
        let mut cx = Ctx::default();
        let mut body = String::new();
        for (i, l) in self.lines.iter().enumerate() {
            // 1-based, as `ParseError::line` counts.
            cx.line = i + 1;
            body.push_str(&l.render(&mut cx)?);
            body.push('\n');
        }
        let mut out = String::from("#!ipxe\n");
        for b in &cx.escapes {
            out.push_str(&escape_def(*b));
            out.push('\n');
        }
        out.push_str(&body);
        Ok(out)
    }
}
