//! The script netboot media need: one script that boots on BIOS iPXE and on
//! EFI iPXE old and new (see the table in `notes/ipxe.md`):
//!
//! ```text
//! #!ipxe
//! imgfree
//! kernel bzImage init=/nix/store/…/init initrd=initrd initrd=nix-store <params>
//! initrd initrd
//! initrd nix-store
//! boot
//! ```
//!
//! - `imgfree` first: a chained script or an earlier attempt must not end
//!   up as an extra initrd (BIOS iPXE passes every registered image).
//! - `initrd=NAME` on the kernel line for each initrd: EFI iPXE before
//!   v2.0 hands the kernel only the initrds its EFI stub names; harmless on
//!   BIOS and on newer iPXE.
//! - One `initrd` line per file, each fetched once (a repeated URI is
//!   dropped) under a unique name (compared case-insensitively, as the EFI
//!   stub's file lookup is); a clash gets `--name NAME-2`, ...
//!
//! NB: the kernel command line limit. BIOS iPXE copies at most 2047 bytes
//! (2046 in current iPXE); EFI iPXE prepends `<image name> ` to the
//! arguments. The same script must work on both, so [`NetbootScript::build`]
//! fails with [`Error::CmdlineTooLong`] when `name + 1 + args` exceeds
//! [`MAX_CMDLINE`] (2046) rather than let iPXE or the kernel cut it silently.

use crate::command::{Command, Image};
use crate::error::Error;
use crate::script::Script;
use crate::value::Value;

/// The longest kernel command line the script may carry, counting the
/// `<image name> ` prefix EFI iPXE adds.
pub const MAX_CMDLINE: usize = 2046;

/// Builder for the netboot script; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetbootScript {
    kernel: String,
    init: Option<String>,
    initrds: Vec<String>,
    params: Vec<String>,
}

impl NetbootScript {
    /// A script booting the kernel at `kernel` (URI, usually relative to
    /// the script, e.g. `bzImage`).
    pub fn new(kernel: &str) -> Self {
        NetbootScript {
            kernel: kernel.to_owned(),
            init: None,
            initrds: Vec::new(),
            params: Vec::new(),
        }
    }

    /// Adds `init=PATH` (first on the command line).
    pub fn init(mut self, path: &str) -> Self {
        self.init = Some(path.to_owned());
        self
    }

    /// Adds an initrd (URI, usually relative, e.g. `initrd`), in order.
    pub fn initrd(mut self, uri: &str) -> Self {
        self.initrds.push(uri.to_owned());
        self
    }

    /// Adds one kernel parameter, verbatim (it may contain spaces, e.g.
    /// `foo="a b"`).
    pub fn kernel_param(mut self, param: &str) -> Self {
        self.params.push(param.to_owned());
        self
    }

    /// Adds the whitespace-separated parameters of `cmdline`.
    pub fn kernel_params(mut self, cmdline: &str) -> Self {
        self.params.extend(
            cmdline
                .split(|c: char| c.is_ascii_whitespace())
                .filter(|p| !p.is_empty())
                .map(str::to_owned),
        );
        self
    }

    /// Validates and builds the script.
    pub fn build(self) -> Result<Script, Error> {
        let kernel_name = image_name("kernel URI", &self.kernel)?;
        if self.initrds.is_empty() {
            return Err(Error::NoInitrd);
        }
        let mut args: Vec<String> = Vec::new();
        if let Some(init) = &self.init {
            if init.is_empty() || init.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(invalid(
                    "init path",
                    init,
                    "must be one word without whitespace",
                ));
            }
            args.push(format!("init={init}"));
        }
        // (uri, registered name, needs --name)
        let mut fetches: Vec<(String, String, bool)> = Vec::new();
        let mut taken: Vec<String> = vec![kernel_name.to_lowercase()];
        for uri in &self.initrds {
            if fetches.iter().any(|f| &f.0 == uri) {
                continue; // fetched once; the EFI stub and BIOS both get it once
            }
            let base = image_name("initrd URI", uri)?;
            let mut name = base.clone();
            let mut n = 1;
            while taken.contains(&name.to_lowercase()) {
                n += 1;
                name = format!("{base}-{n}");
            }
            taken.push(name.to_lowercase());
            let renamed = name != base;
            args.push(format!("initrd={name}"));
            fetches.push((uri.clone(), name, renamed));
        }
        for p in &self.params {
            if p.is_empty() || p.chars().any(|c| c.is_control()) {
                return Err(invalid(
                    "kernel parameter",
                    p,
                    "must be non-empty, without control characters",
                ));
            }
            args.push(p.clone());
        }
        let cmdline = args.join(" ");
        let len = kernel_name.len() + 1 + cmdline.len();
        if len > MAX_CMDLINE {
            return Err(Error::CmdlineTooLong {
                len,
                max: MAX_CMDLINE,
            });
        }
        let mut s = Script::new().imgfree().command(Command::Kernel(
            Image::new(self.kernel.as_str()).args(cmdline),
        ));
        for (uri, name, renamed) in fetches {
            let mut img = Image::new(uri);
            if renamed {
                img = img.name(Value::text(name));
            }
            s = s.initrd_image(img);
        }
        let s = s.boot();
        // Surface any rendering error (e.g. `${...}` in a parameter) here.
        s.render()?;
        Ok(s)
    }
}

fn invalid(what: &'static str, value: &str, why: &'static str) -> Error {
    Error::InvalidNetbootValue {
        what,
        value: value.to_owned(),
        why,
    }
}

/// The name iPXE registers an image under: the last path segment of the
/// URI (query and fragment excluded).
fn image_name(what: &'static str, uri: &str) -> Result<String, Error> {
    if uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            what,
            uri,
            "must not contain whitespace or control characters",
        ));
    }
    let path = uri.split(['?', '#']).next().unwrap_or("");
    let base = path.rsplit('/').next().unwrap_or("");
    if base.is_empty() || base.starts_with('-') || base.contains('%') {
        return Err(invalid(
            what,
            uri,
            "needs a plain file name as its last path segment (no '%', not starting with '-')",
        ));
    }
    Ok(base.to_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn dedupes_and_renames() {
        let s = NetbootScript::new("bzImage")
            .initrd("initrd")
            .initrd("initrd")
            .initrd("x/INITRD")
            .build()
            .unwrap()
            .render()
            .unwrap();
        assert_eq!(
            s,
            "#!ipxe\nimgfree\nkernel bzImage initrd=initrd initrd=INITRD-2\ninitrd initrd\ninitrd --name INITRD-2 x/INITRD\nboot\n"
        );
    }

    #[test]
    fn cmdline_limit_counts_efi_prefix() {
        // "bzImage " (8) + "initrd=i" (8) + " " + p = 2046 exactly.
        let p = "x".repeat(2046 - 8 - 8 - 1);
        assert!(NetbootScript::new("bzImage")
            .initrd("i")
            .kernel_param(&p)
            .build()
            .is_ok());
        let p = "x".repeat(2046 - 8 - 8);
        assert_eq!(
            NetbootScript::new("bzImage")
                .initrd("i")
                .kernel_param(&p)
                .build()
                .unwrap_err(),
            Error::CmdlineTooLong {
                len: 2047,
                max: 2046
            }
        );
    }
}
