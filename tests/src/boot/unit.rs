//! The stage-1 unit as `nix/netboot-stage1.nix` declares it: the lib-free
//! `nix/netboot-stage1-commands.nix` evaluated by a bare
//! `nix-instantiate --eval --strict --json`, and its `service` rendered into
//! a unit file the way nixpkgs renders `boot.initrd.systemd.services`
//! (`serviceToUnit` in nixos/lib/systemd-lib.nix): `[Unit]` from
//! `unitConfig` plus the list options, `[Service]` from `environment` and
//! `serviceConfig`, keys in Nix attribute order, lists as repeated keys, a
//! `script` as `ExecStart=` of a job script that starts with `set -e`, and
//! `requiredBy`/`wantedBy` as `.requires`/`.wants` links.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The file the module and the tests share.
pub fn commands_file() -> PathBuf {
    crate::tools::workspace_root().join("nix/netboot-stage1-commands.nix")
}

/// What `netboot-stage1-commands.nix` gives for one `stage1` value.
#[derive(Clone, Debug)]
pub struct Commands {
    /// The unit's name without `.service`.
    pub name: String,
    /// `boot.initrd.systemd.services.<name>`, as JSON.
    pub service: Value,
    /// `boot.initrd.postMountCommands` of the scripted stage 1.
    pub post_mount_commands: String,
    /// `boot.initrd.kernelModules`.
    pub kernel_modules: Vec<String>,
    /// `boot.initrd.availableKernelModules`.
    pub available_kernel_modules: Vec<String>,
    /// `fileSystems."/nix".options`.
    pub store_options: Vec<String>,
}

/// Evaluates the commands file with `nix-instantiate` (`nix`) for `stage1`
/// ("unpack" or "seed"), the unpacker path the unit runs and
/// `netbootRs.checkNar`.
pub fn evaluate(
    nix_instantiate: &Path,
    stage1: &str,
    unpack: &str,
    check_nar: bool,
) -> Result<Commands> {
    let out = super::run_checked(
        Command::new(nix_instantiate)
            .args(["--eval", "--strict", "--json"])
            .arg(commands_file())
            .args(["--argstr", "stage1", stage1, "--argstr", "unpack", unpack])
            .args([
                "--arg",
                "checkNar",
                if check_nar { "true" } else { "false" },
            ]),
    )?;
    let v: Value =
        serde_json::from_slice(&out.stdout).context("nix-instantiate printed no JSON")?;
    let strings = |key: &str| -> Result<Vec<String>> {
        v.get(key)
            .and_then(Value::as_array)
            .with_context(|| format!("no list {key}"))?
            .iter()
            .map(|s| s.as_str().map(str::to_owned).context("not a string"))
            .collect()
    };
    let string = |key: &str| -> Result<String> {
        v.get(key)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .with_context(|| format!("no string {key}"))
    };
    Ok(Commands {
        name: string("name")?,
        service: v.get("service").cloned().context("no service")?,
        post_mount_commands: string("postMountCommands")?,
        kernel_modules: strings("kernelModules")?,
        available_kernel_modules: strings("availableKernelModules")?,
        store_options: strings("storeOptions")?,
    })
}

/// A rendered `.service` and what NixOS builds around it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    /// File name, `<name>.service`.
    pub file: String,
    /// The unit file.
    pub text: String,
    /// Units that get a `.requires/<file>` link.
    pub required_by: Vec<String>,
    /// Units that get a `.wants/<file>` link.
    pub wanted_by: Vec<String>,
    /// Job scripts the unit runs: (absolute path, contents).
    pub scripts: Vec<(String, String)>,
}

/// Renders `service` as `name.service`; job scripts are placed in
/// `script_dir` and run by `shell`.
pub fn render(name: &str, service: &Value, script_dir: &str, shell: &str) -> Result<Rendered> {
    let obj = service
        .as_object()
        .context("service is not an attribute set")?;
    let mut unit = object(obj.get("unitConfig"))?;
    let mut svc = object(obj.get("serviceConfig"))?;
    let mut scripts = Vec::new();
    let mut required_by = Vec::new();
    let mut wanted_by = Vec::new();
    for (key, value) in obj {
        // The list options become [Unit] keys (systemd-lib's unitConfig).
        let unit_key = match key.as_str() {
            "requires" => Some("Requires"),
            "wants" => Some("Wants"),
            "after" => Some("After"),
            "before" => Some("Before"),
            "bindsTo" => Some("BindsTo"),
            "partOf" => Some("PartOf"),
            "conflicts" => Some("Conflicts"),
            "requisite" => Some("Requisite"),
            "onFailure" => Some("OnFailure"),
            "onSuccess" => Some("OnSuccess"),
            "documentation" => Some("Documentation"),
            _ => None,
        };
        match (key.as_str(), unit_key) {
            (_, Some(k)) => {
                let words = strings(value)?;
                if !words.is_empty() {
                    unit.push((k.to_owned(), Value::String(words.join(" "))));
                }
            }
            ("description", _) => {
                if value.as_str() != Some("") {
                    unit.push(("Description".into(), value.clone()));
                }
            }
            ("script", _) => {
                let text = value.as_str().context("script is not a string")?;
                let path = format!("{script_dir}/{name}-start");
                // nixpkgs' makeJobScript: `set -e`, a blank line, the text;
                // ExecStart= is the script and `scriptArgs` (empty).
                scripts.push((path.clone(), format!("#!{shell}\nset -e\n\n{text}")));
                svc.push(("ExecStart".into(), Value::String(format!("{path} "))));
            }
            ("requiredBy", _) => required_by = strings(value)?,
            ("wantedBy", _) => wanted_by = strings(value)?,
            ("unitConfig" | "serviceConfig", _) => {}
            (other, _) => bail!("the test renderer does not know the service option {other:?}"),
        }
    }
    // Nix lists attributes sorted by name.
    unit.sort_by(|a, b| a.0.cmp(&b.0));
    svc.sort_by(|a, b| a.0.cmp(&b.0));
    let mut text = format!("[Unit]\n{}\n[Service]\n", section(&unit)?);
    text.push_str(&section(&svc)?);
    if !wanted_by.is_empty() {
        text.push_str(&format!("\n[Install]\nWantedBy={}\n", wanted_by.join(" ")));
    }
    Ok(Rendered {
        file: format!("{name}.service"),
        text,
        required_by,
        wanted_by,
        scripts,
    })
}

fn object(v: Option<&Value>) -> Result<Vec<(String, Value)>> {
    match v {
        None => Ok(Vec::new()),
        Some(Value::Object(m)) => Ok(m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        Some(other) => bail!("not an attribute set: {other}"),
    }
}

fn strings(v: &Value) -> Result<Vec<String>> {
    v.as_array()
        .context("not a list")?
        .iter()
        .map(|s| s.as_str().map(str::to_owned).context("not a string"))
        .collect()
}

/// systemd-lib's attrsToSection: `Key=value` per value, lists repeat the
/// key, booleans are `true`/`false`.
fn section(entries: &[(String, Value)]) -> Result<String> {
    let mut out = String::new();
    for (k, v) in entries {
        let values = match v {
            Value::Array(a) => a.clone(),
            other => vec![other.clone()],
        };
        for x in values {
            let s = match x {
                Value::Bool(b) => b.to_string(),
                Value::Number(n) => n.to_string(),
                Value::String(s) => s,
                other => bail!("{k}: cannot render {other}"),
            };
            out.push_str(&format!("{k}={s}\n"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_nixpkgs() {
        let service = serde_json::json!({
            "description": "D",
            "unitConfig": { "DefaultDependencies": false, "RequiresMountsFor": "/sysroot/nix/store" },
            "before": ["a.service", "b.target"],
            "onFailure": ["emergency.target"],
            "requiredBy": ["initrd.target"],
            "serviceConfig": { "Type": "oneshot", "ExecStart": ["x", "y"], "RemainAfterExit": true },
        });
        let r = render("n", &service, "/etc/s", "/bin/sh").unwrap();
        assert_eq!(
            r.text,
            "[Unit]\nBefore=a.service b.target\nDefaultDependencies=false\nDescription=D\n\
             OnFailure=emergency.target\nRequiresMountsFor=/sysroot/nix/store\n\n\
             [Service]\nExecStart=x\nExecStart=y\nRemainAfterExit=true\nType=oneshot\n"
        );
        assert_eq!(r.file, "n.service");
        assert_eq!(r.required_by, ["initrd.target"]);
        assert!(r.scripts.is_empty());

        // `script`: a job script, ExecStart= with scriptArgs (empty) after it.
        let service = serde_json::json!({ "script": "echo hi\n", "wantedBy": ["t.target"] });
        let r = render("n", &service, "/etc/s", "/bin/sh").unwrap();
        assert_eq!(
            r.text,
            "[Unit]\n\n[Service]\nExecStart=/etc/s/n-start \n\n[Install]\nWantedBy=t.target\n"
        );
        assert_eq!(
            r.scripts,
            [(
                "/etc/s/n-start".to_owned(),
                "#!/bin/sh\nset -e\n\necho hi\n".to_owned()
            )]
        );
        assert!(render("n", &serde_json::json!({ "bogus": 1 }), "/", "/bin/sh").is_err());
    }
}
