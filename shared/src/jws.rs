//! JWS compact serialization (RFC 7515): EdDSA signing and verification for grants, and
//! (feature `rs256`) RS256 verification against RSA JWKs for Bot Framework tokens (Teams).
//!
//! Why our own ~150 lines instead of a JWT crate: we need exactly one signing algorithm
//! (EdDSA) in every component and RS256 verification in one (teams). `jsonwebtoken` 10/11
//! with its `rust_crypto` provider links RSA, P-256 and P-384 into every binary through its
//! algorithm dispatch table and pulls `js-sys` on wasm32; `jwt-simple` (pure-rust mode)
//! compiles k256/p256/p384/RSA/BLAKE2 for all users, reads time through `coarsetime`'s WASI
//! preview-1 shims and defaults to a 15-minute clock leeway. Here the primitives are the
//! audited RustCrypto/dalek crates (`ed25519-dalek`, and `rsa` only behind `rs256`), and the
//! format layer accepts a single `alg` per call, so no algorithm confusion is possible.
//! Interoperability is tested against `jsonwebtoken` (a dev-dependency): it verifies our
//! grants from our JWKS, and produces the RS256 tokens this module verifies.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::canon::{b64url, b64url_decode};
use crate::crypto::{KeySet, SigningKey};
use crate::error::{Error, Result};

/// The protected header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// A structurally decoded token (nothing verified yet).
#[derive(Debug, Clone)]
pub struct Decoded {
    pub header: Header,
    pub payload: Vec<u8>,
    /// `base64url(header) "." base64url(payload)`: the signed bytes.
    pub signing_input: String,
    pub signature: Vec<u8>,
}

impl Decoded {
    /// The payload as JSON claims.
    pub fn claims<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.payload)
            .map_err(|e| Error::Unauthorized(format!("token claims: {e}")))
    }
}

fn unauthorized(m: &str) -> Error {
    Error::Unauthorized(m.to_string())
}

/// Splits and decodes a compact JWS without verifying it.
pub fn decode(token: &str) -> Result<Decoded> {
    if token.len() > 16 * 1024 {
        return Err(unauthorized("token too long"));
    }
    let mut parts = token.trim().split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(unauthorized(
            "not a compact JWS (three dot-separated parts)",
        ));
    };
    let header_bytes =
        b64url_decode(h).map_err(|_| unauthorized("token header is not base64url"))?;
    let header: Header = serde_json::from_slice(&header_bytes)
        .map_err(|_| unauthorized("token header is not a JOSE header"))?;
    if header.other.contains_key("crit") {
        return Err(unauthorized(
            "token header has unsupported critical extensions",
        ));
    }
    let payload = b64url_decode(p).map_err(|_| unauthorized("token payload is not base64url"))?;
    let signature =
        b64url_decode(s).map_err(|_| unauthorized("token signature is not base64url"))?;
    Ok(Decoded {
        header,
        payload,
        signing_input: format!("{h}.{p}"),
        signature,
    })
}

/// Signs `claims` as a JWT: header `{"alg":"EdDSA","kid":<kid>,"typ":"JWT"}`.
pub fn sign_eddsa<T: Serialize>(key: &SigningKey, claims: &T) -> Result<String> {
    let header = Header {
        alg: "EdDSA".into(),
        kid: Some(key.kid().to_string()),
        typ: Some("JWT".into()),
        other: Map::new(),
    };
    let h = b64url(&serde_json::to_vec(&header).map_err(|e| Error::Crypto(e.to_string()))?);
    let p = b64url(&serde_json::to_vec(claims).map_err(|e| Error::Crypto(e.to_string()))?);
    let input = format!("{h}.{p}");
    let sig = key.sign(input.as_bytes());
    Ok(format!("{input}.{}", b64url(&sig)))
}

/// Verifies an EdDSA compact JWS against `keys`: `alg` must be `EdDSA`, `kid` must name a
/// key of the set, and the signature must verify. Any failure is `Unauthorized`.
pub fn verify_eddsa(token: &str, keys: &KeySet) -> Result<Decoded> {
    let d = decode(token)?;
    if d.header.alg != "EdDSA" {
        return Err(unauthorized("token alg must be EdDSA"));
    }
    let kid = d
        .header
        .kid
        .as_deref()
        .ok_or_else(|| unauthorized("token has no kid"))?;
    let key = keys
        .get(kid)
        .ok_or_else(|| unauthorized("token signed by an unknown key"))?;
    if !key.verify(d.signing_input.as_bytes(), &d.signature) {
        return Err(unauthorized("bad token signature"));
    }
    Ok(d)
}

/// Verifies an RS256 compact JWS against the RSA keys of `jwks` (the key named by `kid`; a
/// token without `kid` is refused). Returns the decoded token and the key that verified it,
/// so callers can check e.g. its `endorsements`. Claims (iss, aud, exp, ...) are the caller's
/// to check.
#[cfg(feature = "rs256")]
pub fn verify_rs256<'a>(
    token: &str,
    jwks: &'a crate::crypto::Jwks,
) -> Result<(Decoded, &'a crate::crypto::Jwk)> {
    use rsa::signature::Verifier as _;

    let d = decode(token)?;
    if d.header.alg != "RS256" {
        return Err(unauthorized("token alg must be RS256"));
    }
    let kid = d
        .header
        .kid
        .as_deref()
        .ok_or_else(|| unauthorized("token has no kid"))?;
    let jwk = jwks
        .keys
        .iter()
        .find(|k| k.kty == "RSA" && k.kid.as_deref() == Some(kid))
        .ok_or_else(|| unauthorized("token signed by an unknown key"))?;
    let (Some(n), Some(e)) = (jwk.n.as_deref(), jwk.e.as_deref()) else {
        return Err(unauthorized("RSA key without n or e"));
    };
    let n = rsa::BigUint::from_bytes_be(
        &b64url_decode(n).map_err(|_| unauthorized("RSA key n is not base64url"))?,
    );
    let e = rsa::BigUint::from_bytes_be(
        &b64url_decode(e).map_err(|_| unauthorized("RSA key e is not base64url"))?,
    );
    let public = rsa::RsaPublicKey::new(n, e).map_err(|_| unauthorized("not a usable RSA key"))?;
    if rsa::traits::PublicKeyParts::size(&public) < 256 {
        return Err(unauthorized("RSA key shorter than 2048 bits"));
    }
    let verifier = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(public);
    let sig = rsa::pkcs1v15::Signature::try_from(d.signature.as_slice())
        .map_err(|_| unauthorized("bad token signature"))?;
    verifier
        .verify(d.signing_input.as_bytes(), &sig)
        .map_err(|_| unauthorized("bad token signature"))?;
    Ok((d, jwk))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_seed(&[n; 32])
    }

    #[test]
    fn eddsa_round_trip_and_refusals() {
        let k = key(1);
        let keys = KeySet::from(&k);
        let token = sign_eddsa(&k, &json!({"sub":"x"})).unwrap();
        let d = verify_eddsa(&token, &keys).unwrap();
        assert_eq!(d.header.alg, "EdDSA");
        assert_eq!(d.header.kid.as_deref(), Some(k.kid()));
        assert_eq!(d.header.typ.as_deref(), Some("JWT"));
        assert_eq!(d.claims::<Value>().unwrap()["sub"], "x");

        // Another key's set: unknown kid.
        assert!(
            matches!(verify_eddsa(&token, &KeySet::from(&key(2))), Err(Error::Unauthorized(m)) if m.contains("unknown key"))
        );
        // Tampered payload.
        let parts: Vec<&str> = token.split('.').collect();
        let forged_payload = b64url(br#"{"sub":"y"}"#);
        let forged = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
        assert!(
            matches!(verify_eddsa(&forged, &keys), Err(Error::Unauthorized(m)) if m.contains("signature"))
        );
        // alg none / HS256 header swap.
        for alg in ["none", "HS256", "RS256"] {
            let h = b64url(json!({"alg": alg, "kid": k.kid()}).to_string().as_bytes());
            let t = format!("{h}.{}.{}", parts[1], parts[2]);
            assert!(verify_eddsa(&t, &keys).is_err(), "{alg}");
        }
        // Malformed.
        for bad in [
            "",
            "a.b",
            "a.b.c.d",
            "!!.b.c",
            &format!("{}.{}.", parts[0], parts[1]),
        ] {
            assert!(
                matches!(verify_eddsa(bad, &keys), Err(Error::Unauthorized(_))),
                "{bad}"
            );
        }
        // crit header refused.
        let h = b64url(
            json!({"alg":"EdDSA","kid":k.kid(),"crit":["exp"]})
                .to_string()
                .as_bytes(),
        );
        let input = format!("{h}.{}", parts[1]);
        let t = format!("{input}.{}", b64url(&k.sign(input.as_bytes())));
        assert!(verify_eddsa(&t, &keys).is_err());
    }

    #[test]
    fn interoperates_with_jsonwebtoken() {
        let k = key(3);
        let token = sign_eddsa(&k, &json!({"sub":"agent","exp": 4_102_444_800u64})).unwrap();
        let jwk: jsonwebtoken::jwk::Jwk =
            serde_json::from_str(&serde_json::to_string(&k.jwk()).unwrap()).unwrap();
        let dk = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
        v.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<Value>(&token, &dk, &v).unwrap();
        assert_eq!(data.claims["sub"], "agent");
        assert_eq!(data.header.kid.as_deref(), Some(k.kid()));
    }

    #[cfg(feature = "rs256")]
    mod rs256 {
        use super::*;
        use crate::crypto::{Jwk, Jwks};

        // A throwaway 2048-bit RSA test key (generated for these tests only).
        const PRIVATE_PEM: &str = include_str!("../tests/data/rsa-test-key.pem");
        const N: &str = include_str!("../tests/data/rsa-test-key.n");

        fn jwks() -> Jwks {
            Jwks {
                keys: vec![Jwk {
                    kty: "RSA".into(),
                    crv: None,
                    x: None,
                    kid: Some("bf-1".into()),
                    alg: None,
                    use_: Some("sig".into()),
                    n: Some(N.trim().into()),
                    e: Some("AQAB".into()),
                    endorsements: Some(vec!["msteams".into()]),
                }],
            }
        }

        fn rs_token(kid: &str, alg: jsonwebtoken::Algorithm) -> String {
            let mut h = jsonwebtoken::Header::new(alg);
            h.kid = Some(kid.into());
            let key = jsonwebtoken::EncodingKey::from_rsa_pem(PRIVATE_PEM.as_bytes()).unwrap();
            jsonwebtoken::encode(
                &h,
                &json!({"iss":"https://api.botframework.com","aud":"app"}),
                &key,
            )
            .unwrap()
        }

        #[test]
        fn verifies_rs256_from_jwks() {
            let set = jwks();
            let t = rs_token("bf-1", jsonwebtoken::Algorithm::RS256);
            let (d, key) = verify_rs256(&t, &set).unwrap();
            assert_eq!(d.claims::<Value>().unwrap()["aud"], "app");
            assert_eq!(
                key.endorsements.as_deref(),
                Some(&["msteams".to_string()][..])
            );
            assert!(
                verify_rs256(&rs_token("other", jsonwebtoken::Algorithm::RS256), &set).is_err()
            );
            assert!(verify_rs256(&rs_token("bf-1", jsonwebtoken::Algorithm::RS384), &set).is_err());
            let parts: Vec<&str> = t.split('.').collect();
            let forged = format!("{}.{}.{}", parts[0], b64url(br#"{"aud":"evil"}"#), parts[2]);
            assert!(verify_rs256(&forged, &set).is_err());
            // An EdDSA token is refused by the RS256 verifier and vice versa.
            let ed = sign_eddsa(&key_for_rs(), &json!({})).unwrap();
            assert!(verify_rs256(&ed, &set).is_err());
        }

        fn key_for_rs() -> SigningKey {
            SigningKey::from_seed(&[9; 32])
        }
    }
}
