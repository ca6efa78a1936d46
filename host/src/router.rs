//! Spin's HTTP routing: exact routes and trailing `/...` wildcards; an exact route beats a
//! wildcard, and among wildcards the longest prefix wins. Private routes are reachable only
//! through service chaining, so they never enter the public table.

use anyhow::{bail, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Exact(String),
    /// The prefix without the trailing `/...` ("" for the root wildcard `/...`).
    Wildcard(String),
}

#[derive(Debug, Clone)]
pub struct Route {
    pub pattern: Pattern,
    /// The route as written in spin.toml (for `spin-raw-component-route`).
    pub raw: String,
    pub component: usize,
}

/// What Spin tells the component about how it was reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    pub component: usize,
    /// `spin-matched-route` and `spin-raw-component-route`.
    pub raw: String,
    /// `spin-component-route`: the route without the wildcard.
    pub component_route: String,
    /// `spin-path-info`: the part of the path after the component route.
    pub path_info: String,
}

pub fn check_route(route: &str) -> Result<()> {
    if !route.starts_with('/') {
        bail!("route {route:?} must start with '/'");
    }
    let body = route.strip_suffix("/...").unwrap_or(route);
    if body.contains("...") || body.contains('*') {
        bail!("route {route:?}: only exact paths and a trailing `/...` wildcard are supported");
    }
    if body.split('/').any(|seg| seg.starts_with(':')) {
        bail!("route {route:?}: named segments (`:name`) are not portable to Spin 3.x; parse them in the component");
    }
    Ok(())
}

pub fn parse(route: &str, component: usize) -> Route {
    let pattern = match route.strip_suffix("/...") {
        Some(prefix) => Pattern::Wildcard(prefix.trim_end_matches('/').to_string()),
        None if route.len() > 1 => Pattern::Exact(route.trim_end_matches('/').to_string()),
        None => Pattern::Exact("/".to_string()),
    };
    Route {
        pattern,
        raw: route.to_string(),
        component,
    }
}

#[derive(Debug, Default)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    pub fn new(mut routes: Vec<Route>) -> Result<Router> {
        for (i, a) in routes.iter().enumerate() {
            if routes[..i].iter().any(|b| b.pattern == a.pattern) {
                bail!("route {:?} is defined twice", a.raw);
            }
        }
        // Longest first, so the first wildcard hit is the longest prefix.
        routes.sort_by_key(|r| {
            std::cmp::Reverse(match &r.pattern {
                Pattern::Exact(p) | Pattern::Wildcard(p) => p.len(),
            })
        });
        Ok(Router { routes })
    }

    pub fn route(&self, path: &str) -> Option<Matched> {
        let trimmed = if path.len() > 1 {
            path.trim_end_matches('/')
        } else {
            path
        };
        let exact = self.routes.iter().find(|r| match &r.pattern {
            Pattern::Exact(p) => p == trimmed,
            Pattern::Wildcard(_) => false,
        });
        if let Some(r) = exact {
            return Some(Matched {
                component: r.component,
                raw: r.raw.clone(),
                component_route: trimmed.to_string(),
                path_info: String::new(),
            });
        }
        self.routes.iter().find_map(|r| match &r.pattern {
            Pattern::Wildcard(prefix) => {
                let rest = path.strip_prefix(prefix.as_str())?;
                (rest.is_empty() || rest.starts_with('/')).then(|| Matched {
                    component: r.component,
                    raw: r.raw.clone(),
                    component_route: prefix.clone(),
                    path_info: rest.to_string(),
                })
            }
            Pattern::Exact(_) => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router {
        Router::new(vec![
            parse("/...", 0),
            parse("/echo/...", 1),
            parse("/echo/exact", 2),
            parse("/echo/deeper/...", 3),
            parse("/", 4),
        ])
        .unwrap()
    }

    #[test]
    fn exact_beats_wildcard() {
        let m = router().route("/echo/exact").unwrap();
        assert_eq!(m.component, 2);
        assert_eq!(m.path_info, "");
    }

    #[test]
    fn longest_prefix_wins() {
        let m = router().route("/echo/deeper/x/y").unwrap();
        assert_eq!(m.component, 3);
        assert_eq!(m.path_info, "/x/y");
        assert_eq!(m.component_route, "/echo/deeper");
        let m = router().route("/echo/other").unwrap();
        assert_eq!(m.component, 1);
        assert_eq!(m.path_info, "/other");
    }

    #[test]
    fn wildcard_matches_its_own_prefix_but_not_a_longer_word() {
        assert_eq!(router().route("/echo").unwrap().component, 1);
        assert_eq!(router().route("/echoes").unwrap().component, 0);
    }

    #[test]
    fn root_routes() {
        assert_eq!(router().route("/").unwrap().component, 4);
        let m = router().route("/anything").unwrap();
        assert_eq!((m.component, m.path_info.as_str()), (0, "/anything"));
    }

    #[test]
    fn no_match_without_root_wildcard() {
        let r = Router::new(vec![parse("/a", 0)]).unwrap();
        assert!(r.route("/b").is_none());
        assert!(r.route("/a/b").is_none());
    }

    #[test]
    fn named_segments_and_duplicates_are_refused() {
        assert!(check_route("/v1/actions/:id").is_err());
        assert!(check_route("v1").is_err());
        assert!(Router::new(vec![parse("/a", 0), parse("/a", 1)]).is_err());
    }
}
