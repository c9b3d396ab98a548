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

/// Decodes what [`encode`] made of `len` bytes; `None` for a string of
/// another length, a character outside [`ALPHABET`], or bits beyond `len`
/// bytes (so every byte string has exactly one encoding).
pub fn decode(s: &str, len: usize) -> Option<Vec<u8>> {
    if len == 0 || s.len() != (len * 8 - 1) / 5 + 1 {
        return None;
    }
    let mut out = vec![0u8; len];
    for (k, c) in s.bytes().enumerate() {
        let digit = ALPHABET.iter().position(|&a| a == c)? as u16;
        // Digit k is 5-bit group n (most significant first, as encoded).
        let n = s.len() - 1 - k;
        let (i, j) = (n * 5 / 8, n * 5 % 8);
        let v = digit << j;
        *out.get_mut(i)? |= (v & 0xff) as u8;
        let hi = (v >> 8) as u8;
        match out.get_mut(i + 1) {
            Some(b) => *b |= hi,
            None if hi != 0 => return None,
            None => {}
        }
    }
    Some(out)
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
    fn decode_inverts_encode_and_refuses_the_rest() {
        for len in [1, 20, 32] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(decode(&encode(&bytes), len), Some(bytes));
            let ones = vec![0xff; len];
            assert_eq!(decode(&encode(&ones), len), Some(ones));
        }
        let e = encode(&[0xff; 32]);
        assert!(decode(&e, 31).is_none());
        assert!(decode(&e.replacen('z', "e", 1), 32).is_none());
        // The top digit carries 4 bits more than 32 bytes hold.
        assert!(decode(&format!("2{}", &e[1..]), 32).is_none());
    }

    #[test]
    fn alphabet_membership() {
        assert!(is_char(b'0') && is_char(b'z') && is_char(b'a'));
        assert!(!is_char(b'e') && !is_char(b'o') && !is_char(b'u') && !is_char(b't'));
        assert!(!is_char(b'A') && !is_char(b'-'));
    }
}
