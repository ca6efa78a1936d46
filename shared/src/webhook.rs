//! Webhook secrets and `Countersign-Signature` headers (agent callbacks and the review
//! webhook), plus the HMAC helpers the chat adapters use.
//!
//! - An agent's secret = hex(HMAC-SHA256(key = `webhook_key` UTF-8 bytes,
//!   `"countersign-webhook:" + agent id`)); the review webhook uses `"reviews"` as the id.
//! - `Countersign-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(key = the secret's hex
//!   text bytes, "<t>.<raw body>")>`.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::error::{Error, Result};
use crate::time::Timestamp;

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "Countersign-Signature";
/// The header carrying the event id (stable across retries).
pub const EVENT_ID_HEADER: &str = "Countersign-Event-Id";
/// The id whose derived secret signs the review webhook.
pub const REVIEWS_ID: &str = "reviews";
/// Default accepted clock difference when verifying a signature.
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// Constant-time equality of two byte strings (length is not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// The webhook secret of `agent_id` (hex text).
pub fn webhook_secret(webhook_key: &str, agent_id: &str) -> String {
    hex::encode(hmac_sha256(
        webhook_key.as_bytes(),
        format!("countersign-webhook:{agent_id}").as_bytes(),
    ))
}

/// The `Countersign-Signature` value for `body` sent at `t`.
pub fn sign(secret_hex: &str, t: Timestamp, body: &[u8]) -> String {
    format!(
        "t={},v1={}",
        t.unix(),
        hex::encode(mac(secret_hex, t.unix(), body))
    )
}

fn mac(secret_hex: &str, t: i64, body: &[u8]) -> [u8; 32] {
    let mut m =
        <Hmac<Sha256> as Mac>::new_from_slice(secret_hex.as_bytes()).expect("any key length");
    m.update(t.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m.finalize().into_bytes().into()
}

/// Verifies a `Countersign-Signature` value: the timestamp must be within `tolerance_secs` of
/// `now`, and one `v1=` must match (several are allowed, for secret rotation), compared in
/// constant time. Failures are `Unauthorized`.
pub fn verify(
    secret_hex: &str,
    header: &str,
    body: &[u8],
    now: Timestamp,
    tolerance_secs: i64,
) -> Result<()> {
    let mut t: Option<i64> = None;
    let mut sigs: Vec<Vec<u8>> = Vec::new();
    for part in header.split(',') {
        let Some((k, v)) = part.trim().split_once('=') else {
            return Err(Error::Unauthorized("malformed signature header".into()));
        };
        match k {
            "t" => {
                t = Some(
                    v.parse()
                        .map_err(|_| Error::Unauthorized("malformed signature timestamp".into()))?,
                )
            }
            "v1" => sigs.push(
                hex::decode(v).map_err(|_| Error::Unauthorized("malformed signature".into()))?,
            ),
            _ => {}
        }
    }
    let t = t.ok_or_else(|| Error::Unauthorized("signature has no timestamp".into()))?;
    if (now.unix() - t).abs() > tolerance_secs {
        return Err(Error::Unauthorized(
            "signature timestamp outside the accepted window".into(),
        ));
    }
    let expected = mac(secret_hex, t, body);
    let mut ok = false;
    for s in &sigs {
        ok |= ct_eq(s, &expected);
    }
    if ok {
        Ok(())
    } else {
        Err(Error::Unauthorized("signature does not match".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_derivation_matches_the_formula() {
        let s = webhook_key_secret();
        assert_eq!(s.len(), 64);
        assert_eq!(
            s,
            hex::encode(hmac_sha256(b"k3y", b"countersign-webhook:etl-bot"))
        );
        assert_ne!(s, webhook_secret("k3y", "ops-bot"));
        assert_ne!(webhook_secret("k3y", REVIEWS_ID), s);
        // RFC 4231 test case 2.
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    fn webhook_key_secret() -> String {
        webhook_secret("k3y", "etl-bot")
    }

    #[test]
    fn sign_and_verify() {
        let secret = webhook_key_secret();
        let now = Timestamp(1_800_000_000);
        let body = br#"{"type":"action.decided","id":"req_1"}"#;
        let header = sign(&secret, now, body);
        assert!(header.starts_with("t=1800000000,v1="));
        // The MAC key is the secret's hex text, over "<t>.<body>".
        let mut msg = b"1800000000.".to_vec();
        msg.extend_from_slice(body);
        assert_eq!(
            &header[16..],
            hex::encode(hmac_sha256(secret.as_bytes(), &msg))
        );
        verify(&secret, &header, body, now, DEFAULT_TOLERANCE_SECS).unwrap();
        verify(&secret, &header, body, Timestamp(now.0 + 300), 300).unwrap();
        assert!(verify(&secret, &header, body, Timestamp(now.0 + 301), 300).is_err());
        assert!(verify(&secret, &header, b"{}", now, 300).is_err());
        assert!(verify(&webhook_secret("k3y", "ops-bot"), &header, body, now, 300).is_err());
        let replayed_t = header.replace("t=1800000000", "t=1800000001");
        assert!(verify(&secret, &replayed_t, body, now, 300).is_err());
        // Rotation: any matching v1 passes.
        let two = format!("{header},v1={}", "00".repeat(32));
        verify(&secret, &two, body, now, 300).unwrap();
        for bad in [
            "",
            "v1=00",
            "t=x,v1=00",
            "t=1800000000",
            "t=1800000000,v1=zz",
            "garbage",
        ] {
            assert!(verify(&secret, bad, body, now, 300).is_err(), "{bad}");
        }
        assert!(ct_eq(b"abc", b"abc") && !ct_eq(b"abc", b"abd") && !ct_eq(b"abc", b"ab"));
    }
}
