//! Canonical JSON (RFC 8785, JCS), hashing and the base64/hex encodings used on the wire.
//!
//! JCS comes from `serde_json_canonicalizer`: it renders every number as an IEEE-754 double with
//! the ECMAScript algorithm (ryu-js), so `1`, `1.0` and `1e0` all become `1` and `1e21` becomes
//! `1e+21`, and it sorts object members by their UTF-16 code units, as the RFC requires.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// RFC 8785 canonical JSON of any serializable value.
pub fn jcs<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json_canonicalizer::to_vec(value)
        .map_err(|e| Error::Crypto(format!("canonical JSON: {e}")))
}

/// RFC 8785 canonical JSON as text.
pub fn jcs_string<T: Serialize>(value: &T) -> Result<String> {
    String::from_utf8(jcs(value)?).map_err(|e| Error::Crypto(e.to_string()))
}

/// Parses a JSON request body, refusing duplicate object keys at any depth (400, like any
/// malformed JSON). serde_json keeps the last of duplicate keys, other parsers the first: a
/// body that means one thing here and another to the agent, a proxy or a reviewer's tool is
/// refused rather than guessed at. Nesting is bounded by serde_json's recursion limit (128).
pub fn parse_json(body: &[u8]) -> Result<serde_json::Value> {
    let value = serde_json::from_slice(body)?;
    serde_json::from_slice::<NoDuplicateKeys>(body)?;
    Ok(value)
}

/// Walks a JSON document and fails on the first object key seen twice in one object.
struct NoDuplicateKeys;

impl<'de> serde::Deserialize<'de> for NoDuplicateKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(NoDuplicateKeys)
    }
}

impl<'de> serde::de::Visitor<'de> for NoDuplicateKeys {
    type Value = NoDuplicateKeys;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> std::result::Result<Self, E> {
        Ok(self)
    }

    fn visit_i64<E>(self, _: i64) -> std::result::Result<Self, E> {
        Ok(self)
    }

    fn visit_u64<E>(self, _: u64) -> std::result::Result<Self, E> {
        Ok(self)
    }

    fn visit_f64<E>(self, _: f64) -> std::result::Result<Self, E> {
        Ok(self)
    }

    fn visit_str<E>(self, _: &str) -> std::result::Result<Self, E> {
        Ok(self)
    }

    fn visit_unit<E>(self) -> std::result::Result<Self, E> {
        Ok(self)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<Self, A::Error> {
        while seq.next_element::<NoDuplicateKeys>()?.is_some() {}
        Ok(self)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Self, A::Error> {
        let mut seen = std::collections::BTreeSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if seen.contains(&key) {
                return Err(serde::de::Error::custom(format_args!(
                    "duplicate key {key:?}"
                )));
            }
            map.next_value::<NoDuplicateKeys>()?;
            seen.insert(key);
        }
        Ok(self)
    }
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(sha256(data))
}

pub fn b64url(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

pub fn b64url_decode(text: &str) -> Result<Vec<u8>> {
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|e| Error::invalid("base64url", e.to_string()))
}

pub fn b64_std(data: &[u8]) -> String {
    STANDARD.encode(data)
}

pub fn b64_std_decode(text: &str) -> Result<Vec<u8>> {
    STANDARD
        .decode(text.trim())
        .map_err(|e| Error::invalid("base64", e.to_string()))
}

/// A fresh random identifier: `prefix` + 26 characters of lowercase base32 (128 bits).
pub fn random_id(prefix: &str) -> Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| Error::Crypto(format!("random: {e}")))?;
    Ok(format!("{prefix}{}", base32(&bytes)))
}

/// Random bytes from the platform (wasi:random on wasm32-wasip2).
pub fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| Error::Crypto(format!("random: {e}")))?;
    Ok(bytes)
}

fn base32(data: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
    let mut out = String::new();
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &b in data {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn canon(text: &str) -> String {
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        jcs_string(&v).unwrap()
    }

    #[test]
    fn jcs_numbers_follow_ecmascript() {
        // RFC 8785 section 3.2.2.3 and appendix B samples.
        assert_eq!(canon("[1.0, 1e0, 10, -0, 0.0]"), "[1,1,10,0,0]");
        assert_eq!(
            canon("[1e21, 1e20, 1e-7, 0.000001]"),
            "[1e+21,100000000000000000000,1e-7,0.000001]"
        );
        assert_eq!(
            canon("[333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001]"),
            "[333333333.3333333,1e+30,4.5,0.002,1e-27]"
        );
        assert_eq!(
            canon("[9007199254740992, 9007199254740993]"),
            "[9007199254740992,9007199254740992]"
        );
        assert_eq!(
            canon("[-1.5e-10, 5e-324, 1.7976931348623157e308]"),
            "[-1.5e-10,5e-324,1.7976931348623157e+308]"
        );
    }

    #[test]
    fn jcs_sorts_by_utf16_and_escapes_minimally() {
        // RFC 8785 section 3.2.3 sorting example: keys sort by UTF-16 code units, so the
        // astral-plane emoji (a surrogate pair, 0xD83D…) sorts before U+FB33 although its
        // code point is larger.
        let input = r#"{"\u20ac":"Euro Sign","\r":"Carriage Return","\ufb33":"Hebrew Letter Dalet With Dagesh","1":"One","\ud83d\ude00":"Emoji: Grinning Face","\u0080":"Control","\u00f6":"Latin Small Letter O With Diaeresis"}"#;
        let out = canon(input);
        let keys: Vec<&str> = [
            "\r",
            "1",
            "\u{80}",
            "\u{f6}",
            "\u{20ac}",
            "\u{1f600}",
            "\u{fb33}",
        ]
        .to_vec();
        let mut pos = 0;
        for k in keys {
            let needle = serde_json::to_string(k).unwrap();
            let at = out[pos..]
                .find(&needle)
                .unwrap_or_else(|| panic!("{k:?} out of order in {out}"));
            pos += at + needle.len();
        }
        assert_eq!(
            canon(r#"{"b":"\u00e9\u000f\"\\/","a":[]}"#),
            "{\"a\":[],\"b\":\"\u{e9}\\u000f\\\"\\\\/\"}"
        );
        assert_eq!(
            canon(r#"{ "z" : { "y":true, "x":null } , "a" : 1 }"#),
            r#"{"a":1,"z":{"x":null,"y":true}}"#
        );
    }

    #[test]
    fn jcs_of_structs_matches_values() {
        #[derive(Serialize)]
        struct S {
            zeta: u32,
            alpha: &'static str,
        }
        assert_eq!(
            jcs_string(&S {
                zeta: 1,
                alpha: "a"
            })
            .unwrap(),
            jcs_string(&json!({"alpha":"a","zeta":1})).unwrap()
        );
    }

    #[test]
    fn parse_json_refuses_duplicate_keys_at_any_depth() {
        let ok = parse_json(br#"{"a":1,"b":{"a":[{"a":1},{"a":2}]},"c":[1,"x",null,true,1.5]}"#)
            .unwrap();
        assert_eq!(ok["b"]["a"][1]["a"], 2);
        for body in [
            &br#"{"action":"db.query","action":"db.drop"}"#[..],
            br#"{"r":{"id":"a","type":"T","id":"b"}}"#,
            br#"{"c":[{"x":1},{"k":{"y":1,"y":1}}]}"#,
            // The same key once escaped.
            br#"{"action":"a","\u0061ction":"b"}"#,
        ] {
            let e = parse_json(body).unwrap_err();
            assert_eq!(e.status(), 400, "{e}");
            assert!(e.to_string().contains("duplicate key"), "{e}");
        }
        // Malformed and too deeply nested JSON stay 400s, never a stack overflow.
        assert_eq!(parse_json(b"{").unwrap_err().status(), 400);
        assert_eq!(parse_json(&[b'['; 100_000]).unwrap_err().status(), 400);
        assert_eq!(parse_json(b"\"\xff\"").unwrap_err().status(), 400);
    }

    #[test]
    fn encodings() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(b64url(&[0xfb, 0xff]), "-_8");
        assert_eq!(b64url_decode("-_8").unwrap(), vec![0xfb, 0xff]);
        assert!(b64url_decode("+/8=").is_err());
        let id = random_id("req_").unwrap();
        assert_eq!(id.len(), 4 + 26);
        assert_ne!(id, random_id("req_").unwrap());
        assert_eq!(base32(&[0xff; 5]), "zzzzzzzz");
    }
}
