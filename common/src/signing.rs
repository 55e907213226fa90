//! HMAC-SHA256 signatures as lowercase hex: the queue's message signature, and the
//! primitive every exchange signs its requests with.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Lowercase hex HMAC-SHA256 of `message` keyed with `key`.
pub fn hmac_sha256_hex(key: &[u8], message: &[u8]) -> String {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail.
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    hex::encode(mac.finalize().into_bytes())
}

/// Whether `signature_hex` is the HMAC-SHA256 of `message` under `key`, compared in
/// constant time. Upper- or lower-case hex is accepted; anything else is refused.
pub fn verify_hmac_sha256_hex(key: &[u8], message: &[u8], signature_hex: &str) -> bool {
    let Ok(signature) = hex::decode(signature_hex) else {
        return false;
    };
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    mac.verify_slice(&signature).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231, test case 2: key "Jefe", data "what do ya want for nothing?".
    #[test]
    fn matches_rfc_4231_test_case_2() {
        assert_eq!(
            hmac_sha256_hex(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn verification_accepts_only_the_right_signature() {
        let sig = hmac_sha256_hex(b"key", b"body");
        assert!(verify_hmac_sha256_hex(b"key", b"body", &sig));
        assert!(verify_hmac_sha256_hex(b"key", b"body", &sig.to_uppercase()));
        assert!(!verify_hmac_sha256_hex(b"other", b"body", &sig));
        assert!(!verify_hmac_sha256_hex(b"key", b"body!", &sig));
        assert!(!verify_hmac_sha256_hex(b"key", b"body", &sig[..62]));
        assert!(!verify_hmac_sha256_hex(b"key", b"body", "not hex"));
        assert!(!verify_hmac_sha256_hex(b"key", b"body", ""));
    }
}
