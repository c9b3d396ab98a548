//! `netboot-unpack`: see the library's documentation for the interface.
#![forbid(unsafe_code)]

use std::io::Write;
use std::process::ExitCode;

use netboot_unpack::{config, Command, Error};

fn main() -> ExitCode {
    let cmd = match config::parse(std::env::args_os().skip(1)) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let cfg = match cmd {
        Command::Unpack(c) => c,
        Command::Help => return print(config::HELP),
        Command::Version => {
            return print(&format!("netboot-unpack {}\n", env!("CARGO_PKG_VERSION")))
        }
    };
    // One line at a time to the console; a closed stdout is not a fault.
    let say = |line: &str| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}").and_then(|()| out.flush());
    };
    match netboot_unpack::run(&cfg, &say) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn print(text: &str) -> ExitCode {
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    ExitCode::SUCCESS
}

/// One line on stderr; status 2 for usage errors, 1 for the rest.
fn fail(e: &Error) -> ExitCode {
    let line = e.to_string().replace('\n', " ");
    let _ = writeln!(std::io::stderr().lock(), "netboot-unpack: {line}");
    ExitCode::from(if matches!(e, Error::Usage(_)) { 2 } else { 1 })
}
