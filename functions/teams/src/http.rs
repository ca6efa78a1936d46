//! Inbound: the Bot Framework token, verified before the activity is read. RS256 against the
//! JWKS named by the OpenID metadata at `teams_openid_url`, cached in the key-value store for
//! at most 24 hours and fetched again on an unknown `kid` (at most every few seconds).

use adapter::{header, outbound, SpinKv};
use serde_json::Value;
use shared::crypto::Jwks;
use shared::store;
use shared::teams::{self, CachedJwks};
use shared::{Error, Result, Timestamp};
use spin_sdk::http::Request;

use crate::config;

/// `teams:jwks`: the Bot Framework's signing keys and when they were fetched.
const JWKS_KEY: &str = "teams:jwks";

/// A verified token: its claims and the signing key's endorsements.
pub struct Verified {
    pub claims: Value,
    pub endorsements: Option<Vec<String>>,
}

/// Verifies the bearer token of `req` (signature, `iss`, `aud`, `exp`, `nbf`). `Unauthorized`
/// for any token problem; `Unavailable` when the keys cannot be had (fail closed).
pub fn verify(req: &Request, kv: &SpinKv) -> Result<Verified> {
    let app_id = config::app_id().unwrap_or_default();
    let token = teams::bearer(header(req, "authorization"))?;
    let kid =
        teams::token_kid(token)?.ok_or_else(|| Error::Unauthorized("token has no kid".into()))?;
    let now = Timestamp::now();
    let keys = keys_for(kv, &kid, now)?;
    let (claims, endorsements) = teams::verify_token(token, &keys.jwks, &app_id, now)?;
    Ok(Verified {
        claims,
        endorsements,
    })
}

/// The cached keys when fresh and knowing `kid` (or when they were fetched too recently to
/// fetch again); else freshly fetched ones.
fn keys_for(kv: &SpinKv, kid: &str, now: Timestamp) -> Result<CachedJwks> {
    let cached = store::get_json::<CachedJwks>(kv, JWKS_KEY)?.filter(|c| c.fresh(now));
    match cached {
        Some(c) if c.knows(kid) || !c.may_refetch(now) => Ok(c),
        Some(c) => Ok(fetch(kv, now).unwrap_or_else(|e| {
            eprintln!("countersign: Bot Framework keys not refreshed: {e}");
            c
        })),
        None => fetch(kv, now),
    }
}

fn get(url: &str, what: &str) -> Result<Vec<u8>> {
    let reply = outbound::send("GET", url, &[("accept", "application/json")], &[])
        .map_err(|e| Error::Unavailable(format!("{what}: {e}")))?;
    if !reply.ok() {
        return Err(Error::Unavailable(format!(
            "{what} answered {}",
            reply.status
        )));
    }
    Ok(reply.body)
}

fn fetch(kv: &SpinKv, now: Timestamp) -> Result<CachedJwks> {
    let metadata = get(&config::openid_url(), "Bot Framework OpenID metadata")?;
    let uri = teams::jwks_uri(&metadata).map_err(Error::Unavailable)?;
    let body = get(&uri, "Bot Framework keys")?;
    let text = String::from_utf8(body)
        .map_err(|_| Error::Unavailable("Bot Framework keys are not UTF-8".into()))?;
    let jwks =
        Jwks::parse(&text).map_err(|e| Error::Unavailable(format!("Bot Framework keys: {e}")))?;
    let cached = CachedJwks {
        fetched_at: now.unix(),
        jwks,
    };
    if let Err(e) = store::set_json(kv, JWKS_KEY, &cached) {
        eprintln!("countersign: could not cache the Bot Framework keys: {e}");
    }
    Ok(cached)
}
