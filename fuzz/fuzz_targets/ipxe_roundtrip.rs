//! Arbitrary values -> builder -> render -> parse -> the same script.
#![no_main]

use arbitrary::Arbitrary;
use ipxe_script::{parse, Command, Image, Joiner, Script, Value};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Piece {
    Text(String),
    Setting(u8),
}

#[derive(Arbitrary, Debug)]
enum Cmd {
    Echo(bool, Vec<Piece>),
    Set(Vec<Piece>),
    Kernel {
        uri: Vec<Piece>,
        args: Vec<Piece>,
        name: Option<String>,
        timeout: Option<u64>,
        autofree: bool,
    },
    Chain(String, bool, bool),
    Boot,
    Imgfree(Option<String>),
    Raw(Vec<String>),
    Goto(String),
    Label(String),
    Comment(String),
    Sleep(u32),
    Exit(Option<u32>),
    OrIgnore,
    And(String),
}

fn value(pieces: Vec<Piece>) -> Value {
    const NAMES: &[&str] = &["cmdline", "net0/mac:hexhyp", "base-url", "36:uint8", "x"];
    pieces.into_iter().fold(Value::new(), |v, p| match p {
        Piece::Text(t) => v.then_text(t),
        Piece::Setting(i) => v.then_setting(NAMES[i as usize % NAMES.len()]),
    })
}

fuzz_target!(|cmds: Vec<Cmd>| {
    let mut s = Script::new();
    for c in cmds {
        s = match c {
            Cmd::Echo(no_newline, t) => s.command(Command::Echo {
                no_newline,
                text: value(t),
            }),
            Cmd::Set(v) => s.set("fuzz", value(v)),
            Cmd::Kernel {
                uri,
                args,
                name,
                timeout,
                autofree,
            } => {
                let mut img = Image::new(value(uri)).args(value(args)).autofree(autofree);
                img.name = name.map(Value::text);
                img.timeout_ms = timeout;
                s.kernel_image(img)
            }
            Cmd::Chain(u, a, r) => s.chain(Image::new(u).autofree(a).replace(r)),
            Cmd::Boot => s.boot(),
            Cmd::Imgfree(n) => s.command(Command::Imgfree {
                image: n.map(Value::text),
            }),
            Cmd::Raw(args) => s.raw("imgstat", args.into_iter().map(Value::text).collect()),
            Cmd::Goto(l) => s.goto(l),
            Cmd::Label(l) => s.label(l),
            Cmd::Comment(c) => s.comment(c),
            Cmd::Sleep(n) => s.sleep(n),
            Cmd::Exit(c) => s.exit(c),
            Cmd::OrIgnore => s.or_ignore(),
            Cmd::And(t) => s.join(
                Joiner::And,
                Command::Echo {
                    no_newline: false,
                    text: Value::text(t),
                },
            ),
        };
    }
    if let Ok(text) = s.render() {
        let back = parse(&text).expect("rendered scripts parse");
        assert_eq!(back, s, "{text}");
    }
});
