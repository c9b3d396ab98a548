//! `netboot.ipxe`: the script of the media, built with ipxe-script's typed
//! netboot builder (which refuses an injected or over-long command line).

/// The rendered `netboot.ipxe`. `settings`: the iPXE settings the kernel
/// parameters may expand per machine (`BOOTIF=${mac}`); any other `${` is
/// refused, as are `init=` and `initrd=` (the script sets its own).
pub fn script_text(
    init: &str,
    cmdline: &str,
    settings: &[String],
) -> std::result::Result<String, ipxe_script::Error> {
    let script = ipxe_script::netboot::NetbootScript::new("bzImage")
        .init(init)
        .initrd("initrd")
        .initrd("manifest")
        .initrd("nix-store")
        .kernel_params(cmdline)
        .allow_settings(settings)
        .build()?;
    script.render()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn script_rejects_long_cmdlines() {
        assert!(script_text("/nix/store/x/init", "a=b", &[])
            .unwrap()
            .contains("initrd=nix-store a=b"));
        assert!(script_text("/nix/store/x/init", &"y".repeat(2100), &[]).is_err());
    }

    #[test]
    fn settings_need_an_opt_in() {
        let init = "/nix/store/x/init";
        assert!(script_text(init, "BOOTIF=${mac}", &[]).is_err());
        let mac = ["mac".to_owned()];
        assert!(script_text(init, "BOOTIF=${mac}", &mac)
            .unwrap()
            .contains("BOOTIF=${mac}"));
        assert!(script_text(init, "ip=${ip}", &mac).is_err());
        assert!(script_text(init, "init=/x", &mac).is_err());
        assert!(script_text(init, "initrd=x", &mac).is_err());
    }
}
