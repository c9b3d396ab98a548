//! Reading iPXE scripts into the [`Script`] model, tokenising exactly as
//! iPXE does:
//! - lines (`image/script.c` `process_script`): split on `\n`, one trailing
//!   `\r` dropped, a line ending in `\` is joined to the next with nothing in
//!   between, a first token starting with `:` is a label;
//! - tokens (`core/exec.c` `split_command`): runs of `isspace()`;
//! - a token starting with `#` ends the line (comment); `||`, `&&`, `;` are
//!   separators only as whole tokens (`command_terminator`);
//! - options as `core/getopt.c`: only before the first positional, `--` ends.
//!
//! Commands that do not fit the typed model (unknown options, other
//! argument counts, other commands) become [`Command::Other`] with their
//! argv, so any script iPXE can run is read; only NUL, a dangling final
//! continuation, a missing magic and `${...}` forms the model cannot hold
//! are errors.

use std::collections::BTreeSet;

use crate::command::{Command, Image};
use crate::error::{ParseError, ParseErrorKind};
use crate::script::{Joiner, Line, Script};
use crate::value::{
    decode_token, escape_def_byte, is_ipxe_space, is_valid_setting_name, Value, ESCAPE_PREFIX,
};

/// One logical line (continuations joined) and where its pieces came from.
struct Logical {
    text: String,
    /// (offset in `text`, 1-based physical line, byte offset of that
    /// physical line's piece in the input)
    segs: Vec<(usize, usize, usize)>,
}

struct Cursor<'a> {
    input: &'a str,
}

impl Cursor<'_> {
    fn position(&self, logical: &Logical, pos: usize) -> (usize, usize) {
        let seg = logical
            .segs
            .iter()
            .rev()
            .find(|s| s.0 <= pos)
            .or(logical.segs.first());
        match seg {
            Some(&(off, line, start)) => {
                let end = start.saturating_add(pos - off.min(pos));
                let column = self
                    .input
                    .get(start..end)
                    .map_or(1, |s| s.chars().count() + 1);
                (line, column)
            }
            None => (1, 1),
        }
    }

    fn error(&self, logical: &Logical, pos: usize, kind: ParseErrorKind) -> ParseError {
        let (line, column) = self.position(logical, pos);
        ParseError { line, column, kind }
    }
}

/// Splits the script into logical lines as `process_script` does.
fn logical_lines(input: &str) -> Result<Vec<Logical>, ParseError> {
    let mut out = Vec::new();
    let mut offset = 0;
    let mut line_no = 1;
    let mut cur = Logical {
        text: String::new(),
        segs: Vec::new(),
    };
    loop {
        let rest = input.get(offset..).unwrap_or("");
        let frag = rest.split('\n').next().unwrap_or("");
        cur.segs.push((cur.text.len(), line_no, offset));
        cur.text.push_str(frag);
        offset += frag.len() + 1;
        line_no += 1;
        if cur.text.ends_with('\r') {
            cur.text.pop();
        }
        if cur.text.ends_with('\\') {
            cur.text.pop();
            if offset >= input.len() {
                let (l, c) = Cursor { input }.position(&cur, cur.text.len());
                return Err(ParseError {
                    line: l,
                    column: c,
                    kind: ParseErrorKind::TrailingContinuation,
                });
            }
            continue;
        }
        out.push(std::mem::replace(
            &mut cur,
            Logical {
                text: String::new(),
                segs: Vec::new(),
            },
        ));
        if offset >= input.len() {
            return Ok(out);
        }
    }
}

/// Parses an iPXE script. Never panics; see the module docs for what is an
/// error.
pub fn parse(input: &str) -> Result<Script, ParseError> {
    if let Some(pos) = input.find('\0') {
        let before = &input[..pos];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |s| s.chars().count()) + 1;
        return Err(ParseError {
            line,
            column,
            kind: ParseErrorKind::Nul,
        });
    }
    // script.c `script_probe`: "#!ipxe" or "#!gpxe", then whitespace.
    let magic_ok = (input.starts_with("#!ipxe") || input.starts_with("#!gpxe"))
        && input[6..].chars().next().is_some_and(is_ipxe_space);
    if !magic_ok {
        return Err(ParseError {
            line: 1,
            column: 1,
            kind: ParseErrorKind::Magic,
        });
    }
    let lines = logical_lines(input)?;
    let cursor = Cursor { input };
    let mut escapes = BTreeSet::new();
    let mut in_preamble = true;
    let mut out = Vec::new();
    // The first logical line is the magic, a comment to iPXE.
    for logical in lines.iter().skip(1) {
        if in_preamble {
            if let Some(b) = escape_def_byte(&logical.text) {
                escapes.insert(b);
                continue;
            }
            in_preamble = false;
        }
        out.push(parse_line(&cursor, logical, &escapes)?);
    }
    Ok(Script::from_lines(out))
}

fn parse_line(
    cursor: &Cursor<'_>,
    logical: &Logical,
    escapes: &BTreeSet<u8>,
) -> Result<Line, ParseError> {
    let text = logical.text.as_str();
    let mut line = Line::default();
    let mut pos = text.len() - text.trim_start_matches(is_ipxe_space).len();
    if text[pos..].starts_with(':') {
        let start = pos + 1;
        let len = text[start..]
            .find(is_ipxe_space)
            .unwrap_or(text.len() - start);
        line.label = Some(text[start..start + len].to_owned());
        pos = start + len;
        // script.c overwrites exactly one whitespace character with NUL.
        if let Some(c) = text[pos..].chars().next() {
            pos += c.len_utf8();
        }
    }
    let mut tokens: Vec<(usize, &str)> = Vec::new();
    let mut i = pos;
    while i < text.len() {
        let rest = &text[i..];
        let skip = rest.len() - rest.trim_start_matches(is_ipxe_space).len();
        i += skip;
        if i >= text.len() {
            break;
        }
        let len = text[i..].find(is_ipxe_space).unwrap_or(text.len() - i);
        tokens.push((i, &text[i..i + len]));
        i += len;
    }
    let mut group: Vec<(usize, &str)> = Vec::new();
    let mut joiner: Option<Joiner> = None;
    for &(off, tok) in &tokens {
        let sep = match tok {
            "||" => Some(Joiner::Or),
            "&&" => Some(Joiner::And),
            ";" => Some(Joiner::Then),
            _ => None,
        };
        if tok.starts_with('#') {
            let c = &text[off + 1..];
            line.comment = Some(c.strip_prefix(' ').unwrap_or(c).to_owned());
            break;
        }
        if let Some(j) = sep {
            let cmd = build(cursor, logical, &group, escapes)?;
            push(&mut line, joiner, cmd);
            joiner = Some(j);
            group.clear();
        } else {
            group.push((off, tok));
        }
    }
    let cmd = build(cursor, logical, &group, escapes)?;
    push(&mut line, joiner, cmd);
    Ok(line)
}

fn push(line: &mut Line, joiner: Option<Joiner>, cmd: Option<Command>) {
    match joiner {
        None => line.first = cmd,
        Some(j) => line.rest.push((j, cmd)),
    }
}

fn build(
    cursor: &Cursor<'_>,
    logical: &Logical,
    group: &[(usize, &str)],
    escapes: &BTreeSet<u8>,
) -> Result<Option<Command>, ParseError> {
    let mut argv = Vec::with_capacity(group.len());
    for &(off, tok) in group {
        let v = decode_token(tok, escapes).map_err(|(at, what)| {
            cursor.error(
                logical,
                off + at,
                ParseErrorKind::UnsupportedExpansion(what),
            )
        })?;
        argv.push(v);
    }
    let Some((name, args)) = argv.split_first() else {
        return Ok(None);
    };
    let Some(name) = name.as_text() else {
        let off = group.first().map_or(0, |g| g.0);
        return Err(cursor.error(logical, off, ParseErrorKind::ExpandedCommandName));
    };
    Ok(Some(typed(name, args).unwrap_or_else(|| Command::Other {
        name: name.to_owned(),
        args: args.to_vec(),
    })))
}

/// getopt as in `core/getopt.c`, restricted to what the model holds:
/// `(short, long, takes_argument)`. `None` when the options don't fit.
#[allow(clippy::type_complexity)]
fn options<'a>(
    args: &'a [Value],
    spec: &[(char, &str, bool)],
) -> Option<(Vec<(char, Option<&'a Value>)>, &'a [Value])> {
    let mut found = Vec::new();
    let mut i = 0;
    while let Some(a) = args.get(i) {
        let Some(t) = a.as_text() else {
            // Starts with an expansion: iPXE decides at run time; the
            // model reads it as a positional (the renderer adds `--`).
            if matches!(a.parts().first(), Some(crate::value::Part::Text(t)) if t.starts_with('-'))
            {
                return None;
            }
            break;
        };
        if !t.starts_with('-') {
            break;
        }
        if t == "--" {
            i += 1;
            break;
        }
        let opt = if let Some(long) = t.strip_prefix("--") {
            spec.iter().find(|s| s.1 == long)
        } else {
            let mut cs = t.chars().skip(1);
            match (cs.next(), cs.next()) {
                (Some(c), None) => spec.iter().find(|s| s.0 == c),
                _ => None,
            }
        }?;
        if opt.2 {
            let v = args.get(i + 1)?;
            found.push((opt.0, Some(v)));
            i += 2;
        } else {
            found.push((opt.0, None));
            i += 1;
        }
    }
    Some((found, args.get(i..).unwrap_or(&[])))
}

fn join(args: &[Value]) -> Value {
    let mut v = Value::new();
    for (i, a) in args.iter().enumerate() {
        if i > 0 {
            v = v.then_text(" ");
        }
        v = v.then(a.clone());
    }
    v
}

fn setting_name(v: &Value) -> Option<String> {
    let t = v.as_text()?;
    let base = t.rsplit('/').next().unwrap_or(t);
    (is_valid_setting_name(t) && !t.starts_with('-') && !base.starts_with(ESCAPE_PREFIX))
        .then(|| t.to_owned())
}

/// The typed command `name` with `args` is, or `None` when it is not one
/// of `TYPED_COMMANDS` or its arguments do not fit the typed form (the
/// caller keeps it as `Command::Other`).
// NB: longer than our ~60 lines on purpose: one `match` over the command
// names, one short arm each beside `render`'s, reads best whole; the long
// image commands have their own function.
fn typed(name: &str, args: &[Value]) -> Option<Command> {
    Some(match name {
        "echo" => {
            let (o, pos) = options(args, &[('n', "", false)])?;
            Command::Echo {
                no_newline: !o.is_empty(),
                text: join(pos),
            }
        }
        "set" => {
            let (o, pos) = options(args, &[])?;
            let (n, v) = pos.split_first()?;
            o.is_empty().then_some(())?;
            Command::Set {
                name: setting_name(n)?,
                value: join(v),
            }
        }
        "clear" => match options(args, &[])? {
            (o, [n]) if o.is_empty() => Command::Clear {
                name: setting_name(n)?,
            },
            _ => return None,
        },
        "dhcp" | "imgfree" => {
            let (o, pos) = options(args, &[])?;
            if !o.is_empty() || pos.len() > 1 || pos.first().is_some_and(Value::is_empty) {
                return None;
            }
            let v = pos.first().cloned();
            if name == "dhcp" {
                Command::Dhcp { interface: v }
            } else {
                Command::Imgfree { image: v }
            }
        }
        "ifconf" => {
            let (o, pos) = options(args, &[('c', "configurator", true)])?;
            if pos.len() > 1 || pos.first().is_some_and(Value::is_empty) {
                return None;
            }
            Command::Ifconf {
                configurator: o.first().and_then(|x| x.1).cloned(),
                interface: pos.first().cloned(),
            }
        }
        "kernel" | "initrd" | "imgfetch" | "imgargs" | "chain" | "boot" => {
            image_command(name, args)?
        }
        "sleep" => match options(args, &[])? {
            (o, [s]) if o.is_empty() => Command::Sleep {
                seconds: u32::try_from(plain_number(s)?).ok()?,
            },
            _ => return None,
        },
        "shell" if args.is_empty() => Command::Shell,
        "exit" => match options(args, &[])? {
            (o, []) if o.is_empty() => Command::Exit { code: None },
            (o, [c]) if o.is_empty() => Command::Exit {
                code: Some(u32::try_from(plain_number(c)?).ok()?),
            },
            _ => return None,
        },
        "goto" => match options(args, &[])? {
            (o, [l]) if o.is_empty() => {
                let l = l.as_text()?;
                if l.is_empty() || l.chars().any(char::is_control) {
                    return None;
                }
                Command::Goto {
                    label: l.to_owned(),
                }
            }
            _ => return None,
        },
        _ => return None,
    })
}

/// `kernel`, `initrd`, `imgfetch`, `imgargs`, `chain` and `boot`: the image
/// options (`chain` and `boot` also take `--replace`), a URI and arguments.
fn image_command(name: &str, args: &[Value]) -> Option<Command> {
    const IMG: &[(char, &str, bool)] = &[
        ('n', "name", true),
        ('t', "timeout", true),
        ('a', "autofree", false),
    ];
    const EXEC: &[(char, &str, bool)] = &[
        ('n', "name", true),
        ('t', "timeout", true),
        ('a', "autofree", false),
        ('r', "replace", false),
    ];
    let exec = matches!(name, "chain" | "boot");
    let (o, pos) = options(args, if exec { EXEC } else { IMG })?;
    let mut img = Image::default();
    for (c, v) in o {
        match (c, v) {
            ('n', Some(v)) if !v.is_empty() => img.name = Some(v.clone()),
            ('t', Some(v)) => img.timeout_ms = Some(plain_number(v)?),
            ('a', None) => img.autofree = true,
            ('r', None) => img.replace = true,
            _ => return None,
        }
    }
    match pos.split_first() {
        Some((u, rest)) if !u.is_empty() => {
            img.uri = Some(u.clone());
            img.args = join(rest);
        }
        None if name == "boot" => {}
        _ => return None,
    }
    Some(match name {
        "kernel" => Command::Kernel(img),
        "initrd" => Command::Initrd(img),
        "imgfetch" => Command::Imgfetch(img),
        "imgargs" => Command::Imgargs(img),
        "chain" => Command::Chain(img),
        _ => Command::Boot(img),
    })
}

/// A decimal number written the way the renderer writes it (no sign, no
/// leading zeros), so the typed form renders back to the same token.
fn plain_number(v: &Value) -> Option<u64> {
    let t = v.as_text()?;
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) || (t.len() > 1 && t.starts_with('0'))
    {
        return None;
    }
    t.parse().ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn logical_lines_follow_script_c() {
        let l = logical_lines("#!ipxe\r\necho a\\\r\nb\nx").unwrap();
        let t: Vec<_> = l.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(t, ["#!ipxe", "echo ab", "x"]);
        assert_eq!(
            logical_lines("#!ipxe\necho a\\\n").err().unwrap().kind,
            ParseErrorKind::TrailingContinuation
        );
    }
}
