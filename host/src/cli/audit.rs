//! `countersign audit verify <file.ndjson> --jwks <url|file>`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::Value;
use shared::audit::{verify_export, Head, Report, VerifyOptions};
use shared::crypto::{Jwks, KeySet};

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Verify an export of GET /v1/audit offline: hashes, signatures, sequence and chain.
    /// Prints OK, or names the first broken record and exits 1.
    Verify(VerifyArgs),
}

#[derive(Args)]
pub struct VerifyArgs {
    /// The export (NDJSON, one record a line); `-` reads standard input.
    file: PathBuf,
    /// The public keys: a URL (e.g. http://127.0.0.1:3000/v1/keys) or a JWKS file.
    #[arg(long, value_name = "URL|FILE")]
    jwks: String,
    /// The signed head (GET /v1/audit/head) as a URL or file, so an export cut short is caught.
    /// A URL is fetched with the bearer token in COUNTERSIGN_ADMIN_TOKEN when that is set.
    #[arg(long, value_name = "URL|FILE")]
    head: Option<String>,
    /// Accept an export that starts after seq 1 (GET /v1/audit?after=N); its first link to
    /// the earlier records cannot be checked.
    #[arg(long)]
    partial: bool,
}

const ADMIN_TOKEN_ENV: &str = "COUNTERSIGN_ADMIN_TOKEN";

pub fn run(command: AuditCommand) -> Result<ExitCode> {
    let AuditCommand::Verify(args) = command;
    let export = super::read_input(&args.file)?;
    let jwks = Jwks::parse(&fetch(&args.jwks, None)?)
        .with_context(|| format!("{} is not a JWKS", args.jwks))?;
    let head = match &args.head {
        Some(src) => {
            let token = std::env::var(ADMIN_TOKEN_ENV).ok();
            let text = fetch(src, token.as_deref())?;
            Some(
                serde_json::from_str::<Head>(&text)
                    .with_context(|| format!("{src} is not an audit head"))?,
            )
        }
        None => None,
    };
    let (ok, text) = verify(&export, &jwks, head.as_ref(), args.partial)?;
    print!("{text}");
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Reads `src` as a URL (http or https) or a file path.
fn fetch(src: &str, bearer: Option<&str>) -> Result<String> {
    if !(src.starts_with("http://") || src.starts_with("https://")) {
        return std::fs::read_to_string(src).with_context(|| format!("cannot read {src}"));
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        // The system's roots: a deployment behind an internal CA is the usual case.
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::PlatformVerifier)
                .build(),
        )
        .build()
        .into();
    let mut request = agent.get(src).header("accept", "application/json");
    if let Some(t) = bearer {
        request = request.header("authorization", format!("Bearer {t}"));
    }
    request
        .call()
        .and_then(|mut r| r.body_mut().read_to_string())
        .with_context(|| format!("cannot fetch {src}"))
}

/// Verifies `export`; returns whether it is intact and the text to print.
fn verify(export: &str, jwks: &Jwks, head: Option<&Head>, partial: bool) -> Result<(bool, String)> {
    let keys: KeySet = jwks.ed25519_keys();
    if keys.is_empty() {
        bail!("the JWKS holds no usable Ed25519 key");
    }
    if let Some(h) = head {
        if let Err(e) = h.verify(&keys) {
            return Ok((false, format!("BROKEN: the audit head: {e}\n")));
        }
    }
    let report = verify_export(
        export,
        &keys,
        VerifyOptions {
            expected_head: head.map(|h| (h.seq, h.hash.as_str())),
            allow_partial: partial,
        },
    );
    Ok((report.ok(), describe(export, &report, head)))
}

fn describe(export: &str, r: &Report, head: Option<&Head>) -> String {
    let range = match (r.first_seq, r.last_seq) {
        (Some(a), Some(b)) => format!(" (seq {a} to {b})"),
        _ => String::new(),
    };
    let Some(b) = &r.broken else {
        let mut out = format!("OK: {} records verified{range}", r.verified);
        if let Some(hash) = &r.last_hash {
            out.push_str(&format!("; last hash {hash}"));
        }
        if !r.anchored {
            out.push_str("; partial export: its link to earlier records is not checked");
        }
        if let Some(h) = head {
            out.push_str(&format!("; matches the signed head (seq {})", h.seq));
        }
        out.push('\n');
        return out;
    };
    // The record type helps find the record in the trail; the line may be unreadable.
    let type_ = b
        .line
        .checked_sub(1)
        .and_then(|i| export.lines().nth(i))
        .and_then(|l| serde_json::from_str::<Value>(l).ok())
        .and_then(|v| v.get("type")?.as_str().map(str::to_string));
    let what = match (b.seq, type_) {
        (Some(s), Some(t)) => format!(" (seq {s}, {t})"),
        (Some(s), None) => format!(" (seq {s})"),
        (None, Some(t)) => format!(" ({t})"),
        (None, None) => String::new(),
    };
    let kind = serde_json::to_value(b.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{:?}", b.kind));
    format!(
        "BROKEN: line {}{what}: {kind}: {}\n{} records before it verified{range}\n",
        b.line, b.detail, r.verified
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use shared::audit::{AuditEvent, AuditLog, AuditRecord};
    use shared::crypto::SigningKey;
    use shared::store::MemoryKv;
    use shared::Timestamp;

    fn chain(n: usize) -> (Vec<String>, SigningKey, Head) {
        let kv = MemoryKv::new();
        let log = AuditLog::new(&kv);
        let key = SigningKey::from_seed(&[7; 32]);
        for i in 0..n {
            let ev = AuditEvent::new(
                if i % 2 == 0 {
                    "action.requested"
                } else {
                    "vote.cast"
                },
                Some("req_1"),
                "etl-bot",
                json!({ "i": i }),
            );
            log.append(&ev, Timestamp(1_800_000_000 + i as i64), &key)
                .unwrap();
        }
        let lines = log
            .read(0, 100)
            .unwrap()
            .iter()
            .map(AuditRecord::to_line)
            .collect();
        let head = log.head(Timestamp(1_800_000_100), &key).unwrap();
        (lines, key, head)
    }

    #[test]
    fn intact_export_is_ok() {
        let (lines, key, head) = chain(4);
        let (ok, text) = verify(&lines.join("\n"), &key.jwks(), None, false).unwrap();
        assert!(ok, "{text}");
        assert!(text.starts_with("OK: 4 records verified (seq 1 to 4); last hash "));
        assert!(text.contains(&head.hash));
        let (ok, text) = verify(&lines.join("\n"), &key.jwks(), Some(&head), false).unwrap();
        assert!(
            ok && text.contains("matches the signed head (seq 4)"),
            "{text}"
        );
        // A partial export needs --partial.
        let tail = lines[2..].join("\n");
        assert!(!verify(&tail, &key.jwks(), None, false).unwrap().0);
        let (ok, text) = verify(&tail, &key.jwks(), None, true).unwrap();
        assert!(ok && text.contains("partial export"), "{text}");
    }

    #[test]
    fn edited_line_is_named() {
        let (mut lines, key, _) = chain(4);
        lines[1] = lines[1].replace("\"i\":1", "\"i\":9");
        let (ok, text) = verify(&lines.join("\n"), &key.jwks(), None, false).unwrap();
        assert!(!ok);
        assert!(
            text.starts_with("BROKEN: line 2 (seq 2, vote.cast): edited: "),
            "{text}"
        );
        assert!(text.contains("1 records before it verified (seq 1 to 1)"));
    }

    #[test]
    fn deleted_reordered_and_truncated_lines_are_named() {
        let (lines, key, head) = chain(5);
        let mut t = lines.clone();
        t.remove(2);
        let (ok, text) = verify(&t.join("\n"), &key.jwks(), None, false).unwrap();
        assert!(!ok && text.starts_with("BROKEN: line 3 (seq 4, vote.cast): missing"));
        let mut t = lines.clone();
        t.swap(1, 2);
        let (ok, text) = verify(&t.join("\n"), &key.jwks(), None, false).unwrap();
        assert!(!ok && text.starts_with("BROKEN: line 2 (seq 3, action.requested): reordered"));
        // The last line removed: only the signed head tells.
        let cut = lines[..4].join("\n");
        assert!(verify(&cut, &key.jwks(), None, false).unwrap().0);
        let (ok, text) = verify(&cut, &key.jwks(), Some(&head), false).unwrap();
        assert!(
            !ok && text.starts_with("BROKEN: line 5 (seq 5): truncated"),
            "{text}"
        );
        // A head signed by another key is refused.
        let other = SigningKey::from_seed(&[8; 32]);
        let forged = Head::sign(head.seq, &head.hash, head.ts, &other).unwrap();
        let (ok, text) = verify(&lines.join("\n"), &key.jwks(), Some(&forged), false).unwrap();
        assert!(!ok && text.starts_with("BROKEN: the audit head"), "{text}");
    }

    #[test]
    fn wrong_or_empty_jwks() {
        let (lines, _, _) = chain(2);
        let other = SigningKey::from_seed(&[9; 32]);
        let (ok, text) = verify(&lines.join("\n"), &other.jwks(), None, false).unwrap();
        assert!(!ok && text.contains("unknown_key"), "{text}");
        assert!(verify(&lines.join("\n"), &Jwks::default(), None, false).is_err());
    }
}
