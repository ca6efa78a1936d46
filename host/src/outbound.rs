//! `allowed_outbound_hosts` with Spin's semantics: `scheme://host[:port]`, `*` for any scheme,
//! host or port, `*.example.com` for subdomains, port ranges `a..b`, and no paths.

use anyhow::{bail, Context, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
enum SchemeRule {
    Any,
    Is(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostRule {
    Any,
    /// `*.example.com`: any name ending in `.example.com`.
    Subdomains(String),
    Is(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PortRule {
    Any,
    Range(u16, u16),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    scheme: SchemeRule,
    host: HostRule,
    port: PortRule,
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

impl AllowedHost {
    pub fn parse(entry: &str) -> Result<AllowedHost> {
        let (scheme, rest) = entry.split_once("://").with_context(|| {
            format!("allowed_outbound_hosts entry {entry:?} needs a scheme (e.g. https://)")
        })?;
        if rest.contains('/') {
            bail!("allowed_outbound_hosts entry {entry:?} must not have a path");
        }
        if scheme.is_empty() || rest.is_empty() {
            bail!("allowed_outbound_hosts entry {entry:?} is incomplete");
        }
        if entry == "self" || rest == "self" || rest.starts_with("self:") {
            bail!("allowed_outbound_hosts entry {entry:?}: `self` is not supported (use http://<component>.spin.internal)");
        }
        let scheme = match scheme {
            "*" => SchemeRule::Any,
            s if s
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '-' || c == '.') =>
            {
                SchemeRule::Is(s.to_ascii_lowercase())
            }
            s => bail!("allowed_outbound_hosts entry {entry:?}: bad scheme {s:?}"),
        };
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || rest.starts_with('[') => (h, Some(p)),
            _ => (rest, None),
        };
        let host = match host {
            "*" => HostRule::Any,
            h if h.starts_with("*.") && h.len() > 2 && !h[2..].contains('*') => {
                HostRule::Subdomains(h[1..].to_ascii_lowercase())
            }
            h if !h.contains('*') && !h.is_empty() => HostRule::Is(h.to_ascii_lowercase()),
            h => bail!("allowed_outbound_hosts entry {entry:?}: bad host {h:?}"),
        };
        let port = match port {
            Some("*") => PortRule::Any,
            Some(p) => match p.split_once("..") {
                Some((a, b)) => {
                    let (a, b) = (parse_port(entry, a)?, parse_port(entry, b)?);
                    if a >= b {
                        bail!("allowed_outbound_hosts entry {entry:?}: empty port range");
                    }
                    // Spin's ranges are half-open like Rust's.
                    PortRule::Range(a, b - 1)
                }
                None => {
                    let p = parse_port(entry, p)?;
                    PortRule::Range(p, p)
                }
            },
            None => match &scheme {
                SchemeRule::Is(s) => match default_port(s) {
                    Some(p) => PortRule::Range(p, p),
                    None => bail!(
                        "allowed_outbound_hosts entry {entry:?} needs a port for scheme {s:?}"
                    ),
                },
                SchemeRule::Any => bail!(
                    "allowed_outbound_hosts entry {entry:?} needs a port when the scheme is `*`"
                ),
            },
        };
        Ok(AllowedHost { scheme, host, port })
    }

    pub fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        let scheme_ok = match &self.scheme {
            SchemeRule::Any => true,
            SchemeRule::Is(s) => s.eq_ignore_ascii_case(scheme),
        };
        let host = host.to_ascii_lowercase();
        let host_ok = match &self.host {
            HostRule::Any => true,
            HostRule::Subdomains(suffix) => {
                host.ends_with(suffix.as_str()) && host.len() > suffix.len()
            }
            HostRule::Is(h) => *h == host,
        };
        let port_ok = match self.port {
            PortRule::Any => true,
            PortRule::Range(a, b) => (a..=b).contains(&port),
        };
        scheme_ok && host_ok && port_ok
    }
}

fn parse_port(entry: &str, p: &str) -> Result<u16> {
    p.parse()
        .with_context(|| format!("allowed_outbound_hosts entry {entry:?}: bad port {p:?}"))
}

/// The outbound rules of one component.
#[derive(Debug, Clone, Default)]
pub struct OutboundPolicy {
    rules: Vec<AllowedHost>,
}

impl OutboundPolicy {
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<OutboundPolicy> {
        let rules = entries
            .into_iter()
            .map(AllowedHost::parse)
            .collect::<Result<_>>()?;
        Ok(OutboundPolicy { rules })
    }

    pub fn allows(&self, uri: &http::Uri) -> bool {
        let (Some(scheme), Some(host)) = (uri.scheme_str(), uri.host()) else {
            return false;
        };
        let Some(port) = uri.port_u16().or_else(|| default_port(scheme)) else {
            return false;
        };
        self.rules.iter().any(|r| r.allows(scheme, host, port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(entry: &str, url: &str) -> bool {
        OutboundPolicy::parse([entry])
            .unwrap()
            .allows(&url.parse().unwrap())
    }

    #[test]
    fn exact_host_uses_default_port() {
        assert!(allows(
            "https://slack.com",
            "https://slack.com/api/chat.postMessage"
        ));
        assert!(!allows("https://slack.com", "https://slack.com:8443/api"));
        assert!(!allows("https://slack.com", "http://slack.com/api"));
        assert!(!allows("https://slack.com", "https://evil-slack.com/"));
    }

    #[test]
    fn wildcards() {
        assert!(allows("http://127.0.0.1:*", "http://127.0.0.1:4711/x"));
        assert!(!allows("http://127.0.0.1:*", "http://127.0.0.2:4711/x"));
        assert!(allows(
            "http://*.spin.internal",
            "http://decision.spin.internal/internal/sweep"
        ));
        assert!(!allows("http://*.spin.internal", "http://spin.internal/"));
        assert!(allows("*://example.com:*", "https://example.com:9/"));
        assert!(allows("https://*:443", "https://anything.test/"));
    }

    #[test]
    fn port_ranges_are_half_open() {
        assert!(allows("http://h:8000..8002", "http://h:8001/"));
        assert!(!allows("http://h:8000..8002", "http://h:8002/"));
    }

    #[test]
    fn bad_entries_are_refused() {
        for bad in [
            "example.com",
            "https://example.com/path",
            "*://example.com",
            "https://a*b.com",
            "ftp://x",
            "https://x:notaport",
        ] {
            assert!(AllowedHost::parse(bad).is_err(), "{bad}");
        }
    }
}
