//! Ed25519 keys: the `signing_key` variable, key ids, and the JWKS of `GET /v1/keys`.
//!
//! `signing_key` = standard base64 (padded) of a 32-byte Ed25519 seed. `kid` = the first 16
//! hex characters of SHA-256 of the 32-byte public key. The JWKS publishes OKP / Ed25519 keys
//! (`x` = base64url public key), so any JWT library verifies grants offline.
//!
//! Crate choice: `ed25519-dalek` 2 (RustCrypto / dalek, pure Rust, builds for wasm32-wasip2,
//! the most used Ed25519 implementation in Rust; it shares `sha2` 0.10 with the rest of the
//! workspace). See [`crate::jws`] for why the JWS layer on top of it is our own.

use ed25519_dalek::Signer as _;
use serde::{Deserialize, Serialize};

use crate::canon::{b64_std, b64_std_decode, b64url, b64url_decode, sha256};
use crate::error::{Error, Result};

/// The service's signing key (grants, audit records, signed audit head).
#[derive(Clone)]
pub struct SigningKey {
    key: ed25519_dalek::SigningKey,
    kid: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// From the `signing_key` variable: standard base64 (padded) of a 32-byte seed.
    pub fn from_base64_seed(text: &str) -> Result<SigningKey> {
        Ok(SigningKey::from_seed(&seed_from_base64(text)?))
    }

    pub fn from_seed(seed: &[u8; 32]) -> SigningKey {
        let key = ed25519_dalek::SigningKey::from_bytes(seed);
        let kid = kid_of(key.verifying_key().as_bytes());
        SigningKey { key, kid }
    }

    /// A new random key (for `countersign keys generate`).
    pub fn generate() -> Result<SigningKey> {
        Ok(SigningKey::from_seed(&crate::canon::random_bytes::<32>()?))
    }

    /// The seed as the `signing_key` variable expects it.
    pub fn to_base64_seed(&self) -> String {
        b64_std(self.key.as_bytes())
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn public_key_bytes(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey {
            key: self.key.verifying_key(),
            kid: self.kid.clone(),
        }
    }

    pub fn jwk(&self) -> Jwk {
        self.verifying_key().jwk()
    }

    /// The JWKS of `GET /v1/keys` with this key.
    pub fn jwks(&self) -> Jwks {
        Jwks {
            keys: vec![self.jwk()],
        }
    }
}

/// The seed in the `signing_key` variable (standard base64, padded, of 32 bytes). Any 32 bytes
/// make a key, so this checks the variable without the cost of deriving the key.
pub fn seed_from_base64(text: &str) -> Result<[u8; 32]> {
    let bytes = b64_std_decode(text)
        .map_err(|_| Error::Config("signing_key is not standard base64".into()))?;
    bytes
        .try_into()
        .map_err(|_| Error::Config("signing_key must encode exactly 32 bytes".into()))
}

/// `kid` = first 16 hex characters of SHA-256 of the public key bytes.
pub fn kid_of(public_key: &[u8]) -> String {
    hex::encode(sha256(public_key))[..16].to_string()
}

/// An Ed25519 public key with its kid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyingKey {
    key: ed25519_dalek::VerifyingKey,
    kid: String,
}

impl VerifyingKey {
    pub fn from_bytes(public_key: &[u8; 32]) -> Result<VerifyingKey> {
        let key = ed25519_dalek::VerifyingKey::from_bytes(public_key)
            .map_err(|_| Error::invalid("x", "not an Ed25519 public key"))?;
        Ok(VerifyingKey {
            key,
            kid: kid_of(public_key),
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Strict verification (rejects non-canonical and small-order signatures / keys).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(sig) = ed25519_dalek::Signature::from_slice(signature) else {
            return false;
        };
        self.key.verify_strict(message, &sig).is_ok()
    }

    pub fn jwk(&self) -> Jwk {
        Jwk {
            kty: "OKP".into(),
            crv: Some("Ed25519".into()),
            x: Some(b64url(self.key.as_bytes())),
            kid: Some(self.kid.clone()),
            alg: Some("EdDSA".into()),
            use_: Some("sig".into()),
            n: None,
            e: None,
            endorsements: None,
        }
    }
}

/// One JSON Web Key. Ed25519 keys (`kty` OKP) are what countersign publishes; RSA members
/// (`n`, `e`) and `endorsements` are kept so the same type reads Bot Framework key sets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endorsements: Option<Vec<String>>,
}

/// A JSON Web Key Set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

impl Jwks {
    pub fn parse(text: &str) -> Result<Jwks> {
        serde_json::from_str(text).map_err(|e| Error::invalid("jwks", e.to_string()))
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("jwks serializes")
    }

    /// The Ed25519 keys of this set, by kid. Keys whose `kid` is not the one derived from
    /// their `x` are skipped: a kid is a fingerprint here, never a free label.
    pub fn ed25519_keys(&self) -> KeySet {
        let mut keys = Vec::new();
        for k in &self.keys {
            if k.kty != "OKP" || k.crv.as_deref() != Some("Ed25519") {
                continue;
            }
            let Some(x) = k.x.as_deref() else { continue };
            let Ok(bytes) = b64url_decode(x) else {
                continue;
            };
            let Ok(arr) = <[u8; 32]>::try_from(bytes.as_slice()) else {
                continue;
            };
            let Ok(vk) = VerifyingKey::from_bytes(&arr) else {
                continue;
            };
            if k.kid.as_deref().is_some_and(|kid| kid != vk.kid) {
                continue;
            }
            keys.push(vk);
        }
        KeySet { keys }
    }
}

/// Ed25519 public keys by kid: what verifies grants and audit records.
#[derive(Clone, Debug, Default)]
pub struct KeySet {
    keys: Vec<VerifyingKey>,
}

impl KeySet {
    pub fn new(keys: Vec<VerifyingKey>) -> KeySet {
        KeySet { keys }
    }

    pub fn get(&self, kid: &str) -> Option<&VerifyingKey> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl From<&SigningKey> for KeySet {
    fn from(k: &SigningKey) -> KeySet {
        KeySet {
            keys: vec![k.verifying_key()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 8032 section 7.1, test 1.
    const SEED_HEX: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
    const PUB_HEX: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
    const SIG_HEX: &str = "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b";

    fn rfc_key() -> SigningKey {
        SigningKey::from_seed(&hex::decode(SEED_HEX).unwrap().try_into().unwrap())
    }

    #[test]
    fn rfc8032_vector_and_kid() {
        let k = rfc_key();
        assert_eq!(hex::encode(k.public_key_bytes()), PUB_HEX);
        assert_eq!(hex::encode(k.sign(b"")), SIG_HEX);
        assert_eq!(
            k.kid(),
            &crate::canon::sha256_hex(&hex::decode(PUB_HEX).unwrap())[..16]
        );
        assert_eq!(k.kid().len(), 16);
        assert!(k
            .verifying_key()
            .verify(b"", &hex::decode(SIG_HEX).unwrap()));
        assert!(!k
            .verifying_key()
            .verify(b"x", &hex::decode(SIG_HEX).unwrap()));
        assert!(!k.verifying_key().verify(b"", &[0u8; 10]));
    }

    #[test]
    fn signing_key_variable() {
        let k = rfc_key();
        let text = k.to_base64_seed();
        assert!(text.ends_with('='), "standard padded base64");
        assert_eq!(SigningKey::from_base64_seed(&text).unwrap().kid(), k.kid());
        assert!(matches!(
            SigningKey::from_base64_seed("not base64!"),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            SigningKey::from_base64_seed(&b64_std(&[1u8; 31])),
            Err(Error::Config(_))
        ));
        assert!(
            !format!("{k:?}").contains(&text),
            "debug output hides the seed"
        );
        let g = SigningKey::generate().unwrap();
        assert_ne!(g.kid(), k.kid());
    }

    #[test]
    fn jwks_round_trip() {
        let k = rfc_key();
        let jwks = k.jwks();
        let text = jwks.to_json();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["keys"][0]["kty"], "OKP");
        assert_eq!(v["keys"][0]["crv"], "Ed25519");
        assert_eq!(v["keys"][0]["alg"], "EdDSA");
        assert_eq!(v["keys"][0]["use"], "sig");
        assert_eq!(v["keys"][0]["kid"], k.kid());
        assert_eq!(
            b64url_decode(v["keys"][0]["x"].as_str().unwrap()).unwrap(),
            k.public_key_bytes()
        );
        let set = Jwks::parse(&text).unwrap().ed25519_keys();
        assert!(set.get(k.kid()).is_some());
        // A key published under a kid that is not its fingerprint is ignored.
        let mut forged = jwks.clone();
        forged.keys[0].kid = Some("0000000000000000".into());
        assert!(forged.ed25519_keys().is_empty());
    }
}
