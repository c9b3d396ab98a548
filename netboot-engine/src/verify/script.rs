//! The script: `netboot.ipxe` parses, names files that exist, fetches the
//! kernel and the three initrds and names each with `initrd=`, and its
//! command line fits.

use std::collections::BTreeSet;
use std::path::Path;

use crate::error::{Error, Result};

/// Checks the script; returns the kernel command line length.
pub fn check_script(dir: &Path, text: &str) -> Result<usize> {
    let p = dir.join("netboot.ipxe");
    ipxe_script::parse(text).map_err(|e| Error::at(&p, e))?;
    let mut cmdline_len = None;
    for (i, line) in text.lines().enumerate() {
        let mut tok = line.split_whitespace();
        let cmd = tok.next().unwrap_or("");
        if !matches!(
            cmd,
            "kernel" | "initrd" | "imgfetch" | "module" | "imgload" | "imgselect"
        ) {
            continue;
        }
        let mut rest: Vec<&str> = tok.collect();
        while rest.first().is_some_and(|t| t.starts_with('-')) {
            rest.remove(0);
        }
        let Some(uri) = rest.first() else {
            return Err(Error::new(
                format!("{}:{}", p.display(), i + 1),
                format!("`{cmd}` without a file"),
            ));
        };
        if uri.contains(':') || uri.contains("${") {
            continue; // absolute URI or expansion: not checkable here
        }
        if !dir.join(uri).is_file() {
            return Err(Error::new(
                format!("{}:{}", p.display(), i + 1),
                format!("names {uri:?}, which is not a file in {}", dir.display()),
            ));
        }
        if matches!(cmd, "kernel" | "imgload" | "imgselect") {
            // EFI passes `<image name> <args>` as LoadOptions.
            let args = rest.get(1..).unwrap_or(&[]).join(" ");
            let name = uri.rsplit('/').next().unwrap_or(uri);
            let len = name.len() + 1 + args.len();
            if len > ipxe_script::netboot::MAX_CMDLINE {
                return Err(Error::new(
                    format!("{}:{}", p.display(), i + 1),
                    format!(
                        "kernel command line is {len} bytes, the limit is {}",
                        ipxe_script::netboot::MAX_CMDLINE
                    ),
                ));
            }
            cmdline_len = Some(len);
        }
    }
    cmdline_len.ok_or_else(|| Error::at(&p, "no `kernel` line"))
}

/// What a script loads: the kernel (file fetched, arguments) and each
/// initrd (file fetched, image name), as ipxe-script parses them.
#[derive(Default)]
struct Loads {
    kernel: Option<(String, String)>,
    initrds: Vec<(String, String)>,
}

/// The last path segment of a literal URI: the file a script fetches.
fn file_of(v: &ipxe_script::Value) -> Option<String> {
    v.as_text()
        .map(|t| t.rsplit('/').next().unwrap_or(t).to_owned())
}

/// A value as the script writes it: text, and `${name}` for each setting
/// iPXE expands per machine (`BOOTIF=${mac}`).
fn written(v: &ipxe_script::Value) -> String {
    v.parts()
        .iter()
        .map(|p| match p {
            ipxe_script::Part::Text(t) => t.clone(),
            ipxe_script::Part::Setting(s) => format!("${{{s}}}"),
        })
        .collect()
}

impl Loads {
    fn of(script: &ipxe_script::Script) -> Loads {
        use ipxe_script::Command;
        let mut loads = Loads::default();
        for line in script.lines() {
            let cmds = line
                .first
                .iter()
                .chain(line.rest.iter().filter_map(|(_, c)| c.as_ref()));
            for cmd in cmds {
                match cmd {
                    Command::Kernel(img) => {
                        let file = img.uri.as_ref().and_then(file_of).unwrap_or_default();
                        let args = written(&img.args);
                        loads.kernel = Some((file, args));
                    }
                    Command::Initrd(img) => {
                        let Some(file) = img.uri.as_ref().and_then(file_of) else {
                            continue;
                        };
                        let name = img
                            .name
                            .as_ref()
                            .and_then(|n| n.as_text().map(str::to_owned))
                            .unwrap_or_else(|| file.clone());
                        loads.initrds.push((file, name));
                    }
                    _ => {}
                }
            }
        }
        loads
    }
}

/// The script's structure, parsed with ipxe-script: it fetches the kernel
/// and the three initrds, and names each fetched initrd with `initrd=` on
/// the kernel line. Returns the kernel line's `init=`.
pub fn check_script_structure(dir: &Path, text: &str) -> Result<Option<String>> {
    let p = dir.join("netboot.ipxe");
    let script = ipxe_script::parse(text).map_err(|e| Error::at(&p, e))?;
    let loads = Loads::of(&script);
    let Some((kfile, args)) = &loads.kernel else {
        return Err(Error::at(&p, "no `kernel` command"));
    };
    if kfile != "bzImage" {
        return Err(Error::at(
            &p,
            format!("the kernel line loads {kfile:?}, not bzImage"),
        ));
    }
    for want in ["initrd", "manifest", "nix-store"] {
        if !loads.initrds.iter().any(|(f, _)| f == want) {
            return Err(Error::at(
                &p,
                format!("fetches no `initrd {want}`: the kernel would boot without it"),
            ));
        }
    }
    check_initrd_names(&p, args, &loads.initrds)?;
    Ok(args
        .split_whitespace()
        .find_map(|a| a.strip_prefix("init="))
        .map(str::to_owned))
}

/// The kernel line's arguments (settings as `${name}`), if it has one.
pub fn kernel_args(text: &str) -> Option<String> {
    let script = ipxe_script::parse(text).ok()?;
    Loads::of(&script).kernel.map(|(_, args)| args)
}

/// Each fetched initrd is named by an `initrd=` of the kernel line, and
/// each `initrd=` names a fetched one (UEFI hands the kernel only those).
fn check_initrd_names(p: &Path, args: &str, initrds: &[(String, String)]) -> Result<()> {
    let named: BTreeSet<&str> = args
        .split_whitespace()
        .filter_map(|a| a.strip_prefix("initrd="))
        .collect();
    for (file, name) in initrds {
        if !named.contains(name.as_str()) {
            return Err(Error::at(
                p,
                format!("the kernel line has no initrd={name} for the fetched initrd {file} (UEFI would not hand it to the kernel)"),
            ));
        }
    }
    if let Some(n) = named
        .iter()
        .find(|n| !initrds.iter().any(|(_, name)| name == *n))
    {
        return Err(Error::at(p, format!("initrd={n} names no fetched initrd")));
    }
    Ok(())
}
