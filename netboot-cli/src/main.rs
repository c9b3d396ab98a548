//! `netboot`: builds NixOS netboot media (`bzImage`, `initrd`, `manifest`,
//! `nix-store`, `netboot.ipxe`) in one process, with no external tools,
//! for the stage-1 commands of the seed NixOS netboot module.
//!
//! The work is done by the `netboot-engine` library; this binary holds
//! what is its own: flags turned into plans ([`cli`]), one module per
//! command ([`cmd`]), progress on the terminal ([`progress`]) and the atomic
//! output directory ([`outdir`]).
//!
//! Every failure prints exactly one line, `netboot: error: <subject>:
//! <problem>`, and exits with status 1 (2 for command-line usage errors).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod cli;
mod cmd;
mod outdir;
mod progress;

use std::process::ExitCode;

use clap::Parser;
use netboot_engine::Error;

fn main() -> ExitCode {
    let args = match cli::Args::try_parse() {
        Ok(a) => a,
        Err(e) => return usage_error(&e),
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        // `… | head`: the reader has what it wanted.
        Err(e) if e.stdout_closed => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netboot: error: {e}");
            ExitCode::from(1)
        }
    }
}

/// Help and version go to stdout with success; anything else clap refuses
/// is a usage error: one line, exit status 2.
fn usage_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        };
    }
    // clap renders "error: <what>\n\n<tip/usage>"; keep the first
    // paragraph, on one line (it may list missing flags).
    let text = e.render().to_string();
    let para = text.split("\n\n").next().unwrap_or("invalid arguments");
    let para = para.split_whitespace().collect::<Vec<_>>().join(" ");
    let first = para.strip_prefix("error: ").unwrap_or(&para);
    eprintln!("netboot: error: command line: {first}");
    ExitCode::from(2)
}

fn run(args: cli::Args) -> Result<(), Error> {
    use cli::Command;
    match args.command {
        Command::Build(a) => {
            let v = a.output.verbosity();
            cmd::build::run(a.plan()?, v)
        }
        Command::Squashfs(a) => cmd::squashfs::run(a),
        Command::Cpio(a) => cmd::cpio::run(a),
        Command::Inspect(a) => cmd::inspect::run(a),
        Command::Verify(a) => cmd::verify::run(a),
        Command::Segment(a) => cmd::segment::run(a),
        Command::Serve(a) => cmd::serve::run(*a),
        Command::ClosureGraph(a) => cmd::closure_graph::run(a),
    }
}
