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
//! Kernel parameters are literal text: a `${` in one is refused, since
//! iPXE would expand it. Fleets that identify machines on the kernel line
//! (`BOOTIF=${mac}`, `ip=${ip}`) opt in with
//! [`NetbootScript::allow_settings`], naming the settings iPXE may expand
//! ([`DEFAULT_ALLOWED_SETTINGS`] is a vetted set). Every other `${`, and
//! `init=`/`initrd=` (the script sets both itself), is a
//! [`Error::KernelParam`] naming the parameter.
//!
//! NB: the kernel command line limit. BIOS iPXE copies at most 2047 bytes
//! (2046 in current iPXE); EFI iPXE prepends `<image name> ` to the
//! arguments. The same script must work on both, so [`NetbootScript::build`]
//! fails with [`Error::CmdlineTooLong`] when `name + 1 + args` exceeds
//! [`MAX_CMDLINE`] (2046) rather than let iPXE or the kernel cut it silently.

use crate::command::{Command, Image};
use crate::error::{Error, KernelParamProblem};
use crate::script::Script;
use crate::setting::SettingName;
use crate::value::Value;

/// The longest kernel command line the script may carry, counting the
/// `<image name> ` prefix EFI iPXE adds.
pub const MAX_CMDLINE: usize = 2046;

/// How many bytes of [`MAX_CMDLINE`] each `${...}` in a kernel parameter
/// counts for (or its written length, if longer): iPXE expands it at boot
/// time, to a length the builder cannot know. 64 covers a MAC address (17),
/// an IPv4 (15) or IPv6 (39) address, a UUID (36) and a DNS label (63);
/// a longer value (a full host name, a long SMBIOS string) may still make
/// iPXE cut the end of the command line, where the caller's own
/// parameters are.
pub const SETTING_BUDGET: usize = 64;

/// The settings a fleet typically puts on the kernel line, a set to pass
/// to [`NetbootScript::allow_settings`]. Each identifies or addresses the
/// machine and holds no secret (from iPXE's `__setting` definitions,
/// 0ab2277):
///
/// | settings | source |
/// |---|---|
/// | `mac` `hwaddr` `busid` `bustype` `busloc` `chip` `ifname` `linktype` | the network device (`net/netdev_settings.c`) |
/// | `ip` `netmask` `gateway` `dns` `domain` `hostname` `next-server` `dhcp-server` | DHCP or static IPv4 configuration |
/// | `ip6` `len6` `gateway6` `dns6` | IPv6 configuration |
/// | `uuid` `manufacturer` `product` `serial` `asset` `board-serial` | SMBIOS (firmware) |
/// | `sysmac` | ACPI (system MAC address) |
/// | `memsize` | memory map, MB (only in iPXE builds with `MEMMAP_SETTINGS`) |
/// | `cpuvendor` `cpumodel` | CPUID (x86 builds with `CPUID_SETTINGS`, not BIOS) |
/// | `buildarch` `platform` `version` | iPXE itself |
///
/// An entry allows its name in any settings block (`mac` allows `${mac}`,
/// `${net0/mac}`, `${net1/mac:hexhyp}`). Left out on purpose:
/// credentials and keys (`username`, `password`, `reverse-username`,
/// `reverse-password`, `key`, `privkey`, `cert`, `trust`, `crosscert`),
/// which would land in `/proc/cmdline`, readable by every local user;
/// URIs that may carry tokens (`filename`, `root-path`, `san-filename`,
/// `cwuri`, `cwduri`); and settings that vary per boot or configure iPXE
/// (`unixtime`, `errno`, `scriptlet`, `priority`, ...). Allow those by name
/// if you mean it.
///
/// NB: iPXE substitutes a setting's value verbatim, so a value with spaces
/// becomes several kernel parameters. The values come from the DHCP server
/// (which already decides what boots), the NIC and the firmware.
pub const DEFAULT_ALLOWED_SETTINGS: &[&str] = &[
    "mac",
    "hwaddr",
    "busid",
    "bustype",
    "busloc",
    "chip",
    "ifname",
    "linktype",
    "ip",
    "netmask",
    "gateway",
    "dns",
    "domain",
    "hostname",
    "next-server",
    "dhcp-server",
    "ip6",
    "len6",
    "gateway6",
    "dns6",
    "uuid",
    "manufacturer",
    "product",
    "serial",
    "asset",
    "board-serial",
    "sysmac",
    "memsize",
    "cpuvendor",
    "cpumodel",
    "buildarch",
    "platform",
    "version",
];

/// Builder for the netboot script; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetbootScript {
    kernel: String,
    init: Option<String>,
    /// (URI, explicit `--name`)
    initrds: Vec<(String, Option<String>)>,
    params: Vec<String>,
    allowed: Vec<String>,
}

/// One `initrd` line: the URI, the name iPXE registers it under, and
/// whether that name needs `--name` (it is not the URI's last segment).
struct Fetch {
    uri: String,
    name: String,
    renamed: bool,
}

impl NetbootScript {
    /// A script booting the kernel at `kernel` (URI, usually relative to
    /// the script, e.g. `bzImage` or `<digest>/bzImage`).
    pub fn new(kernel: &str) -> Self {
        NetbootScript {
            kernel: kernel.to_owned(),
            init: None,
            initrds: Vec::new(),
            params: Vec::new(),
            allowed: Vec::new(),
        }
    }

    /// Adds `init=PATH` (first on the command line).
    pub fn init(mut self, path: &str) -> Self {
        self.init = Some(path.to_owned());
        self
    }

    /// Adds an initrd (URI, usually relative, e.g. `initrd` or
    /// `<digest>/initrd`), in order. iPXE registers it under the URI's last
    /// path segment, which is what `initrd=NAME` names (a clash with an
    /// earlier image gets `--name NAME-2`).
    pub fn initrd(mut self, uri: &str) -> Self {
        self.initrds.push((uri.to_owned(), None));
        self
    }

    /// Adds an initrd registered under `name` (`initrd --name NAME URI`,
    /// and `initrd=NAME` on the kernel line). A name that clashes with
    /// another image's is an error, not renamed.
    pub fn initrd_named(mut self, uri: &str, name: &str) -> Self {
        self.initrds.push((uri.to_owned(), Some(name.to_owned())));
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

    /// Lets kernel parameters carry `${SETTING}` expansions of these
    /// settings, which iPXE fills in at boot (`BOOTIF=${mac}`). Each entry
    /// is `NAME` (any settings block: `mac` allows `${mac}` and
    /// `${net0/mac:hexhyp}`) or `SETTINGS/NAME` (that block only), without
    /// a type. [`DEFAULT_ALLOWED_SETTINGS`] is a vetted set. Entries are
    /// checked by [`build`](NetbootScript::build) ([`Error::InvalidSetting`]);
    /// calls add up.
    pub fn allow_settings<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.allowed
            .extend(names.into_iter().map(|s| s.as_ref().to_owned()));
        self
    }

    /// Validates and builds the script. Errors name the builder input at
    /// fault (a kernel parameter, the init path, a URI), never a line of
    /// the script.
    pub fn build(self) -> Result<Script, Error> {
        let kernel_name = image_name("kernel URI", &self.kernel)?;
        if self.initrds.is_empty() {
            return Err(Error::NoInitrd);
        }
        let allowed = allowed_settings(&self.allowed)?;
        let fetches = self.fetches(&kernel_name)?;
        let mut args = Value::new();
        let mut budget = 0;
        let mut add = |v: Value, extra: usize| {
            if !args.is_empty() {
                args = std::mem::take(&mut args).then_text(" ");
                budget += 1;
            }
            budget += extra;
            args = std::mem::take(&mut args).then(v);
        };
        if let Some(init) = &self.init {
            check_init(init)?;
            add(Value::text(format!("init={init}")), init.len() + 5);
        }
        for f in &fetches {
            add(Value::text(format!("initrd={}", f.name)), f.name.len() + 7);
        }
        for p in &self.params {
            let (v, len) = kernel_param(p, &allowed)?;
            add(v, len);
        }
        let len = kernel_name.len() + 1 + budget;
        if len > MAX_CMDLINE {
            return Err(Error::CmdlineTooLong {
                len,
                max: MAX_CMDLINE,
            });
        }
        let s = script(&self.kernel, args, fetches);
        // Every input was checked above; this surfaces anything missed.
        s.render()?;
        Ok(s)
    }

    /// The `initrd` lines: each URI fetched once (the EFI stub and BIOS
    /// both get it once), under a name unique among the images
    /// (case-insensitively, as the EFI stub's file lookup is).
    fn fetches(&self, kernel_name: &str) -> Result<Vec<Fetch>, Error> {
        let mut fetches: Vec<Fetch> = Vec::new();
        let mut taken: Vec<String> = vec![kernel_name.to_lowercase()];
        for (uri, explicit) in &self.initrds {
            if fetches.iter().any(|f| &f.uri == uri) {
                continue;
            }
            let base = image_name("initrd URI", uri)?;
            let name = match explicit {
                Some(n) => {
                    check_image_name(n)?;
                    if taken.contains(&n.to_lowercase()) {
                        return Err(invalid("initrd name", n, "is already another image's name"));
                    }
                    n.clone()
                }
                None => {
                    let mut name = base.clone();
                    let mut n = 1;
                    while taken.contains(&name.to_lowercase()) {
                        n += 1;
                        name = format!("{base}-{n}");
                    }
                    name
                }
            };
            taken.push(name.to_lowercase());
            let renamed = name != base;
            fetches.push(Fetch {
                uri: uri.clone(),
                name,
                renamed,
            });
        }
        Ok(fetches)
    }
}

/// `imgfree`, the kernel line, one `initrd` per fetch, `boot`.
fn script(kernel: &str, args: Value, fetches: Vec<Fetch>) -> Script {
    let mut s = Script::new()
        .imgfree()
        .command(Command::Kernel(Image::new(kernel).args(args)));
    for f in fetches {
        let mut img = Image::new(f.uri);
        if f.renamed {
            img = img.name(Value::text(f.name));
        }
        s = s.initrd_image(img);
    }
    s.boot()
}

fn invalid(what: &'static str, value: &str, why: &'static str) -> Error {
    Error::InvalidNetbootValue {
        what,
        value: value.to_owned(),
        why,
    }
}

/// The allowed set, each entry checked: `[SETTINGS/]NAME`, no type.
fn allowed_settings(names: &[String]) -> Result<Vec<SettingName>, Error> {
    names
        .iter()
        .map(|n| {
            let s: SettingName = n.parse()?;
            if s.ty().is_some() {
                return Err(Error::InvalidSetting {
                    setting: n.clone(),
                    why: "an allowed setting names no type (any type is allowed)",
                });
            }
            Ok(s)
        })
        .collect()
}

fn is_allowed(s: &SettingName, allowed: &[SettingName]) -> bool {
    allowed
        .iter()
        .any(|a| a.name() == s.name() && (a.scope().is_none() || a.scope() == s.scope()))
}

/// `init=PATH`: one word, nothing iPXE would expand.
fn check_init(init: &str) -> Result<(), Error> {
    if init.is_empty() || init.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            "init path",
            init,
            "must be one word without whitespace",
        ));
    }
    if init.contains("${") {
        return Err(invalid("init path", init, "must not contain `${`"));
    }
    Ok(())
}

/// One caller kernel parameter as a [`Value`] (allowed `${...}` as setting
/// parts) and the bytes it counts for against [`MAX_CMDLINE`].
fn kernel_param(param: &str, allowed: &[SettingName]) -> Result<(Value, usize), Error> {
    let refuse = |problem| Error::KernelParam {
        param: param.to_owned(),
        problem,
    };
    if param.is_empty() {
        return Err(refuse(KernelParamProblem::Empty));
    }
    if let Some(c) = param.chars().find(|c| c.is_control()) {
        return Err(refuse(KernelParamProblem::ControlChar(c)));
    }
    // The kernel's `next_arg` strips a leading quote: `"init=/x"` is init=.
    let key = param.trim_start_matches('"').split('=').next();
    if param.contains('=') {
        match key {
            Some("init") => return Err(refuse(KernelParamProblem::Init)),
            Some("initrd") => return Err(refuse(KernelParamProblem::Initrd)),
            _ => {}
        }
    }
    let mut v = Value::new();
    let mut len = 0;
    let mut rest = param;
    while let Some(start) = rest.find("${") {
        v = v.then_text(&rest[..start]);
        len += start;
        let after = &rest[start + 2..];
        let bad = |why| {
            refuse(KernelParamProblem::BadExpansion {
                expansion: rest[start..].to_owned(),
                why,
            })
        };
        let Some(end) = after.find('}') else {
            return Err(bad("has no closing `}`"));
        };
        let inner = &after[..end];
        if inner.contains("${") {
            return Err(bad("nests an expansion"));
        }
        let setting: SettingName = inner
            .parse()
            .map_err(|_| bad("does not name an iPXE setting ([SETTINGS/]NAME[:TYPE])"))?;
        if !is_allowed(&setting, allowed) {
            return Err(refuse(KernelParamProblem::SettingNotAllowed {
                setting: inner.to_owned(),
                allowed: allowed.iter().map(ToString::to_string).collect(),
            }));
        }
        v = v.then_setting(inner);
        len += (inner.len() + 3).max(SETTING_BUDGET);
        rest = &after[end + 1..];
    }
    len += rest.len();
    Ok((v.then_text(rest), len))
}

/// The name iPXE registers an image under: the last path segment of the
/// URI (query and fragment excluded; `core/image.c` `image_set_uri` takes
/// the `basename` of the URI's path).
fn image_name(what: &'static str, uri: &str) -> Result<String, Error> {
    if uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            what,
            uri,
            "must not contain whitespace or control characters",
        ));
    }
    if uri.contains("${") {
        return Err(invalid(what, uri, "must not contain `${`"));
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

/// An explicit image name: what [`image_name`] would accept as a last
/// path segment, and no `/`, `?` or `#`.
fn check_image_name(name: &str) -> Result<(), Error> {
    if name.contains(['/', '?', '#']) {
        return Err(invalid(
            "initrd name",
            name,
            "must not contain '/', '?' or '#'",
        ));
    }
    image_name("initrd name", name).map(|_| ())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
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

    fn base() -> NetbootScript {
        NetbootScript::new("bzImage").init("/init").initrd("initrd")
    }

    fn param_error(b: NetbootScript) -> (String, KernelParamProblem) {
        match b.build() {
            Err(Error::KernelParam { param, problem }) => (param, problem),
            other => panic!("{other:?}"),
        }
    }

    /// Without an opt-in, any `${` in a kernel parameter is refused, and
    /// the error names the parameter (not a line of the script).
    #[test]
    fn settings_need_an_opt_in() {
        let e = base()
            .kernel_params("console=ttyS0 foo=${net0/ip}")
            .build()
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "kernel parameter \"foo=${net0/ip}\": iPXE would expand `${net0/ip}`; \
             settings in kernel parameters need an explicit opt-in"
        );
        let (param, problem) = param_error(base().kernel_param("a=${x"));
        assert_eq!(param, "a=${x");
        assert!(matches!(problem, KernelParamProblem::BadExpansion { .. }));
    }

    #[test]
    fn allowed_settings_render_as_expansions() {
        let s = base()
            .kernel_params("BOOTIF=01-${net0/mac:hexhyp} ip=${ip}:::${netmask}")
            .allow_settings(DEFAULT_ALLOWED_SETTINGS)
            .build()
            .unwrap();
        let text = s.render().unwrap();
        assert!(text.contains(
            "kernel bzImage init=/init initrd=initrd BOOTIF=01-${net0/mac:hexhyp} ip=${ip}:::${netmask}\n"
        ));
        assert_eq!(crate::parse(&text).unwrap(), s);
    }

    #[test]
    fn settings_outside_the_allowed_set_are_refused() {
        let b = base()
            .kernel_param("pw=${password}")
            .allow_settings(["mac", "net1/ip"]);
        let (param, problem) = param_error(b);
        assert_eq!(param, "pw=${password}");
        assert_eq!(
            problem,
            KernelParamProblem::SettingNotAllowed {
                setting: "password".into(),
                allowed: vec!["mac".into(), "net1/ip".into()],
            }
        );
        // A scoped entry allows that block only.
        let b = |p: &str| base().kernel_param(p).allow_settings(["net1/ip"]).build();
        assert!(b("ip=${net1/ip}").is_ok());
        assert!(b("ip=${net0/ip}").is_err());
        assert!(b("ip=${ip}").is_err());
        // Nested, malformed and typo'd expansions.
        for p in [
            "a=${${mac}}",
            "a=${mac",
            "a=${}",
            "a=${mac:colour}",
            "a=${mac }x}",
        ] {
            let b = base()
                .kernel_param(p)
                .allow_settings(DEFAULT_ALLOWED_SETTINGS);
            assert!(
                matches!(param_error(b).1, KernelParamProblem::BadExpansion { .. }),
                "{p}"
            );
        }
        // The allowed set itself is checked.
        for bad in ["mac:hex", "-x", "a b", "nbrs-20"] {
            let e = base().allow_settings([bad]).build().unwrap_err();
            assert!(matches!(e, Error::InvalidSetting { .. }), "{bad}: {e}");
        }
        assert!(!DEFAULT_ALLOWED_SETTINGS.contains(&"password"));
        for s in DEFAULT_ALLOWED_SETTINGS {
            assert!(s.parse::<SettingName>().is_ok(), "{s}");
        }
    }

    #[test]
    fn init_and_initrd_are_the_scripts_own() {
        for (p, want) in [
            ("init=/bin/sh", KernelParamProblem::Init),
            ("\"init=/bin/sh\"", KernelParamProblem::Init),
            ("initrd=extra.img", KernelParamProblem::Initrd),
        ] {
            assert_eq!(param_error(base().kernel_param(p)), (p.to_owned(), want));
        }
        // Other keys that merely start alike are fine.
        assert!(base()
            .kernel_params("rdinit=/x initcall_debug init_on_alloc=1 initrdmem=1")
            .build()
            .is_ok());
    }

    /// Each expansion counts [`SETTING_BUDGET`] bytes against the limit.
    #[test]
    fn expansions_count_their_budget() {
        // "bzImage " (8) + "initrd=i" (8) + " " + p; p = text + one expansion.
        let fill = |n: usize| "x".repeat(n) + "${mac}";
        let b = |p: &str| {
            NetbootScript::new("bzImage")
                .initrd("i")
                .kernel_param(p)
                .allow_settings(["mac"])
                .build()
        };
        assert!(b(&fill(2046 - 17 - SETTING_BUDGET)).is_ok());
        assert!(matches!(
            b(&fill(2046 - 17 - SETTING_BUDGET + 1)),
            Err(Error::CmdlineTooLong { len: 2047, .. })
        ));
    }

    /// Kernel and initrds under a directory (content-addressed URLs):
    /// `initrd=NAME` is the last path segment, or the explicit name.
    #[test]
    fn directory_uris_and_explicit_names() {
        let s = NetbootScript::new("abc/bzImage")
            .initrd("abc/initrd")
            .initrd_named("abc/nix-store", "store")
            .build()
            .unwrap()
            .render()
            .unwrap();
        assert_eq!(
            s,
            "#!ipxe\nimgfree\nkernel abc/bzImage initrd=initrd initrd=store\n\
             initrd abc/initrd\ninitrd --name store abc/nix-store\nboot\n"
        );
        let e = NetbootScript::new("abc/bzImage")
            .initrd("abc/initrd")
            .initrd_named("abc/nix-store", "INITRD")
            .build()
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::InvalidNetbootValue {
                    what: "initrd name",
                    ..
                }
            ),
            "{e}"
        );
        for bad in ["a/b", "-x", "", "a b"] {
            assert!(base().initrd_named("x", bad).build().is_err(), "{bad:?}");
        }
        assert!(NetbootScript::new("${k}/bzImage")
            .initrd("i")
            .build()
            .is_err());
        assert!(base().init("/x${y}").build().is_err());
    }
}
