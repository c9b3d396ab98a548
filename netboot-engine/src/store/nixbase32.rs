//! Nix's base-32 encoding (`libutil/hash.cc` `printHash32`): the alphabet
//! omits `e o u t`, and the digits are emitted from the most significant
//! 5-bit group of the little-endian bit string first.

/// The 32 characters Nix uses, in value order.
pub const ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// Whether `c` is one of the [`ALPHABET`] characters.
pub fn is_char(c: u8) -> bool {
    IS_CHAR[usize::from(c)]
}

const IS_CHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < ALPHABET.len() {
        t[ALPHABET[i] as usize] = true;
        i += 1;
    }
    t
};

/// Encodes `bytes` the way `nix-hash --type sha256 --base32` prints a digest.
pub fn encode(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return String::new();
    }
    let len = (bytes.len() * 8 - 1) / 5 + 1;
    let mut out = String::with_capacity(len);
    for n in (0..len).rev() {
        let b = n * 5;
        let i = b / 8;
        let j = b % 8;
        let lo = bytes.get(i).map_or(0u16, |&x| u16::from(x) >> j);
        let hi = bytes.get(i + 1).map_or(0u16, |&x| u16::from(x) << (8 - j));
        let c = usize::from((lo | hi) & 0x1f);
        out.push(char::from(ALPHABET[c]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn sha256_of_empty_string_matches_nix() {
        // `nix-hash --type sha256 --flat --base32 /dev/null`
        let d = Sha256::digest(b"");
        assert_eq!(
            encode(&d),
            "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"
        );
    }

    #[test]
    fn alphabet_membership() {
        assert!(is_char(b'0') && is_char(b'z') && is_char(b'a'));
        assert!(!is_char(b'e') && !is_char(b'o') && !is_char(b'u') && !is_char(b't'));
        assert!(!is_char(b'A') && !is_char(b'-'));
    }
}
