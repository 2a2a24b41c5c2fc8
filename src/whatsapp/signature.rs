//! `X-Hub-Signature-256`: the HMAC-SHA256 Meta puts on every notification,
//! keyed with the app secret, over the raw request bytes.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "X-Hub-Signature-256";

/// Why a notification's signature was not accepted. None of the variants
/// carries the app secret or the expected digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The request has no `X-Hub-Signature-256` header.
    #[error("the request has no {SIGNATURE_HEADER} header")]
    Missing,
    /// The header is not `sha256=` followed by 64 hex digits.
    #[error("the {SIGNATURE_HEADER} header is not `sha256=` followed by 64 hex digits")]
    Malformed,
    /// The header is well formed but is not the body's signature under the
    /// app secret.
    #[error("the {SIGNATURE_HEADER} header does not match the body")]
    Mismatch,
}

/// The HMAC-SHA256 of `body` under `app_secret`.
fn digest(app_secret: &str, body: &[u8]) -> Option<[u8; 32]> {
    // HMAC takes keys of any length: this never fails, but no panic either way.
    let mut mac = Hmac::<Sha256>::new_from_slice(app_secret.as_bytes()).ok()?;
    mac.update(body);
    Some(mac.finalize().into_bytes().into())
}

/// Checks a notification's `X-Hub-Signature-256` header (`sha256=<hex>`)
/// against the HMAC-SHA256 of the raw body bytes under the app secret, in
/// constant time.
///
/// Check the bytes exactly as received: JSON re-serialized by a parser
/// escapes `/`, `@` or non-ASCII text differently and no longer matches.
///
/// ```
/// use chatflow::whatsapp::{SignatureError, sign, verify_signature};
///
/// let body = br#"{"object":"whatsapp_business_account","entry":[]}"#;
/// let header = sign("app-secret", body);
/// assert!(header.starts_with("sha256="));
/// assert_eq!(verify_signature("app-secret", body, Some(&header)), Ok(()));
/// assert_eq!(verify_signature("other-secret", body, Some(&header)), Err(SignatureError::Mismatch));
/// assert_eq!(verify_signature("app-secret", body, None), Err(SignatureError::Missing));
/// assert_eq!(verify_signature("app-secret", body, Some("sha1=abc")), Err(SignatureError::Malformed));
/// ```
pub fn verify_signature(app_secret: &str, body: &[u8], header: Option<&str>) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?.trim();
    let digits = header
        .get(..7)
        .filter(|prefix| prefix.eq_ignore_ascii_case("sha256="))
        .and_then(|_| header.get(7..))
        .ok_or(SignatureError::Malformed)?;
    let mut given = [0u8; 32];
    hex::decode_to_slice(digits, &mut given).map_err(|_| SignatureError::Malformed)?;
    let expected = digest(app_secret, body).ok_or(SignatureError::Mismatch)?;
    if bool::from(expected.ct_eq(&given)) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The `X-Hub-Signature-256` header value Meta would send with `body`:
/// `sha256=` and the lower-case hex HMAC-SHA256 under `app_secret`. For
/// mocks and tests that post signed notifications.
///
/// ```
/// use chatflow::whatsapp::sign;
///
/// let header = sign("app-secret", b"{}");
/// assert_eq!(header.len(), "sha256=".len() + 64);
/// ```
pub fn sign(app_secret: &str, body: &[u8]) -> String {
    let digest = digest(app_secret, body).unwrap_or_default();
    format!("sha256={}", hex::encode(digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "s3cret";
    const BODY: &[u8] = br#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[]}],"text":"caf\u00e9 a\/b"}"#;

    #[test]
    fn a_signature_from_sign_verifies() {
        let header = sign(SECRET, BODY);
        assert_eq!(verify_signature(SECRET, BODY, Some(&header)), Ok(()));
        // Surrounding spaces and an upper-case prefix or digits are tolerated.
        let shouted = format!("  SHA256={} ", header["sha256=".len()..].to_uppercase());
        assert_eq!(verify_signature(SECRET, BODY, Some(&shouted)), Ok(()));
    }

    #[test]
    fn a_known_vector_matches() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_missing_header_is_missing() {
        assert_eq!(verify_signature(SECRET, BODY, None), Err(SignatureError::Missing));
    }

    #[test]
    fn malformed_headers_are_malformed() {
        let good = sign(SECRET, BODY);
        let digits = &good["sha256=".len()..];
        for header in [
            String::new(),
            "sha256=".to_string(),
            digits.to_string(),
            format!("sha1={digits}"),
            format!("sha256={}", &digits[..62]),
            format!("sha256={digits}00"),
            format!("sha256={}zz", &digits[..62]),
            "sha256=é".to_string(),
            "ünïcode".to_string(),
        ] {
            assert_eq!(
                verify_signature(SECRET, BODY, Some(&header)),
                Err(SignatureError::Malformed),
                "{header:?}"
            );
        }
    }

    #[test]
    fn a_wrong_secret_or_body_is_a_mismatch() {
        let header = sign(SECRET, BODY);
        assert_eq!(
            verify_signature("other", BODY, Some(&header)),
            Err(SignatureError::Mismatch)
        );
        let mut tampered = BODY.to_vec();
        tampered[2] ^= 1;
        assert_eq!(
            verify_signature(SECRET, &tampered, Some(&header)),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn re_serialized_json_does_not_verify() {
        // Meta escapes `/` and non-ASCII; a parser writes them back plain.
        let header = sign(SECRET, BODY);
        let value: serde_json::Value = serde_json::from_slice(BODY).unwrap();
        let reserialized = serde_json::to_vec(&value).unwrap();
        assert_ne!(reserialized, BODY);
        assert_eq!(
            verify_signature(SECRET, &reserialized, Some(&header)),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn errors_never_show_the_secret() {
        let header = sign(SECRET, BODY);
        let error = verify_signature("other", BODY, Some(&header)).unwrap_err();
        assert!(!format!("{error} {error:?}").contains(SECRET));
    }
}
