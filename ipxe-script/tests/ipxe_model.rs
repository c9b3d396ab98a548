//! Property tests against a model of iPXE's own interpreter: a port of
//! `image/script.c` `process_script` (lines, continuations, labels),
//! `core/exec.c` `split_command`/`command_terminator` and
//! `core/settings.c` `expand_settings` (innermost `${...}` first, rescan
//! until none is left, unknown settings and the empty name empty). The renderer's output, run
//! through this model, must give exactly the values we asked for; the
//! parser must read it back to the same model.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use ipxe_script::netboot::{NetbootScript, DEFAULT_ALLOWED_SETTINGS};
use ipxe_script::{parse, Command, Error, Image, Joiner, KernelParamProblem, Line, Script, Value};
use proptest::prelude::*;

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | 0x0c | b'\n' | b'\r' | b'\t' | 0x0b)
}

/// `expand_settings`, byte for byte.
fn expand(token: &str, settings: &HashMap<String, Vec<u8>>) -> Vec<u8> {
    let mut s = token.as_bytes().to_vec();
    loop {
        let mut start = None;
        let mut end = None;
        for i in 0..s.len() {
            if s[i] == b'$' && s.get(i + 1) == Some(&b'{') {
                start = Some(i);
            }
            if start.is_some() && s[i] == b'}' {
                end = Some(i);
                break;
            }
        }
        let (Some(st), Some(en)) = (start, end) else {
            return s;
        };
        let name = String::from_utf8_lossy(&s[st + 2..en]).into_owned();
        let (base, ty) = name.split_once(':').unwrap_or((&name, "string"));
        // settings.c `setting_cmp` never matches an empty name (and "" is
        // no tag): `${}` is always empty, whatever `set ${} x` stored.
        let value = match (settings.get(base).filter(|_| !base.is_empty()), ty) {
            (Some(v), "string") => v.clone(),
            (Some(v), "hex") => v
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":")
                .into_bytes(),
            _ => Vec::new(),
        };
        let mut next = s[..st].to_vec();
        next.extend(value);
        next.extend_from_slice(&s[en + 1..]);
        s = next;
    }
}

/// Runs a script through the model; returns the expanded argv of every
/// command (regardless of `||`/`&&` outcome) and the labels seen.
fn run(script: &str) -> (Vec<Vec<Vec<u8>>>, Vec<String>) {
    run_with(script, HashMap::new())
}

/// [`run`] on a machine whose iPXE already holds `settings` (from DHCP,
/// SMBIOS, the NIC).
fn run_with(
    script: &str,
    mut settings: HashMap<String, Vec<u8>>,
) -> (Vec<Vec<Vec<u8>>>, Vec<String>) {
    let data = script.as_bytes();
    let mut out = Vec::new();
    let mut labels = Vec::new();
    let mut offset = 0;
    let mut line: Vec<u8> = Vec::new();
    let mut first = true;
    loop {
        let rest = &data[offset.min(data.len())..];
        let frag_len = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        line.extend_from_slice(&rest[..frag_len]);
        offset += frag_len + 1;
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.last() == Some(&b'\\') {
            line.pop();
            if offset >= data.len() {
                panic!("script ends in a continuation");
            }
            continue;
        }
        let l = std::mem::take(&mut line);
        if first {
            first = false;
        } else {
            let mut c = 0;
            while c < l.len() && is_space(l[c]) {
                c += 1;
            }
            if l.get(c) == Some(&b':') {
                let s = c + 1;
                c = s;
                while c < l.len() && !is_space(l[c]) {
                    c += 1;
                }
                labels.push(String::from_utf8(l[s..c].to_vec()).unwrap());
                c = (c + 1).min(l.len());
            }
            let tokens: Vec<&[u8]> = l[c..]
                .split(|&b| is_space(b))
                .filter(|t| !t.is_empty())
                .collect();
            let mut cmd: Vec<&[u8]> = Vec::new();
            let mut cmds = Vec::new();
            for t in tokens {
                if t[0] == b'#' {
                    break;
                }
                if t == b"||" || t == b"&&" || t == b";" {
                    cmds.push(std::mem::take(&mut cmd));
                } else {
                    cmd.push(t);
                }
            }
            cmds.push(cmd);
            for cmd in cmds {
                if cmd.is_empty() {
                    continue;
                }
                let argv: Vec<Vec<u8>> = cmd
                    .iter()
                    .map(|t| expand(std::str::from_utf8(t).unwrap(), &settings))
                    .collect();
                if argv[0] == b"set" && argv.len() >= 2 {
                    let name = String::from_utf8_lossy(&argv[1]).into_owned();
                    let value = argv[2..].join(&b' ');
                    if let Some(base) = name.strip_suffix(":hex") {
                        let bytes: Result<Vec<u8>, _> = String::from_utf8_lossy(&value)
                            .split(':')
                            .map(|h| u8::from_str_radix(h, 16))
                            .collect();
                        if let Ok(bytes) = bytes {
                            settings.insert(base.to_owned(), bytes);
                        }
                    } else {
                        settings.insert(name, value);
                    }
                }
                out.push(argv);
            }
        }
        if offset >= data.len() {
            return (out, labels);
        }
    }
}

/// argv after the options of a command taking `-n`-style flags: drops
/// leading options and the `--` that ends them (getopt.c).
fn positionals(argv: &[Vec<u8>], takes_value: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut i = 1;
    while i < argv.len() && argv[i].first() == Some(&b'-') {
        if argv[i] == b"--" {
            i += 1;
            break;
        }
        i += if takes_value.contains(&argv[i].as_slice()) {
            2
        } else {
            1
        };
    }
    argv[i..].to_vec()
}

fn last_command(text: &str) -> Vec<Vec<u8>> {
    run(text).0.pop().expect("a command")
}

/// Strings built from the characters iPXE treats specially.
fn tricky() -> impl Strategy<Value = String> {
    let atoms = prop::sample::select(vec![
        " ", "  ", "\t", "\x0b", "\x0c", "#", "$", "{", "}", "${", "||", "&&", ";", "\\", "-",
        "--", ":", "a", "b", "ü", "✓", "%", "?", "=", "x", "\n", "\r", "\0",
    ]);
    prop::collection::vec(atoms, 0..10).prop_map(|v| v.concat())
}

fn has_forbidden(s: &str) -> bool {
    s.contains(['\n', '\r', '\0'])
}

fn check_error(e: &Error, v: &str) {
    match e {
        Error::ForbiddenChar { .. } => assert!(has_forbidden(v), "{e}"),
        Error::DollarBrace { .. } => assert!(v.contains("${") && v.contains('}'), "{e}"),
        other => panic!("unexpected error for {v:?}: {other}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// echo: rest-of-line text, the bytes iPXE prints are ours.
    #[test]
    fn echo_text_is_exact(v in tricky(), no_newline: bool) {
        let s = Script::new().command(Command::Echo { no_newline, text: Value::text(&v) });
        match s.render() {
            Ok(text) => {
                prop_assert_eq!(&parse(&text).unwrap(), &s, "{}", text);
                let argv = last_command(&text);
                prop_assert_eq!(&argv[0], b"echo");
                let got = positionals(&argv, &[]).join(&b' ');
                prop_assert_eq!(got, v.as_bytes().to_vec(), "{}", text);
                if no_newline { prop_assert_eq!(&argv[1], b"-n"); }
            }
            Err(e) => check_error(&e, &v),
        }
    }

    /// set: the stored value is ours, also when the line ends in `\`.
    #[test]
    fn set_value_is_exact(v in tricky()) {
        let s = Script::new().set("v", v.as_str());
        match s.render() {
            Ok(text) => {
                prop_assert_eq!(&parse(&text).unwrap(), &s);
                let argv = last_command(&text);
                prop_assert_eq!(&argv[1], b"v");
                prop_assert_eq!(argv[2..].join(&b' '), v.as_bytes().to_vec(), "{}", text);
            }
            Err(e) => check_error(&e, &v),
        }
    }

    /// kernel: URI is one exact token, args the exact command line.
    #[test]
    fn kernel_line_is_exact(uri in tricky(), args in tricky(), name in tricky()) {
        let img = Image::new(uri.as_str()).args(args.as_str()).name(name.as_str()).timeout_ms(5000);
        let s = Script::new().kernel_image(img);
        match s.render() {
            Ok(text) => {
                prop_assert_eq!(&parse(&text).unwrap(), &s);
                let argv = last_command(&text);
                prop_assert_eq!(&argv[0], b"kernel");
                prop_assert_eq!(&argv[1], b"--name");
                prop_assert_eq!(&argv[2], name.as_bytes());
                let pos = positionals(&argv, &[b"--name", b"--timeout"]);
                prop_assert_eq!(&pos[0], uri.as_bytes());
                prop_assert_eq!(pos[1..].join(&b' '), args.as_bytes().to_vec());
            }
            Err(Error::Whitespace { .. }) => prop_assert!(
                uri.contains(|c: char| c.is_ascii_whitespace() || c == '\x0b')
                    || name.contains(|c: char| c.is_ascii_whitespace() || c == '\x0b')),
            Err(Error::Empty { .. }) => prop_assert!(uri.is_empty() || name.is_empty()),
            Err(Error::LeadingDash { .. }) => prop_assert!(name.starts_with('-')),
            Err(e) => check_error(&e, &format!("{uri}{args}{name}")),
        }
    }

    /// Raw commands: every argument is exactly one argv entry.
    #[test]
    fn other_argv_is_exact(args in prop::collection::vec(tricky(), 0..4)) {
        let s = Script::new().raw("imgstat", args.iter().map(Value::text).collect());
        match s.render() {
            Ok(text) => {
                prop_assert_eq!(&parse(&text).unwrap(), &s);
                let argv = last_command(&text);
                let want: Vec<Vec<u8>> = std::iter::once(b"imgstat".to_vec())
                    .chain(args.iter().map(|a| a.as_bytes().to_vec())).collect();
                prop_assert_eq!(argv, want, "{}", text);
            }
            Err(e) => check_error(&e, &args.concat()),
        }
    }

    /// goto reaches the literal label.
    #[test]
    fn goto_label_matches(label in tricky()) {
        let s = Script::new().goto(label.as_str()).label(label.as_str());
        match s.render() {
            Ok(text) => {
                prop_assert_eq!(&parse(&text).unwrap(), &s);
                let (cmds, labels) = run(&text);
                let target = positionals(cmds.last().unwrap(), &[]);
                prop_assert_eq!(&target, &vec![label.as_bytes().to_vec()]);
                prop_assert_eq!(labels, vec![label.clone()]);
            }
            Err(Error::InvalidLabel { .. }) => prop_assert!(
                label.is_empty() || label.contains(|c: char| c.is_control() || c == ' ')),
            Err(e) => check_error(&e, &label),
        }
    }

    /// Comments: never run anything, read back verbatim.
    #[test]
    fn comments_are_inert(c in tricky(), v in tricky()) {
        let s = Script::new().line(Line { comment: Some(c.clone()), ..Line::command(Command::Echo { no_newline: false, text: Value::text(v.as_str()) }) });
        match s.render() {
            Ok(text) => {
                prop_assert_eq!(&parse(&text).unwrap(), &s);
                prop_assert_eq!(run(&text).0.len(), 1 + text.matches("set nbrs-").count());
            }
            Err(Error::TrailingBackslash { .. }) => prop_assert!(c.ends_with('\\')),
            Err(e) => check_error(&e, &format!("{c}{v}")),
        }
    }

    /// Chains of commands with separators round trip.
    #[test]
    fn chains_round_trip(vs in prop::collection::vec((tricky(), 0..3u8), 1..4), trailing: bool) {
        let mut line = Line::command(Command::Echo { no_newline: false, text: Value::text(vs[0].0.as_str()) });
        for (v, j) in &vs[1..] {
            let j = [Joiner::And, Joiner::Or, Joiner::Then][*j as usize];
            line.rest.push((j, Some(Command::Set { name: "x".into(), value: Value::text(v.as_str()) })));
        }
        if trailing { line.rest.push((Joiner::Or, None)); }
        let s = Script::new().line(line);
        if let Ok(text) = s.render() {
            prop_assert_eq!(&parse(&text).unwrap(), &s);
            let cmds = run(&text).0;
            let n = cmds.iter().filter(|a| a[0] == b"echo" || (a[0] == b"set" && a[1] == b"x")).count();
            prop_assert_eq!(n, vs.len());
        }
    }

    /// The parser never panics, with or without the magic.
    #[test]
    fn parse_never_panics(body in tricky(), raw in any::<String>()) {
        let _ = parse(&format!("#!ipxe\n{body}"));
        let _ = parse(&format!("#!ipxe\n{raw}"));
        let _ = parse(&raw);
        if let Ok(s) = parse(&format!("#!ipxe\n{raw}")) {
            let _ = s.render();
        }
    }
}

/// Hand-written-looking script bodies (no options, which the renderer may
/// spell or order differently).
fn script_body() -> impl Strategy<Value = String> {
    let words = prop::sample::select(vec![
        "echo",
        "set",
        "kernel",
        "initrd",
        "chain",
        "boot",
        "imgfree",
        "goto",
        "sleep",
        "exit",
        "clear",
        "dhcp",
        "imgstat",
        "x",
        "y",
        "a#b",
        "#c",
        "||",
        "&&",
        ";",
        "${}",
        "${x}",
        "${y:hex}",
        "$${",
        "}",
        "{",
        "$",
        "\\",
        ":l",
        "1",
        "\n",
        "\r\n",
        "\\\n",
        " ",
        "  ",
        "\t",
        "${nbrs-20:string}",
        "set nbrs-20:hex 20\n",
        "ü",
    ]);
    prop::collection::vec(words, 0..24).prop_map(|v| v.join(" "))
}

/// (command name, joined arguments) per command, and the labels.
type Executed = (Vec<(Vec<u8>, Vec<u8>)>, Vec<String>);

/// What iPXE would run, per command: the name and its arguments as the
/// command sees them after `concat_args` (re-joined with single spaces),
/// minus what the renderer may add or drop without changing meaning: our
/// escape `set`s, `--`, a lone empty argument after an image URI
/// (`kernel x ${}` sets an empty command line, `kernel x` none), and an
/// empty value after `set NAME` (the value is `concat_args` of the rest).
fn normalized(text: &str) -> Executed {
    let (cmds, labels) = run(text);
    let cmds = cmds
        .into_iter()
        .filter(|a| !(a[0] == b"set" && a.get(1).is_some_and(|n| n.starts_with(b"nbrs-"))))
        .map(|a| {
            let mut rest: Vec<Vec<u8>> = a[1..].iter().filter(|t| *t != b"--").cloned().collect();
            let image = [
                &b"kernel"[..],
                b"initrd",
                b"imgfetch",
                b"imgargs",
                b"chain",
                b"boot",
            ];
            if image.contains(&a[0].as_slice()) && rest.len() == 2 && rest[1].is_empty() {
                rest.pop();
            }
            // `set NAME ARGS...` stores concat_args(ARGS): `set x ${}` and
            // `set x` both store the empty string.
            if a[0] == b"set" && rest.len() > 1 {
                let value = rest[1..].join(&b' ');
                rest.truncate(1);
                rest.push(value);
                if rest[1].is_empty() {
                    rest.pop();
                }
            }
            (a[0].clone(), rest.join(&b' '))
        })
        .collect();
    (cmds, labels)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// What iPXE would execute is unchanged by parse-then-render: the
    /// parser reads scripts the way iPXE's tokeniser does.
    #[test]
    fn parse_then_render_preserves_execution(body in script_body()) {
        let text = format!("#!ipxe\n{body}");
        if let Ok(script) = parse(&text) {
            if let Ok(rendered) = script.render() {
                prop_assert_eq!(normalized(&text), normalized(&rendered), "{}\n---\n{}", text, rendered);
            }
        }
    }
}

/// Kernel parameters for the netboot builder: the tricky characters plus
/// setting expansions, allowed (`mac`, `net0/ip`, `hostname`) and not
/// (`password`, `cmdline`), and `init=`/`initrd=`.
fn kernel_param() -> impl Strategy<Value = String> {
    let common = prop::sample::select(vec![
        "${mac}",
        "${net0/ip}",
        "${hostname}",
        "BOOTIF=",
        "\"",
        " ",
        "  ",
        "#",
        "$",
        "{",
        "}",
        "${",
        "||",
        ";",
        "\\",
        "-",
        "=",
        "a",
        "ü",
    ]);
    let refused = prop::sample::select(vec![
        "${password}",
        "${cmdline}",
        "${net0/mac:bogus}",
        "init=",
        "initrd=",
        "${",
        "\n",
        "\t",
        "",
    ]);
    let atom = prop_oneof![30 => common, 1 => refused];
    prop::collection::vec(atom, 1..6).prop_map(|v| v.concat())
}

/// The settings the model's iPXE holds while it runs a netboot script.
fn machine_settings() -> HashMap<String, Vec<u8>> {
    [
        ("mac", "52:54:00:12:34:56"),
        ("net0/ip", "10.0.2.15"),
        ("hostname", "node-7"),
        ("password", "hunter2"),
        ("cmdline", "init=/bin/sh"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.as_bytes().to_vec()))
    .collect()
}

/// What the kernel should see for `param`: each allowed `${...}` replaced
/// by the machine's value.
fn expected_param(param: &str) -> String {
    let mut out = param.to_owned();
    for (k, v) in machine_settings() {
        out = out.replace(&format!("${{{k}}}"), std::str::from_utf8(&v).unwrap());
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// The netboot builder with settings allowed: what it builds renders,
    /// reads back to the same script, and makes iPXE hand the kernel the
    /// parameters with exactly the allowed settings filled in. What it
    /// refuses is a typed error naming the offending parameter.
    #[test]
    fn netboot_settings_round_trip(params in prop::collection::vec(kernel_param(), 1..4)) {
        let mut b = NetbootScript::new("d1g3st/bzImage")
            .init("/init")
            .initrd("d1g3st/initrd")
            .allow_settings(DEFAULT_ALLOWED_SETTINGS)
            .allow_settings(["net0/ip"]);
        for p in &params {
            b = b.kernel_param(p);
        }
        match b.build() {
            Ok(script) => {
                let text = script.render().unwrap();
                prop_assert_eq!(&parse(&text).unwrap(), &script, "{}", text);
                let (cmds, _) = run_with(&text, machine_settings());
                let kernel = cmds.iter().find(|a| a[0] == b"kernel").unwrap();
                let got = positionals(kernel, &[]);
                prop_assert_eq!(&got[0], b"d1g3st/bzImage");
                let mut want = String::from("init=/init initrd=initrd");
                for p in &params {
                    want.push(' ');
                    want.push_str(&expected_param(p));
                }
                let cmdline = String::from_utf8_lossy(&got[1..].join(&b' ')).into_owned();
                prop_assert_eq!(cmdline, want, "{}", text);
            }
            Err(Error::KernelParam { param, problem }) => {
                prop_assert!(params.contains(&param), "{} not among {:?}", param, params);
                match problem {
                    KernelParamProblem::Empty => prop_assert!(param.is_empty()),
                    KernelParamProblem::ControlChar(c) => prop_assert!(param.contains(c)),
                    KernelParamProblem::Init => prop_assert!(param.trim_start_matches('"').starts_with("init=")),
                    KernelParamProblem::Initrd => prop_assert!(param.trim_start_matches('"').starts_with("initrd=")),
                    // Atoms concatenate ("${" + "a}"), so any name may come up:
                    // what is refused must be outside the allowed set.
                    KernelParamProblem::SettingNotAllowed { setting, .. } => {
                        let allowed = DEFAULT_ALLOWED_SETTINGS.contains(&setting.as_str()) || setting == "net0/ip";
                        prop_assert!(!allowed && param.contains(&format!("${{{setting}")), "{}", setting)
                    }
                    KernelParamProblem::BadExpansion { expansion, .. } => {
                        prop_assert!(expansion.starts_with("${") && param.contains(&expansion), "{}", expansion)
                    }
                    other => prop_assert!(false, "unexpected {other:?}"),
                }
            }
            Err(e) => prop_assert!(false, "unexpected error {e}"),
        }
    }
}

#[test]
fn model_matches_real_ipxe_observations() {
    // Behaviour seen on Debian's iPXE (see tests/tests/ipxe_qemu.rs).
    let (cmds, _) = run("#!ipxe\nset nbrs-7b:hex 7b\necho <$${nbrs-7b:string}x}>\necho a\\\nb\n");
    assert_eq!(cmds[1], vec![b"echo".to_vec(), b"<>".to_vec()]);
    assert_eq!(cmds[2], vec![b"echo".to_vec(), b"ab".to_vec()]);
}

#[test]
fn hand_written_scripts_parse() {
    let nixos = "#!ipxe\r\n# Use the cmdline variable to allow the user to specify custom kernel params\r\n# when chainloading this script from other iPXE scripts like netboot.xyz\r\nkernel bzImage init=/nix/store/abc-nixos-system/init initrd=initrd nohibernate loglevel=4 ${cmdline}\r\ninitrd initrd\r\nboot\r\n";
    let s = parse(nixos).unwrap();
    assert_eq!(s.lines().len(), 5);
    let Some(Command::Kernel(k)) = &s.lines()[2].first else {
        panic!("{:?}", s.lines()[2])
    };
    assert_eq!(k.uri, Some(Value::text("bzImage")));
    assert_eq!(
        k.args,
        Value::text("init=/nix/store/abc-nixos-system/init initrd=initrd nohibernate loglevel=4 ")
            .then_setting("cmdline")
    );
    let menu = "#!ipxe\n:retry\ndhcp || goto retry\n  :boot   chain --autofree http://x/${net0/mac:hexhyp}.ipxe \\\n  arg || goto retry # again\nisset ${x} && echo yes ;\n";
    let s = parse(menu).unwrap();
    assert_eq!(s.lines()[0].label.as_deref(), Some("retry"));
    let l = &s.lines()[2];
    assert_eq!(l.label.as_deref(), Some("boot"));
    assert_eq!(l.comment.as_deref(), Some("again"));
    let Some(Command::Chain(c)) = &l.first else {
        panic!()
    };
    assert!(c.autofree);
    assert_eq!(c.args, Value::text("arg"));
    assert_eq!(
        c.uri,
        Some(
            Value::text("http://x/")
                .then_setting("net0/mac:hexhyp")
                .then_text(".ipxe")
        )
    );
    assert!(matches!(&s.lines()[3].first, Some(Command::Other { name, .. }) if name == "isset"));
    // What the renderer writes for it reads back the same.
    let again = s.render().unwrap();
    assert_eq!(parse(&again).unwrap(), s);
}

#[test]
fn parse_errors_have_positions() {
    let e = parse("#!ipxe\necho ok\necho ${a${b}}\n").unwrap_err();
    assert_eq!((e.line, e.column), (3, 6));
    let e = parse("#!ipxe\necho a\\\n").unwrap_err();
    assert_eq!(e.line, 2);
    assert!(parse("echo hi\n").is_err());
    assert!(parse("#!ipxe").is_err());
    let e = parse("#!ipxe\necho \0\n").unwrap_err();
    assert_eq!((e.line, e.column), (2, 6));
}
