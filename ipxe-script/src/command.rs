//! The typed commands of one script line, and the argv each renders to.
//!
//! Option handling follows iPXE's `core/getopt.c`: options are read only
//! before the first positional argument, and `--` ends them. So when the
//! first positional could start with `-` (literal `-`, or a setting
//! expansion) the renderer writes `--` first.

use crate::error::Error;
use crate::value::{Atom, Ctx, Value};

/// An image command's options and arguments (`kernel`, `initrd`,
/// `imgfetch`, `chain`, `boot`, `imgargs`; iPXE's "img{single}" family in
/// `hci/commands/image_cmd.c`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Image {
    /// The URI (or, for `boot`/`imgargs`, an image name); `None` for a bare
    /// `boot` (boot the selected image).
    pub uri: Option<Value>,
    /// Arguments after the URI, re-joined by iPXE with single spaces: the
    /// kernel command line, or for `initrd` the cpio path and options.
    pub args: Value,
    /// `--name NAME`: register the image under this name.
    pub name: Option<Value>,
    /// `--timeout MS`: download inactivity timeout in milliseconds.
    pub timeout_ms: Option<u64>,
    /// `--autofree`: unregister the image if it returns.
    pub autofree: bool,
    /// `--replace`: replace the running script (`chain`/`boot` only).
    pub replace: bool,
}

impl Image {
    /// An image fetched from `uri`, no arguments or options.
    pub fn new(uri: impl Into<Value>) -> Image {
        Image {
            uri: Some(uri.into()),
            ..Image::default()
        }
    }

    /// Sets the arguments (rest of the line).
    pub fn args(mut self, args: impl Into<Value>) -> Image {
        self.args = args.into();
        self
    }

    /// Sets `--name`.
    pub fn name(mut self, name: impl Into<Value>) -> Image {
        self.name = Some(name.into());
        self
    }

    /// Sets `--timeout` (milliseconds).
    pub fn timeout_ms(mut self, ms: u64) -> Image {
        self.timeout_ms = Some(ms);
        self
    }

    /// Sets `--autofree`.
    pub fn autofree(mut self, on: bool) -> Image {
        self.autofree = on;
        self
    }

    /// Sets `--replace`.
    pub fn replace(mut self, on: bool) -> Image {
        self.replace = on;
        self
    }
}

/// One iPXE command.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Command {
    /// `echo [-n] TEXT`: prints the text (iPXE joins words with one space;
    /// other whitespace is escaped).
    Echo {
        /// `-n`: no trailing newline.
        no_newline: bool,
        /// The text printed.
        text: Value,
    },
    /// `set NAME VALUE`: stores the value (string type).
    Set {
        /// Setting name (`[A-Za-z0-9_.:/@-]+`).
        name: String,
        /// The value stored (empty clears it, as in iPXE).
        value: Value,
    },
    /// `clear NAME`.
    Clear {
        /// Setting name.
        name: String,
    },
    /// `dhcp [IFACE]`.
    Dhcp {
        /// Interface (`net0`), or all.
        interface: Option<Value>,
    },
    /// `ifconf [--configurator C] [IFACE]`.
    Ifconf {
        /// `--configurator` (`dhcp`, `ipv6`).
        configurator: Option<Value>,
        /// Interface, or all.
        interface: Option<Value>,
    },
    /// `kernel [opts] URI [ARGS]`: fetch and select the kernel.
    Kernel(Image),
    /// `initrd [opts] URI [ARGS]`: fetch an initrd.
    Initrd(Image),
    /// `imgfetch [opts] URI [ARGS]`.
    Imgfetch(Image),
    /// `imgargs NAME [ARGS]`: replace an image's command line.
    Imgargs(Image),
    /// `chain [opts] URI [ARGS]`: fetch and boot.
    Chain(Image),
    /// `boot [opts] [NAME [ARGS]]`: boot the selected (or named) image.
    Boot(Image),
    /// `imgfree [NAME]`: unregister one or all images.
    Imgfree {
        /// The image, or all.
        image: Option<Value>,
    },
    /// `sleep SECONDS`.
    Sleep {
        /// Seconds.
        seconds: u32,
    },
    /// `shell`.
    Shell,
    /// `exit [CODE]`.
    Exit {
        /// Exit status.
        code: Option<u32>,
    },
    /// `goto LABEL`.
    Goto {
        /// Label name (without `:`).
        label: String,
    },
    /// Any other command, argv exactly as given (each argument one iPXE
    /// token; whitespace inside is escaped, no `--` is added).
    Other {
        /// Command name.
        name: String,
        /// Arguments.
        args: Vec<Value>,
    },
}

/// The command names the parser turns into typed [`Command`]s.
pub const TYPED_COMMANDS: &[&str] = &[
    "echo", "set", "clear", "dhcp", "ifconf", "kernel", "initrd", "imgfetch", "imgargs", "chain",
    "boot", "imgfree", "sleep", "shell", "exit", "goto",
];

impl Command {
    /// The iPXE command name.
    pub fn name(&self) -> &str {
        match self {
            Command::Echo { .. } => "echo",
            Command::Set { .. } => "set",
            Command::Clear { .. } => "clear",
            Command::Dhcp { .. } => "dhcp",
            Command::Ifconf { .. } => "ifconf",
            Command::Kernel(_) => "kernel",
            Command::Initrd(_) => "initrd",
            Command::Imgfetch(_) => "imgfetch",
            Command::Imgargs(_) => "imgargs",
            Command::Chain(_) => "chain",
            Command::Boot(_) => "boot",
            Command::Imgfree { .. } => "imgfree",
            Command::Sleep { .. } => "sleep",
            Command::Shell => "shell",
            Command::Exit { .. } => "exit",
            Command::Goto { .. } => "goto",
            Command::Other { name, .. } => name,
        }
    }

    /// The rendered tokens of this command (name first): its options, then
    /// `--` when the first positional could be read as an option, then the
    /// positionals.
    // NB: longer than our ~60 lines on purpose: one `match` over the
    // command kinds, one short arm each beside the parser's `typed`, reads
    // best whole; the longer kinds have their own `Rendered` methods.
    pub(crate) fn render(&self, cx: &mut Ctx) -> Result<Vec<String>, Error> {
        let mut r = Rendered {
            argv: vec![self.name().to_owned()],
            pos: Vec::new(),
            first_dashy: None,
        };
        match self {
            Command::Echo { no_newline, text } => {
                if *no_newline {
                    r.argv.push("-n".into());
                }
                r.first_dashy = Some(dashy(text));
                r.pos = cx.rest(text, "echo text")?;
            }
            Command::Set { name, value } => {
                setting_name(cx, name)?;
                r.first_dashy = Some(false);
                r.pos.push(name.clone());
                r.pos.extend(cx.rest(value, "set value")?);
            }
            Command::Clear { name } => {
                setting_name(cx, name)?;
                r.first_dashy = Some(false);
                r.pos.push(name.clone());
            }
            Command::Dhcp { interface } => r.interface(cx, interface.as_ref())?,
            Command::Ifconf {
                interface,
                configurator,
            } => {
                if let Some(c) = configurator {
                    r.argv.push("--configurator".into());
                    r.argv.push(option_value(cx, c, "configurator")?);
                }
                r.interface(cx, interface.as_ref())?;
            }
            Command::Kernel(img)
            | Command::Initrd(img)
            | Command::Imgfetch(img)
            | Command::Imgargs(img)
            | Command::Chain(img)
            | Command::Boot(img) => r.image(cx, self, img)?,
            Command::Imgfree { image } => {
                if let Some(i) = image {
                    r.first_dashy = Some(dashy(i));
                    r.pos.push(nonempty_word(cx, i, "image name")?);
                }
            }
            Command::Sleep { seconds } => r.pos.push(seconds.to_string()),
            Command::Shell => {}
            Command::Exit { code } => r.pos.extend(code.map(|c| c.to_string())),
            Command::Goto { label } => {
                check_label(cx, label)?;
                r.first_dashy = Some(label.starts_with('-'));
                r.pos
                    .push(cx.token(&Value::text(label).atoms(), "label", false)?);
            }
            Command::Other { name, args } => r.other(cx, name, args)?,
        }
        Ok(r.finish())
    }
}

/// A command being rendered: option tokens (name first) and positionals.
struct Rendered {
    argv: Vec<String>,
    pos: Vec<String>,
    /// Whether the first positional may start with '-' after expansion.
    first_dashy: Option<bool>,
}

impl Rendered {
    /// An optional interface argument (`dhcp`, `ifconf`).
    fn interface(&mut self, cx: &mut Ctx, interface: Option<&Value>) -> Result<(), Error> {
        if let Some(i) = interface {
            self.first_dashy = Some(dashy(i));
            self.pos.push(nonempty_word(cx, i, "interface")?);
        }
        Ok(())
    }

    /// The image commands: `--name`, `--timeout`, `--autofree`, `--replace`,
    /// then the URI and the image's arguments.
    fn image(&mut self, cx: &mut Ctx, cmd: &Command, img: &Image) -> Result<(), Error> {
        let is_exec = matches!(cmd, Command::Chain(_) | Command::Boot(_));
        if let Some(n) = &img.name {
            self.argv.push("--name".into());
            self.argv.push(option_value(cx, n, "image name")?);
        }
        if let Some(t) = img.timeout_ms {
            self.argv.push("--timeout".into());
            self.argv.push(t.to_string());
        }
        if img.autofree {
            self.argv.push("--autofree".into());
        }
        if img.replace && is_exec {
            self.argv.push("--replace".into());
        }
        match &img.uri {
            Some(u) => {
                self.first_dashy = Some(dashy(u));
                self.pos.push(nonempty_word(cx, u, "URI")?);
                self.pos.extend(cx.rest(&img.args, "arguments")?);
            }
            // `boot` alone boots the current image; with arguments it needs one.
            None if matches!(cmd, Command::Boot(_)) => {
                if !img.args.is_empty() {
                    return Err(Error::MissingUri {
                        line: cx.line,
                        command: "boot",
                    });
                }
            }
            None => {
                return Err(Error::MissingUri {
                    line: cx.line,
                    command: static_name(cmd),
                })
            }
        }
        Ok(())
    }

    /// Any other command: a checked name and verbatim arguments.
    fn other(&mut self, cx: &mut Ctx, name: &str, args: &[Value]) -> Result<(), Error> {
        check_command_name(cx, name)?;
        // Our escape settings must keep their values (and a raw
        // `set nbrs-20:hex 20` would read back as our preamble).
        if let Some(t) = args.first().and_then(Value::as_text) {
            if t.starts_with(crate::value::ESCAPE_PREFIX) {
                return Err(Error::ReservedSetting {
                    line: cx.line,
                    name: t.to_owned(),
                });
            }
        }
        for a in args {
            self.pos.push(cx.token(&a.atoms(), "argument", true)?);
        }
        Ok(())
    }

    fn finish(mut self) -> Vec<String> {
        if self.first_dashy == Some(true) && !self.pos.is_empty() {
            self.argv.push("--".into());
        }
        self.argv.extend(self.pos);
        self.argv
    }
}

/// One non-empty word.
fn nonempty_word(cx: &mut Ctx, v: &Value, arg: &'static str) -> Result<String, Error> {
    if v.is_empty() {
        return Err(Error::Empty { line: cx.line, arg });
    }
    cx.token(&v.atoms(), arg, false)
}

fn static_name(c: &Command) -> &'static str {
    match c {
        Command::Kernel(_) => "kernel",
        Command::Initrd(_) => "initrd",
        Command::Imgfetch(_) => "imgfetch",
        Command::Imgargs(_) => "imgargs",
        Command::Chain(_) => "chain",
        _ => "boot",
    }
}

/// Whether the value could start with `-` once expanded.
fn dashy(v: &Value) -> bool {
    matches!(v.atoms().first(), Some(Atom::Ch('-')) | Some(Atom::Set(_)))
}

/// An option's argument: one non-empty word that must not look like an option.
fn option_value(cx: &mut Ctx, v: &Value, arg: &'static str) -> Result<String, Error> {
    if v.is_empty() {
        return Err(Error::Empty { line: cx.line, arg });
    }
    if dashy(v) {
        return Err(Error::LeadingDash {
            line: cx.line,
            arg,
            value: format!("{v:?}"),
        });
    }
    cx.token(&v.atoms(), arg, false)
}

fn setting_name(cx: &Ctx, name: &str) -> Result<(), Error> {
    cx.check_setting_name(name)?;
    if name.starts_with('-') {
        return Err(Error::InvalidSettingName {
            line: cx.line,
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Labels are compared literally (script.c never expands them): any
/// non-empty run of printable non-whitespace characters.
pub(crate) fn check_label(cx: &Ctx, label: &str) -> Result<(), Error> {
    if label.is_empty()
        || label
            .chars()
            .any(|c| c.is_control() || crate::value::is_ipxe_space(c))
    {
        return Err(Error::InvalidLabel {
            line: cx.line,
            label: label.to_owned(),
        });
    }
    Ok(())
}

fn check_command_name(cx: &Ctx, name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        && !name.starts_with('-');
    if !ok {
        return Err(Error::InvalidCommandName {
            line: cx.line,
            name: name.to_owned(),
        });
    }
    Ok(())
}
