//! Argument values and how one iPXE token is written so that iPXE's
//! tokeniser and `${...}` expansion (`core/exec.c` `split_command`,
//! `command_terminator`; `core/settings.c` `expand_settings`) give back
//! exactly the intended text.
//!
//! NB: iPXE has no quoting. The only tool is expansion, which runs *after*
//! a line is split and after comments/separators are found, so expanded
//! text is never syntax:
//! - `${}` expands to nothing: `${}#x` is the word `#x`, `${}||` the word `||`;
//! - whitespace that must survive inside a word comes from a setting holding
//!   that byte (`set nbrs-20:hex 20`, then `${nbrs-20:string}`);
//! - a literal `${` is `$` followed by the setting holding `{`. iPXE rescans
//!   expanded text, so this only works when no `}` follows in the same word
//!   (otherwise [`Error::DollarBrace`](crate::Error)).

use std::collections::BTreeSet;

use crate::error::{Arg, Error};

/// Prefix of the settings this crate defines for its escapes.
pub const ESCAPE_PREFIX: &str = "nbrs-";

/// Bytes that have an escape setting: the whitespace `isspace()` accepts
/// (minus `\n`/`\r`, which are rejected) and `{`.
pub(crate) const ESCAPABLE: [u8; 4 + 1] = [b' ', b'\t', 0x0b, 0x0c, b'{'];

/// iPXE's `isspace()` (`include/ctype.h`): space, `\f`, `\n`, `\r`, `\t`, `\v`.
pub fn is_ipxe_space(c: char) -> bool {
    matches!(c, ' ' | '\x0c' | '\n' | '\r' | '\t' | '\x0b')
}

/// One piece of a [`Value`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Part {
    /// Literal text: iPXE sees exactly these characters.
    Text(String),
    /// A setting expanded by iPXE at run time, written `${name}`
    /// (`name` may carry a scope and a type: `net0/mac:hexhyp`).
    Setting(String),
}

/// An argument value: literal text, possibly mixed with setting expansions.
///
/// `&str`/`String` convert into a literal value, so builder methods accept
/// plain strings. Adjacent text is merged and empty text dropped, so two
/// values that mean the same compare equal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Value {
    parts: Vec<Part>,
}

impl Value {
    /// The empty value.
    pub fn new() -> Value {
        Value::default()
    }

    /// A literal value.
    pub fn text(s: impl Into<String>) -> Value {
        Value::new().then_text(s)
    }

    /// A value that is one setting expansion `${name}`.
    pub fn setting(name: impl Into<String>) -> Value {
        Value::new().then_setting(name)
    }

    /// Appends literal text.
    pub fn then_text(mut self, s: impl Into<String>) -> Value {
        self.push_text(&s.into());
        self
    }

    /// Appends a setting expansion.
    pub fn then_setting(mut self, name: impl Into<String>) -> Value {
        self.parts.push(Part::Setting(name.into()));
        self
    }

    /// Appends another value.
    pub fn then(mut self, other: impl Into<Value>) -> Value {
        for p in other.into().parts {
            match p {
                Part::Text(t) => self.push_text(&t),
                s @ Part::Setting(_) => self.parts.push(s),
            }
        }
        self
    }

    fn push_text(&mut self, s: &str) {
        if s.is_empty() {
            return;
        }
        if let Some(Part::Text(t)) = self.parts.last_mut() {
            t.push_str(s);
        } else {
            self.parts.push(Part::Text(s.to_owned()));
        }
    }

    /// The parts, adjacent text merged.
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// The text, if the value has no setting expansions.
    pub fn as_text(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [] => Some(""),
            [Part::Text(t)] => Some(t),
            _ => None,
        }
    }

    pub(crate) fn atoms(&self) -> Vec<Atom<'_>> {
        let mut out = Vec::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.extend(t.chars().map(Atom::Ch)),
                Part::Setting(s) => out.push(Atom::Set(s)),
            }
        }
        out
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::text(s)
    }
}
impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::text(s)
    }
}
impl From<&String> for Value {
    fn from(s: &String) -> Value {
        Value::text(s.as_str())
    }
}

/// One character or setting of a value, as the renderer walks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Atom<'a> {
    Ch(char),
    Set(&'a str),
}

/// Whether `name` is a setting name this crate writes/reads:
/// `[A-Za-z0-9_.:/@-]+` (scope `/`, type `:`).
pub fn is_valid_setting_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:/@-".contains(&b))
}

/// Rendering state for one script: which escape settings are used, and the
/// line being rendered (for errors).
#[derive(Debug, Default)]
pub(crate) struct Ctx {
    pub(crate) line: usize,
    pub(crate) escapes: BTreeSet<u8>,
}

impl Ctx {
    pub(crate) fn check_setting_name(&self, name: &str) -> Result<(), Error> {
        if !is_valid_setting_name(name) {
            return Err(Error::InvalidSettingName {
                line: self.line,
                name: name.to_owned(),
            });
        }
        // The name part (after any scope, before any type) must not be ours.
        let base = name.rsplit('/').next().unwrap_or(name);
        if base.starts_with(ESCAPE_PREFIX) {
            return Err(Error::ReservedSetting {
                line: self.line,
                name: name.to_owned(),
            });
        }
        Ok(())
    }

    fn escape(&mut self, out: &mut String, b: u8) {
        self.escapes.insert(b);
        out.push_str(&escape_ref(b));
    }

    /// Renders one iPXE token (one `argv` entry). `allow_ws`: whitespace is
    /// written through escape settings instead of being an error.
    pub(crate) fn token(
        &mut self,
        atoms: &[Atom<'_>],
        arg: Arg,
        allow_ws: bool,
    ) -> Result<String, Error> {
        let has_setting = self.check_atoms(atoms, arg, allow_ws)?;
        self.check_dollar_brace(atoms, arg, has_setting)?;
        let mut out = self.write_atoms(atoms);
        // Comment and separator detection look at the raw token, before
        // expansion (exec.c `command_terminator`); `${}` expands to nothing.
        if out.is_empty() || out.starts_with('#') || matches!(out.as_str(), "||" | "&&" | ";") {
            out.insert_str(0, "${}");
        }
        Ok(out)
    }

    /// Step 1 of [`Ctx::token`]: characters no escape can carry (newline,
    /// CR, NUL), whitespace where one word is required, and setting names.
    /// Returns whether the token holds a setting expansion.
    fn check_atoms(&self, atoms: &[Atom<'_>], arg: Arg, allow_ws: bool) -> Result<bool, Error> {
        let line = self.line;
        let mut has_setting = false;
        for a in atoms {
            match *a {
                Atom::Ch(ch @ ('\n' | '\r' | '\0')) => {
                    return Err(Error::ForbiddenChar { line, arg, ch })
                }
                Atom::Ch(c) if is_ipxe_space(c) && !allow_ws => {
                    return Err(Error::Whitespace {
                        line,
                        arg,
                        value: display_atoms(atoms),
                    })
                }
                Atom::Set(s) => {
                    has_setting = true;
                    self.check_setting_name(s)?;
                }
                Atom::Ch(_) => {}
            }
        }
        Ok(has_setting)
    }

    /// Step 2 of [`Ctx::token`]: a literal `${` survives only if nothing
    /// after it in this token can close it, since iPXE rescans the expanded
    /// token until no `${...}` is left (settings.c `expand_settings`).
    fn check_dollar_brace(
        &self,
        atoms: &[Atom<'_>],
        arg: Arg,
        has_setting: bool,
    ) -> Result<(), Error> {
        let refuse = || Error::DollarBrace {
            line: self.line,
            arg,
            value: display_atoms(atoms),
        };
        let mut seen_dollar_brace = false;
        let mut prev = None;
        for a in atoms {
            match *a {
                Atom::Ch('{') if prev == Some('$') => seen_dollar_brace = true,
                Atom::Ch('}') | Atom::Set(_) if seen_dollar_brace => return Err(refuse()),
                _ => {}
            }
            prev = match *a {
                Atom::Ch(c) => Some(c),
                Atom::Set(_) => None,
            };
        }
        if seen_dollar_brace && has_setting {
            return Err(refuse());
        }
        Ok(())
    }

    /// Step 3 of [`Ctx::token`]: the token's text, whitespace and the `{`
    /// of a literal `${` written through escape settings.
    fn write_atoms(&mut self, atoms: &[Atom<'_>]) -> String {
        let mut out = String::new();
        let mut prev_literal_dollar = false;
        for a in atoms {
            match *a {
                Atom::Ch(c) if is_ipxe_space(c) => {
                    self.escape(&mut out, c as u8);
                    prev_literal_dollar = false;
                }
                Atom::Ch('{') if prev_literal_dollar => {
                    self.escape(&mut out, b'{');
                    prev_literal_dollar = false;
                }
                Atom::Ch(c) => {
                    out.push(c);
                    prev_literal_dollar = c == '$';
                }
                Atom::Set(s) => {
                    out.push_str("${");
                    out.push_str(s);
                    out.push('}');
                    prev_literal_dollar = false;
                }
            }
        }
        out
    }

    /// Renders a rest-of-line value (echo text, kernel arguments, set value):
    /// commands re-join their trailing arguments with single spaces
    /// (exec.c `concat_args`), so a single space between two visible
    /// characters is a token boundary and any other whitespace is escaped.
    pub(crate) fn rest(&mut self, v: &Value, arg: Arg) -> Result<Vec<String>, Error> {
        split_rest(&v.atoms())
            .iter()
            .map(|t| self.token(t, arg, true))
            .collect()
    }
}

/// The atoms as the user wrote them (settings as `${name}`), for errors.
fn display_atoms(atoms: &[Atom<'_>]) -> String {
    atoms
        .iter()
        .map(|a| match a {
            Atom::Ch(c) => c.to_string(),
            Atom::Set(s) => format!("${{{s}}}"),
        })
        .collect()
}

/// `${nbrs-XX:string}`: the reference to the escape setting for byte `b`.
pub(crate) fn escape_ref(b: u8) -> String {
    format!("${{{ESCAPE_PREFIX}{b:02x}:string}}")
}

/// The line that defines the escape setting for byte `b`.
pub(crate) fn escape_def(b: u8) -> String {
    format!("set {ESCAPE_PREFIX}{b:02x}:hex {b:02x}")
}

fn is_space_atom(a: Option<&Atom<'_>>) -> bool {
    matches!(a, Some(Atom::Ch(c)) if is_ipxe_space(*c))
}

pub(crate) fn split_rest<'a>(atoms: &[Atom<'a>]) -> Vec<Vec<Atom<'a>>> {
    let mut tokens = Vec::new();
    let mut cur = Vec::new();
    for (i, a) in atoms.iter().enumerate() {
        let separator = *a == Atom::Ch(' ')
            && i > 0
            && !is_space_atom(atoms.get(i - 1))
            && atoms.get(i + 1).is_some()
            && !is_space_atom(atoms.get(i + 1));
        if separator {
            tokens.push(std::mem::take(&mut cur));
        } else {
            cur.push(*a);
        }
    }
    if !cur.is_empty() {
        tokens.push(cur);
    }
    tokens
}

/// Turns one raw iPXE token back into a [`Value`], undoing this crate's
/// escapes (`escapes` = bytes whose escape setting the script defines).
/// Scans left to right: `${` up to the next `}` is an expansion; a `${`
/// without a closing `}` is literal, as in iPXE. `Err(expansion)` for an
/// expansion that cannot be represented.
pub(crate) fn decode_token(token: &str, escapes: &BTreeSet<u8>) -> Result<Value, (usize, String)> {
    let mut v = Value::new();
    let mut rest = token;
    let mut offset = 0;
    while let Some(start) = rest.find("${") {
        let Some(len) = rest[start + 2..].find('}') else {
            break;
        };
        v.push_text(&rest[..start]);
        let name = &rest[start + 2..start + 2 + len];
        if let Some(b) = escape_byte(name).filter(|b| escapes.contains(b)) {
            v.push_text(&char::from(b).to_string());
        } else if name.is_empty() {
            // `${}`: always nothing. settings.c `setting_cmp` never
            // matches an empty name, so even `set ${} x` cannot give it a
            // value.
        } else if is_valid_setting_name(name) {
            v.parts.push(Part::Setting(name.to_owned()));
        } else {
            return Err((offset + start, format!("${{{name}}}")));
        }
        let consumed = start + 2 + len + 1;
        offset += consumed;
        rest = &rest[consumed..];
    }
    v.push_text(rest);
    Ok(v)
}

/// `nbrs-XX:string` -> the escaped byte.
pub(crate) fn escape_byte(name: &str) -> Option<u8> {
    let hex = name.strip_prefix(ESCAPE_PREFIX)?.strip_suffix(":string")?;
    if hex.len() != 2 || hex.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let b = u8::from_str_radix(hex, 16).ok()?;
    ESCAPABLE.contains(&b).then_some(b)
}

/// `set nbrs-XX:hex XX` -> the byte it defines.
pub(crate) fn escape_def_byte(line: &str) -> Option<u8> {
    ESCAPABLE.iter().copied().find(|&b| line == escape_def(b))
}
