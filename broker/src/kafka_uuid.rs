//! Kafka's text form of a Uuid (topic ids, cluster ids): URL-safe base64 of its 16 bytes
//! without padding, 22 characters.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

pub fn to_string(bytes: [u8; 16]) -> String {
    let mut out = String::with_capacity(22);
    let (mut acc, mut bits) = (0u32, 0);
    for b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(ALPHABET[((acc >> bits) & 63) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (6 - bits)) & 63) as usize] as char);
    }
    out
}

/// The 16 bytes of a Uuid in Kafka's text form; None for anything else.
pub fn parse(text: &str) -> Option<[u8; 16]> {
    if text.len() != 22 {
        return None;
    }
    let mut out = [0u8; 16];
    let (mut acc, mut bits, mut n) = (0u32, 0, 0);
    for c in text.bytes() {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            if n < 16 {
                out[n] = (acc >> bits) as u8;
                n += 1;
            }
        }
    }
    (n == 16).then_some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trips_and_matches_kafkas_form() {
        let bytes = *uuid::Uuid::new_v4().as_bytes();
        let text = super::to_string(bytes);
        assert_eq!(text.len(), 22);
        assert_eq!(super::parse(&text), Some(bytes));
        // All-zero is Kafka's Uuid.ZERO_UUID, "AAAAAAAAAAAAAAAAAAAAAA".
        assert_eq!(super::to_string([0; 16]), "AAAAAAAAAAAAAAAAAAAAAA");
        assert_eq!(super::parse("not a uuid"), None);
    }
}
