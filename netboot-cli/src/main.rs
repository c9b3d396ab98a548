//! `netboot`: builds NixOS netboot media (`bzImage`, `initrd`, `manifest`,
//! `nix-store`, `netboot.ipxe`) in one process, with no external tools,
//! for the stage-1 commands of the seed NixOS netboot module.
//!
//! Every failure prints exactly one line, `netboot: error: <subject>:
//! <problem>`, and exits with status 1 (2 for command-line usage errors).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod cache;
mod cli;
mod closure;
mod cmd;
mod error;
mod media;
mod memory;
mod nar;
mod nixbase32;
mod outdir;
mod progress;
mod registration;
mod scan;
mod store_path;
mod sync_ahead;
mod system;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = match cli::Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
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
            // clap renders "error: <what>\n\n<tip/usage>"; keep the first line.
            let text = e.render().to_string();
            // The first paragraph, on one line (it may list missing flags).
            let para = text.split("\n\n").next().unwrap_or("invalid arguments");
            let para = para.split_whitespace().collect::<Vec<_>>().join(" ");
            let first = para.strip_prefix("error: ").unwrap_or(&para);
            eprintln!("netboot: error: command line: {first}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let line = match e.downcast_ref::<error::Error>() {
                // `… | head`: the reader has what it wanted.
                Some(e) if e.stdout_closed => return ExitCode::SUCCESS,
                Some(e) => e.to_string(),
                None => error::one_line(&format!("netboot: {e:#}")),
            };
            eprintln!("netboot: error: {line}");
            ExitCode::from(1)
        }
    }
}

fn run(args: cli::Args) -> anyhow::Result<()> {
    let verbosity = if args.quiet {
        progress::Verbosity::Quiet
    } else if args.verbose {
        progress::Verbosity::Verbose
    } else {
        progress::Verbosity::Normal
    };
    match args.command {
        cli::Command::Build(a) => cmd::build::run(a.plan()?, verbosity)?,
        cli::Command::Squashfs(a) => cmd::squashfs::run(a, verbosity)?,
        cli::Command::Cpio(a) => cmd::cpio::run(a, verbosity)?,
        cli::Command::Inspect(a) => cmd::inspect::run(a)?,
        cli::Command::Verify(a) => cmd::verify::run(a, verbosity)?,
        cli::Command::Segment(a) => cmd::segment::run(a, verbosity)?,
        cli::Command::Serve(a) => cmd::serve::run(a, verbosity)?,
        cli::Command::ClosureGraph(a) => cmd::closure_graph::run(a)?,
    }
    Ok(())
}
