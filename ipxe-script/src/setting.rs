//! iPXE setting names as `${...}` expansions read them:
//! `[SETTINGS/]NAME[:TYPE]` (`core/settings.c` `parse_setting_name`: the
//! settings block is everything before the first `/`, a `.`-separated path
//! such as `net0` or `net0.dhcp`; the type is everything after the first
//! `:` of the rest, looked up among the setting types).

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// The setting types iPXE knows (`core/settings.c`, `__setting_type`
/// definitions, iPXE 0ab2277), as written after `:`.
pub const SETTING_TYPES: &[&str] = &[
    "string",
    "uristring",
    "ipv4",
    "ipv6",
    "int8",
    "int16",
    "int32",
    "uint8",
    "uint16",
    "uint32",
    "hex",
    "hexhyp",
    "hexraw",
    "base64",
    "uuid",
    "guid",
    "busdevfn",
];

/// A validated setting name: optional settings block (scope), name,
/// optional type, e.g. `net0/mac:hexhyp`.
///
/// ```
/// use ipxe_script::SettingName;
/// let s: SettingName = "net0/mac:hexhyp".parse()?;
/// assert_eq!((s.scope(), s.name(), s.ty()), (Some("net0"), "mac", Some("hexhyp")));
/// assert_eq!(s.to_string(), "net0/mac:hexhyp");
/// assert!("mac:colour".parse::<SettingName>().is_err());
/// # Ok::<(), ipxe_script::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SettingName {
    scope: Option<String>,
    name: String,
    ty: Option<String>,
}

impl SettingName {
    /// The settings block before `/` (`net0`, `net0.dhcp`, `smbios`), if any.
    pub fn scope(&self) -> Option<&str> {
        self.scope.as_deref()
    }

    /// The setting's name (`mac`, `ip`, or a DHCP option number like `175.3`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The type after `:` (one of [`SETTING_TYPES`]), if any.
    pub fn ty(&self) -> Option<&str> {
        self.ty.as_deref()
    }
}

impl fmt::Display for SettingName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(s) = &self.scope {
            write!(f, "{s}/")?;
        }
        f.write_str(&self.name)?;
        if let Some(t) = &self.ty {
            write!(f, ":{t}")?;
        }
        Ok(())
    }
}

impl FromStr for SettingName {
    type Err = Error;

    /// Parses `[SETTINGS/]NAME[:TYPE]`. Scope components and the name are
    /// `[A-Za-z0-9_-]` words (the name may also hold `.` and `@`, for DHCP
    /// option numbers like `175.3`); the type must be one of
    /// [`SETTING_TYPES`]. The name must not start with `-` (it would read
    /// as an option in `set`/`clear`) nor be in this crate's
    /// [`ESCAPE_PREFIX`](crate::ESCAPE_PREFIX) namespace.
    fn from_str(s: &str) -> Result<SettingName, Error> {
        let invalid = |why| Error::InvalidSetting {
            setting: s.to_owned(),
            why,
        };
        let (scope, rest) = match s.split_once('/') {
            Some((scope, rest)) => (Some(scope), rest),
            None => (None, s),
        };
        let (name, ty) = match rest.split_once(':') {
            Some((name, ty)) => (name, Some(ty)),
            None => (rest, None),
        };
        if let Some(scope) = scope {
            let word = |c: &str| !c.is_empty() && c.bytes().all(is_word_byte);
            if !scope.split('.').all(word) {
                return Err(invalid(
                    "the settings block before '/' must be words of A-Z a-z 0-9 _ - joined by '.'",
                ));
            }
        }
        let name_ok = !name.is_empty()
            && !name.starts_with('-')
            && name
                .bytes()
                .all(|b| is_word_byte(b) || b == b'.' || b == b'@');
        if !name_ok {
            return Err(invalid(
                "the name must be a word of A-Z a-z 0-9 _ - . @ not starting with '-'",
            ));
        }
        if name.starts_with(crate::value::ESCAPE_PREFIX) {
            return Err(invalid(
                "the nbrs- names are reserved for this crate's escapes",
            ));
        }
        if ty.is_some_and(|t| !SETTING_TYPES.contains(&t)) {
            return Err(invalid("unknown type after ':' (see SETTING_TYPES)"));
        }
        Ok(SettingName {
            scope: scope.map(str::to_owned),
            name: name.to_owned(),
            ty: ty.map(str::to_owned),
        })
    }
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn grammar() {
        for ok in [
            "mac",
            "net0/mac",
            "net0.dhcp/ip:ipv4",
            "smbios/serial:string",
            "175.3",
            "board-serial",
        ] {
            let s: SettingName = ok.parse().unwrap();
            assert_eq!(s.to_string(), ok);
            assert!(crate::is_valid_setting_name(ok), "{ok}");
        }
        for bad in [
            "",
            "/mac",
            "net0/",
            "net0..dhcp/mac",
            "a/b/c",
            "mac:",
            "mac:colour",
            "-mac",
            "nbrs-20:string",
            "m ac",
            "mac}",
            "${mac}",
        ] {
            assert!(bad.parse::<SettingName>().is_err(), "{bad:?}");
        }
    }
}
