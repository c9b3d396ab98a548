//! Golden text of the scripts we ship. The netboot script is the same for
//! BIOS and UEFI iPXE (that is the point of `initrd=NAME` on the kernel
//! line), so one snapshot covers both flavours.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use ipxe_script::netboot::{NetbootScript, DEFAULT_ALLOWED_SETTINGS, MAX_CMDLINE};
use ipxe_script::{parse, Command, Error, Image, Script, Value};

const INIT: &str = "/nix/store/8v6jx1c4y9b1kz0m3w2q5r7t9s0a2d4f-nixos-system-netboot-25.05/init";

fn nixos() -> NetbootScript {
    NetbootScript::new("bzImage")
        .init(INIT)
        .initrd("initrd")
        .initrd("manifest")
        .initrd("nix-store")
}

fn render(s: NetbootScript) -> String {
    let script = s.build().unwrap();
    let text = script.render().unwrap();
    assert_eq!(parse(&text).unwrap(), script, "parse(render(x)) == x");
    text
}

#[test]
fn netboot_bios_and_uefi() {
    insta::assert_snapshot!(render(nixos()));
}

#[test]
fn netboot_bios_and_uefi_with_kernel_params() {
    insta::assert_snapshot!(render(
        nixos()
            .kernel_params("console=ttyS0,115200 console=tty0  panic=-1\tloglevel=4")
            .kernel_param("root.pw=$6$salt$hash#1")
    ));
}

#[test]
fn netboot_long_init_path() {
    let long = format!(
        "/nix/store/{}-init/{}/init",
        "x".repeat(32),
        "deep/".repeat(40)
    );
    insta::assert_snapshot!(render(nixos().init(&long)));
    // Just over the limit: a typed error, not a silently cut command line.
    let huge = format!("/{}", "p".repeat(MAX_CMDLINE));
    assert!(matches!(
        nixos().init(&huge).build(),
        Err(Error::CmdlineTooLong {
            max: MAX_CMDLINE,
            ..
        })
    ));
}

#[test]
fn netboot_duplicate_and_clashing_initrds() {
    insta::assert_snapshot!(render(
        NetbootScript::new("http://boot.example/nixos/bzImage")
            .init("/init")
            .initrd("http://boot.example/nixos/initrd")
            .initrd("http://boot.example/nixos/initrd")
            .initrd("http://boot.example/extra/initrd")
    ));
}

/// Content-addressed media (`serve`'s `/NAME/<digest>/bzImage`, the script
/// at `/NAME/netboot.ipxe`): the URIs carry the digest directory, and
/// `initrd=NAME` names each initrd by its last path segment, the name iPXE
/// registers it under. Per-machine parameters from allowed iPXE settings.
#[test]
fn netboot_content_addressed_with_settings() {
    let d = "7d1f0c4e9a2b5d8f3e6a1c0b9d8e7f6a";
    insta::assert_snapshot!(render(
        NetbootScript::new(&format!("{d}/bzImage"))
            .init(INIT)
            .initrd(&format!("{d}/initrd"))
            .initrd(&format!("{d}/manifest"))
            .initrd(&format!("{d}/nix-store"))
            .kernel_params("console=ttyS0 BOOTIF=01-${net0/mac:hexhyp} ip=${ip} node=${hostname}")
            .kernel_param("serial=${smbios/serial}")
            .allow_settings(DEFAULT_ALLOWED_SETTINGS)
    ));
}

/// What the escapes look like (and that they are readable).
#[test]
fn escapes() {
    let s = Script::new()
        .comment("values iPXE would otherwise misread")
        .echo("#not-a-comment a#b || && ; $6$salt$h")
        .echo("two  spaces\tand a tab")
        .echo("${ literal")
        .echo("-n")
        .set("x", "ends with a backslash\\")
        .kernel_image(
            Image::new(Value::text("http://x/").then_setting("net0/mac:hexhyp"))
                .name("k")
                .timeout_ms(30000),
        )
        .chain(Image::new("next.ipxe").autofree(true).replace(true))
        .command(Command::Dhcp { interface: None })
        .or_ignore()
        .label("end")
        .exit(Some(0));
    let text = s.render().unwrap();
    assert_eq!(parse(&text).unwrap(), s);
    insta::assert_snapshot!(text);
}
