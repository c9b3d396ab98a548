//! `netboot.ipxe`: the script of the media, built with ipxe-script's typed
//! netboot builder (which refuses an injected or over-long command line).

/// The rendered `netboot.ipxe`.
pub fn script_text(init: &str, cmdline: &str) -> std::result::Result<String, ipxe_script::Error> {
    let script = ipxe_script::netboot::NetbootScript::new("bzImage")
        .init(init)
        .initrd("initrd")
        .initrd("manifest")
        .initrd("nix-store")
        .kernel_params(cmdline)
        .build()?;
    script.render()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn script_rejects_long_cmdlines() {
        assert!(script_text("/nix/store/x/init", "a=b")
            .unwrap()
            .contains("initrd=nix-store a=b"));
        assert!(script_text("/nix/store/x/init", &"y".repeat(2100)).is_err());
    }
}
