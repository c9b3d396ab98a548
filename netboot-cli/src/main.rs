//! `netboot`: builds NixOS netboot media (under construction).

fn main() {
    println!("netboot: under construction");
}
