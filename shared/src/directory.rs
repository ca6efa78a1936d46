//! `config/directory.toml`: agents, approvers and groups; bearer-token checks; callback URL
//! prefixes; identity resolution across channels.
//!
//! ```toml
//! [[agent]]
//! id = "etl-bot"
//! owner = "alice"
//! groups = ["pipelines"]
//! token_sha256 = ["<hex SHA-256 of a bearer token>"]
//! callback_prefixes = ["https://agent.example/hooks/"]
//!
//! [[approver]]
//! id = "bob"
//! name = "Bob Example"
//! slack = ["T0123/U0456"]
//! teams = ["<tenant id>/<AAD object id>"]
//! token_sha256 = ["<hex SHA-256 of an API token>"]
//!
//! [groups]
//! dba = ["bob", "carol"]
//! ```
//!
//! Loading is strict (fail closed): unknown keys, duplicate ids, a token hash listed twice,
//! malformed hashes, channel identities or prefixes, and groups naming unknown approvers are
//! errors that say where.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Deserialize;
use subtle::{ConditionallySelectable, ConstantTimeEq};
use url::Url;

use crate::canon::sha256;
use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agent {
    pub id: String,
    /// A person id: never an approver of this agent's requests.
    pub owner: String,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub token_sha256: Vec<String>,
    #[serde(default)]
    pub callback_prefixes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approver {
    pub id: String,
    #[serde(default)]
    pub name: String,
    /// `"<team id>/<user id>"`, one per Slack workspace.
    #[serde(default)]
    pub slack: Vec<String>,
    /// `"<tenant id>/<AAD object id>"`.
    #[serde(default)]
    pub teams: Vec<String>,
    #[serde(default)]
    pub token_sha256: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DirectoryFile {
    #[serde(default)]
    agent: Vec<Agent>,
    #[serde(default)]
    approver: Vec<Approver>,
    #[serde(default)]
    groups: BTreeMap<String, Vec<String>>,
}

/// Whose token matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Principal {
    Agent(usize),
    Approver(usize),
}

/// The parsed directory. Build it once per request ([`Directory::parse`] /
/// [`Directory::load`]) and query it.
#[derive(Debug, Clone)]
pub struct Directory {
    agents: Vec<Agent>,
    approvers: Vec<Approver>,
    groups: BTreeMap<String, Vec<String>>,
    /// Every token hash with its owner, scanned in full on each check.
    tokens: Vec<([u8; 32], Principal)>,
    slack: HashMap<String, usize>,
    teams: HashMap<String, usize>,
}

impl Directory {
    /// Reads and parses a directory file (`/config/directory.toml` in a component).
    pub fn load(path: impl AsRef<std::path::Path>) -> Result<Directory> {
        let path = path.as_ref();
        let bytes = std::fs::read(path)
            .map_err(|e| Error::Config(format!("directory {}: {e}", path.display())))?;
        Directory::from_file(path, &bytes)
    }

    /// Parses the bytes of the directory file at `path` (errors name the file).
    pub fn from_file(path: &std::path::Path, bytes: &[u8]) -> Result<Directory> {
        let text = crate::error::file_text(bytes, "directory", path)?;
        Directory::parse(text).map_err(|e| crate::error::in_file(e, "directory", path))
    }

    pub fn parse(text: &str) -> Result<Directory> {
        let file: DirectoryFile = toml::from_str(text)
            .map_err(|e| Error::Config(format!("directory: {}", e.to_string().trim_end())))?;
        let bad = |m: String| Error::Config(format!("directory: {m}"));
        let mut ids = BTreeSet::new();
        let mut tokens = Vec::new();
        let mut seen_hashes = BTreeSet::new();
        let mut add_hash = |hex_text: &str, who: Principal, label: &str| -> Result<()> {
            let bytes = parse_hash(hex_text).ok_or_else(|| {
                bad(format!(
                    "{label}: token_sha256 {hex_text:?} is not 64 hex characters"
                ))
            })?;
            if !seen_hashes.insert(bytes) {
                return Err(bad(format!(
                    "{label}: token_sha256 {hex_text:?} is listed more than once"
                )));
            }
            tokens.push((bytes, who));
            Ok(())
        };
        for (i, a) in file.agent.iter().enumerate() {
            let label = format!("agent {:?}", a.id);
            check_id(&a.id).map_err(|m| bad(format!("agent #{}: id {m}", i + 1)))?;
            if !ids.insert(a.id.clone()) {
                return Err(bad(format!("{label} is defined more than once")));
            }
            check_id(&a.owner).map_err(|m| bad(format!("{label}: owner {m}")))?;
            if a.owner == a.id {
                return Err(bad(format!("{label}: an agent cannot own itself")));
            }
            for h in &a.token_sha256 {
                add_hash(h, Principal::Agent(i), &label)?;
            }
            for p in &a.callback_prefixes {
                // A syntactic check only, so that components which never check a callback
                // URL do not link the URL parser (~200 KB of wasm with its IDNA tables);
                // `validate_callback_prefixes` parses them fully (intake, the CLI).
                prefix_syntax(p)
                    .map_err(|m| bad(format!("{label}: callback prefix {p:?}: {m}")))?;
            }
        }
        let mut slack = HashMap::new();
        let mut teams = HashMap::new();
        for (i, p) in file.approver.iter().enumerate() {
            let label = format!("approver {:?}", p.id);
            check_id(&p.id).map_err(|m| bad(format!("approver #{}: id {m}", i + 1)))?;
            if !ids.insert(p.id.clone()) {
                return Err(bad(format!(
                    "{label}: id is already used by another agent or approver"
                )));
            }
            for h in &p.token_sha256 {
                add_hash(h, Principal::Approver(i), &label)?;
            }
            for s in &p.slack {
                let key = pair_key(s).ok_or_else(|| {
                    bad(format!(
                        "{label}: slack {s:?} is not \"<team id>/<user id>\""
                    ))
                })?;
                if slack.insert(key, i).is_some() {
                    return Err(bad(format!(
                        "{label}: slack identity {s:?} belongs to two approvers"
                    )));
                }
            }
            for t in &p.teams {
                let key = pair_key(&t.to_ascii_lowercase()).ok_or_else(|| {
                    bad(format!(
                        "{label}: teams {t:?} is not \"<tenant id>/<AAD object id>\""
                    ))
                })?;
                if teams.insert(key, i).is_some() {
                    return Err(bad(format!(
                        "{label}: teams identity {t:?} belongs to two approvers"
                    )));
                }
            }
        }
        for (g, members) in &file.groups {
            check_id(g).map_err(|m| bad(format!("group {g:?}: name {m}")))?;
            for m in members {
                if !file.approver.iter().any(|p| &p.id == m) {
                    return Err(bad(format!(
                        "group {g:?} lists {m:?}, who is not an approver"
                    )));
                }
            }
        }
        Ok(Directory {
            agents: file.agent,
            approvers: file.approver,
            groups: file.groups,
            tokens,
            slack,
            teams,
        })
    }

    /// Parses every agent's callback prefixes as URLs (scheme http(s), a host, no userinfo,
    /// query or fragment). Intake and `countersign` call it after loading.
    pub fn validate_callback_prefixes(&self) -> Result<()> {
        for a in &self.agents {
            for p in &a.callback_prefixes {
                parse_prefix(p).map_err(|m| {
                    Error::Config(format!(
                        "directory: agent {:?}: callback prefix {p:?}: {m}",
                        a.id
                    ))
                })?;
            }
        }
        Ok(())
    }

    pub fn agents(&self) -> &[Agent] {
        &self.agents
    }

    pub fn approvers(&self) -> &[Approver] {
        &self.approvers
    }

    pub fn agent(&self, id: &str) -> Option<&Agent> {
        self.agents.iter().find(|a| a.id == id)
    }

    pub fn approver(&self, id: &str) -> Option<&Approver> {
        self.approvers.iter().find(|a| a.id == id)
    }

    /// The agent whose `token_sha256` lists the SHA-256 of `token`.
    pub fn agent_by_token(&self, token: &str) -> Option<&Agent> {
        match self.principal_by_token(token)? {
            Principal::Agent(i) => self.agents.get(i),
            Principal::Approver(_) => None,
        }
    }

    /// The approver whose `token_sha256` lists the SHA-256 of `token`.
    pub fn approver_by_token(&self, token: &str) -> Option<&Approver> {
        match self.principal_by_token(token)? {
            Principal::Approver(i) => self.approvers.get(i),
            Principal::Agent(_) => None,
        }
    }

    /// Hashes the presented token once and compares it in constant time with every listed
    /// hash (no early exit), so timing reveals neither which hash nor how much of it matched.
    fn principal_by_token(&self, token: &str) -> Option<Principal> {
        if token.is_empty() {
            return None;
        }
        let presented = sha256(token.as_bytes());
        let mut found = subtle::Choice::from(0u8);
        let mut index: u32 = 0;
        for (i, (hash, _)) in self.tokens.iter().enumerate() {
            let eq = hash.ct_eq(&presented);
            index.conditional_assign(&(i as u32), eq);
            found |= eq;
        }
        if bool::from(found) {
            self.tokens.get(index as usize).map(|(_, p)| *p)
        } else {
            None
        }
    }

    /// The approver with Slack identity `team`/`user`.
    pub fn approver_by_slack(&self, team: &str, user: &str) -> Option<&Approver> {
        self.slack
            .get(&format!("{team}/{user}"))
            .and_then(|&i| self.approvers.get(i))
    }

    /// The approver with Teams identity `tenant`/`aad_object_id` (GUIDs compared case-insensitively).
    pub fn approver_by_teams(&self, tenant: &str, aad_object_id: &str) -> Option<&Approver> {
        self.teams
            .get(&format!("{tenant}/{aad_object_id}").to_ascii_lowercase())
            .and_then(|&i| self.approvers.get(i))
    }

    pub fn groups(&self) -> &BTreeMap<String, Vec<String>> {
        &self.groups
    }

    pub fn group_exists(&self, group: &str) -> bool {
        self.groups.contains_key(group)
    }

    pub fn group_members(&self, group: &str) -> &[String] {
        self.groups.get(group).map(|v| v.as_slice()).unwrap_or(&[])
    }

    pub fn is_member(&self, person: &str, group: &str) -> bool {
        self.group_members(group).iter().any(|m| m == person)
    }

    /// The directory person an identity names: `user:alice` → `alice`,
    /// `slack:T0123/U0456` → the approver with that Slack identity,
    /// `teams:<tenant>/<aad>` → the approver with that Teams identity, and an approver id as is.
    /// Anything else is returned unchanged (it matches no approver).
    pub fn resolve_person(&self, identity: &str) -> String {
        if let Some(rest) = identity.strip_prefix("slack:") {
            if let Some((team, user)) = rest.split_once('/') {
                if let Some(a) = self.approver_by_slack(team, user) {
                    return a.id.clone();
                }
            }
        }
        if let Some(rest) = identity.strip_prefix("teams:") {
            if let Some((tenant, aad)) = rest.split_once('/') {
                if let Some(a) = self.approver_by_teams(tenant, aad) {
                    return a.id.clone();
                }
            }
        }
        crate::model::on_behalf_of_person(identity).to_string()
    }
}

impl Agent {
    /// Checks `callback_url` against this agent's registered prefixes and returns the URL in
    /// normalized form (send to that one). The URL and the prefix are parsed (WHATWG rules,
    /// as the HTTP client will) and compared by scheme, host and effective port exactly, and
    /// by path prefix on the normalized path (dot segments resolved). Userinfo is refused
    /// (`https://agent.example@evil/`), and so is anything but http(s).
    pub fn check_callback_url(&self, callback_url: &str) -> Result<String> {
        let refuse = |m: &str| Error::invalid("callback_url", m.to_string());
        let url = Url::parse(callback_url).map_err(|e| refuse(&format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err(refuse("must be an http(s) URL"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(refuse("must not contain user information"));
        }
        if url.host().is_none() {
            return Err(refuse("must name a host"));
        }
        for p in &self.callback_prefixes {
            let Ok(prefix) = parse_prefix(p) else {
                continue;
            };
            if prefix_matches(&prefix, &url) {
                return Ok(url.to_string());
            }
        }
        Err(refuse(
            "does not start with one of the agent's registered callback prefixes",
        ))
    }
}

fn prefix_matches(prefix: &Url, url: &Url) -> bool {
    if prefix.scheme() != url.scheme()
        || prefix.host() != url.host()
        || prefix.port_or_known_default() != url.port_or_known_default()
    {
        return false;
    }
    let (pp, up) = (prefix.path(), url.path());
    if pp.ends_with('/') {
        up.starts_with(pp)
    } else {
        // "https://a/hooks" admits /hooks and /hooks/..., never /hooks-evil.
        up == pp
            || up
                .strip_prefix(pp)
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

fn parse_prefix(p: &str) -> std::result::Result<Url, String> {
    let url = Url::parse(p).map_err(|e| e.to_string())?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err("must be an http(s) URL".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain user information".into());
    }
    if url.host().is_none() {
        return Err("must name a host".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not contain a query or fragment".into());
    }
    Ok(url)
}

/// `http(s)://host[:port]/...` without userinfo, query or fragment, checked without a URL parser.
fn prefix_syntax(p: &str) -> std::result::Result<(), String> {
    let rest = p
        .strip_prefix("https://")
        .or_else(|| p.strip_prefix("http://"))
        .ok_or("must start with https:// or http://")?;
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() {
        return Err("must name a host".into());
    }
    if p.contains(['@', '?', '#', '\\']) || p.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(
            "must not contain user information, a query, a fragment, backslashes or spaces".into(),
        );
    }
    Ok(())
}

fn parse_hash(text: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(text.trim().to_ascii_lowercase()).ok()?;
    bytes.try_into().ok()
}

fn pair_key(s: &str) -> Option<String> {
    let (a, b) = s.split_once('/')?;
    let ok = |x: &str| !x.is_empty() && !x.contains('/') && !x.chars().any(char::is_whitespace);
    (ok(a) && ok(b)).then(|| format!("{a}/{b}"))
}

fn check_id(id: &str) -> std::result::Result<(), String> {
    if id.is_empty() || id.len() > 128 {
        return Err(format!("{id:?} must be 1 to 128 characters"));
    }
    if !id
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-' | b'@'))
    {
        return Err(format!("{id:?} may contain only A-Z a-z 0-9 _ . - @"));
    }
    Ok(())
}

/// Checks a presented bearer token against one hex SHA-256 (e.g. the `admin_token_sha256`
/// variable), in constant time. An empty or malformed configured hash never matches.
pub fn token_matches_sha256(token: &str, expected_hex: &str) -> bool {
    let Some(expected) = parse_hash(expected_hex) else {
        return false;
    };
    !token.is_empty() && bool::from(sha256(token.as_bytes()).ct_eq(&expected))
}

/// The bearer token of an `Authorization` header value (`Bearer <token>`, scheme case-insensitive).
pub fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::canon::sha256_hex;

    pub(crate) const EXAMPLE: &str = r#"
[[agent]]
id = "etl-bot"
owner = "alice"
groups = ["pipelines"]
token_sha256 = ["TOKEN_ETL"]
callback_prefixes = ["https://agent.example/hooks/", "http://127.0.0.1:8089/cb"]

[[agent]]
id = "ops-bot"
owner = "dave"
groups = []
token_sha256 = ["TOKEN_OPS"]

[[approver]]
id = "alice"
name = "Alice Owner"
slack = ["T0123/U0ALICE"]
token_sha256 = ["TOKEN_ALICE"]

[[approver]]
id = "bob"
name = "Bob Example"
slack = ["T0123/U0456"]
teams = ["11111111-2222-3333-4444-555555555555/AAAAAAAA-0000-0000-0000-000000000001"]
token_sha256 = ["TOKEN_BOB"]

[[approver]]
id = "carol"
name = "Carol"
token_sha256 = ["TOKEN_CAROL"]

[[approver]]
id = "dave"
name = "Dave"
token_sha256 = ["TOKEN_DAVE"]

[[approver]]
id = "erin"
name = "Erin"
token_sha256 = ["TOKEN_ERIN"]

[groups]
dba = ["alice", "bob", "carol"]
security = ["bob", "dave", "erin"]
sre = ["carol", "dave"]
"#;

    /// The example directory with each `TOKEN_X` placeholder replaced by the hash of `tok-x`.
    pub(crate) fn example() -> Directory {
        let mut text = EXAMPLE.to_string();
        for name in ["ETL", "OPS", "ALICE", "BOB", "CAROL", "DAVE", "ERIN"] {
            let token = format!("tok-{}", name.to_ascii_lowercase());
            text = text.replace(
                &format!("\"TOKEN_{name}\""),
                &format!("\"{}\"", sha256_hex(token.as_bytes())),
            );
        }
        Directory::parse(&text).unwrap()
    }

    #[test]
    fn lookups() {
        let d = example();
        assert_eq!(d.agent_by_token("tok-etl").unwrap().id, "etl-bot");
        assert_eq!(d.agent_by_token("tok-ops").unwrap().owner, "dave");
        assert!(
            d.agent_by_token("tok-bob").is_none(),
            "an approver token is no agent token"
        );
        assert_eq!(d.approver_by_token("tok-bob").unwrap().name, "Bob Example");
        assert!(d.approver_by_token("tok-etl").is_none());
        assert!(d.approver_by_token("").is_none());
        assert!(d.approver_by_token("tok-bo").is_none());
        assert_eq!(d.approver_by_slack("T0123", "U0456").unwrap().id, "bob");
        assert!(d.approver_by_slack("T9999", "U0456").is_none());
        assert_eq!(
            d.approver_by_teams(
                "11111111-2222-3333-4444-555555555555",
                "aaaaaaaa-0000-0000-0000-000000000001"
            )
            .unwrap()
            .id,
            "bob"
        );
        assert!(d.is_member("bob", "dba") && !d.is_member("dave", "dba"));
        assert_eq!(d.group_members("security"), ["bob", "dave", "erin"]);
        assert!(d.group_members("nope").is_empty());
        assert_eq!(d.resolve_person("user:alice"), "alice");
        assert_eq!(d.resolve_person("slack:T0123/U0ALICE"), "alice");
        assert_eq!(
            d.resolve_person(
                "teams:11111111-2222-3333-4444-555555555555/AAAAAAAA-0000-0000-0000-000000000001"
            ),
            "bob"
        );
        assert_eq!(d.resolve_person("mallory"), "mallory");
    }

    #[test]
    fn token_helpers() {
        let h = sha256_hex(b"admin-secret");
        assert!(token_matches_sha256("admin-secret", &h));
        assert!(token_matches_sha256(
            "admin-secret",
            &h.to_ascii_uppercase()
        ));
        assert!(!token_matches_sha256("admin-secreT", &h));
        assert!(!token_matches_sha256("", &sha256_hex(b"")));
        assert!(!token_matches_sha256("x", ""));
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
    }

    #[test]
    fn callback_prefix_tricks() {
        let d = example();
        let a = d.agent("etl-bot").unwrap();
        assert_eq!(
            a.check_callback_url("https://agent.example/hooks/countersign")
                .unwrap(),
            "https://agent.example/hooks/countersign"
        );
        assert!(a
            .check_callback_url("https://AGENT.example:443/hooks/x?y=1")
            .is_ok());
        assert!(a.check_callback_url("http://127.0.0.1:8089/cb").is_ok());
        assert!(a.check_callback_url("http://127.0.0.1:8089/cb/x").is_ok());
        for bad in [
            "https://agent.example@evil.example/hooks/x",
            "https://agent.example:pw@evil.example/hooks/x",
            "https://user@agent.example/hooks/x",
            "https://evil.example/https://agent.example/hooks/",
            "https://agent.example.evil.example/hooks/x",
            "https://agent.example:8443/hooks/x",
            "http://agent.example/hooks/x",
            "https://agent.example/hooks",
            "https://agent.example/hooksx/a",
            "https://agent.example/hooks/../admin",
            "https://agent.example/hooks/%2e%2e/admin",
            "https://agent.example\\@evil.example/hooks/",
            "https://agent.example%2f@evil.example/hooks/",
            "http://127.0.0.1:8089/cbx",
            "http://127.0.0.1:9999/cb",
            "http://2130706433:8090/cb",
            "ftp://agent.example/hooks/x",
            "javascript:alert(1)//agent.example/hooks/",
            "//agent.example/hooks/x",
            "agent.example/hooks/x",
            "",
        ] {
            assert!(a.check_callback_url(bad).is_err(), "{bad} accepted");
        }
        // Normalization is what gets called: an IP spelled as a number is 127.0.0.1.
        assert_eq!(
            a.check_callback_url("http://2130706433:8089/cb").unwrap(),
            "http://127.0.0.1:8089/cb"
        );
        let ops = d.agent("ops-bot").unwrap();
        assert!(ops
            .check_callback_url("https://agent.example/hooks/x")
            .is_err());
    }

    fn parse_err(text: &str) -> String {
        match Directory::parse(text) {
            Err(Error::Config(m)) => m,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn callback_prefixes_are_validated() {
        let one = |p: &str| {
            format!("[[agent]]\nid = \"a\"\nowner = \"o\"\ncallback_prefixes = [\"{p}\"]\n")
        };
        for bad in [
            "https://exa mple/",
            "ftp://h/",
            "https:///x",
            "https://u@h/",
            "https://h/?q",
            "https://h/#f",
            "h/x",
        ] {
            assert!(
                matches!(Directory::parse(&one(bad)), Err(Error::Config(m)) if m.contains("callback prefix")),
                "{bad}"
            );
        }
        let d = Directory::parse(&one("https://[::1/")).unwrap();
        assert!(
            matches!(d.validate_callback_prefixes(), Err(Error::Config(m)) if m.contains("callback prefix"))
        );
        example().validate_callback_prefixes().unwrap();
    }

    #[test]
    fn broken_files_are_clear_errors() {
        let h = sha256_hex(b"t");
        assert!(parse_err("[[agent]\nid=").contains("directory"));
        assert!(
            parse_err("[[agent]]\nid = \"a\"\nowner = \"o\"\ntoken = [\"x\"]\n").contains("token")
        );
        assert!(parse_err("[[agent]]\nid = \"a\"\n").contains("owner"));
        assert!(
            parse_err("[[agent]]\nid = \"a\"\nowner = \"o\"\ntoken_sha256 = [\"abc\"]\n")
                .contains("64 hex")
        );
        let dup = format!("[[agent]]\nid = \"a\"\nowner = \"o\"\ntoken_sha256 = [\"{h}\"]\n[[approver]]\nid = \"b\"\ntoken_sha256 = [\"{h}\"]\n");
        assert!(parse_err(&dup).contains("more than once"));
        assert!(
            parse_err("[[approver]]\nid = \"b\"\n[[approver]]\nid = \"b\"\n")
                .contains("already used")
        );
        assert!(parse_err("[[approver]]\nid = \"b\"\nslack = [\"U0456\"]\n").contains("slack"));
        assert!(
            parse_err("[[approver]]\nid = \"b\"\n[groups]\ndba = [\"b\", \"zed\"]\n")
                .contains("zed")
        );
        assert!(parse_err(
            "[[agent]]\nid = \"a\"\nowner = \"o\"\ncallback_prefixes = [\"https://u@h/\"]\n"
        )
        .contains("callback prefix"));
        assert!(parse_err(
            "[[agent]]\nid = \"a\"\nowner = \"o\"\ncallback_prefixes = [\"not a url\"]\n"
        )
        .contains("callback prefix"));
        assert!(parse_err("[[agent]]\nid = \"a b\"\nowner = \"o\"\n").contains("may contain only"));
        assert!(
            matches!(Directory::load("/nonexistent/directory.toml"), Err(Error::Config(m)) if m.contains("/nonexistent"))
        );
        let path = std::env::temp_dir().join(format!(
            "countersign-directory-{}-{:?}.toml",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(&path, "[[agent]]\nid = \"a\"\n").unwrap();
        let err = Directory::load(&path);
        std::fs::remove_file(&path).ok();
        assert!(
            matches!(&err, Err(Error::Config(m)) if m.starts_with(&format!("directory {}: ", path.display())) && m.contains("owner")),
            "{err:?}"
        );
        assert!(Directory::parse("").unwrap().agents().is_empty());
    }
}
