//! spin.toml (manifest version 2): the subset Spin 3.x/4.x apps use for HTTP components.
//!
//! Every table denies unknown fields, so a field this runtime would silently ignore (and so run
//! the app differently from Spin) stops the start with its name instead.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub spin_manifest_version: u32,
    pub application: Application,
    #[serde(default)]
    pub variables: BTreeMap<String, Variable>,
    #[serde(default)]
    pub trigger: Triggers,
    #[serde(default)]
    pub component: BTreeMap<String, Component>,
}

// Metadata fields are accepted so one manifest serves Spin and this host; they change nothing here.
#[allow(dead_code)]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Application {
    pub name: String,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub authors: Vec<String>,
    #[serde(default)]
    pub trigger: Option<AppTriggers>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppTriggers {
    pub http: Option<AppHttpTrigger>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppHttpTrigger {
    #[serde(default)]
    pub base: Option<String>,
}

/// `secret` changes nothing here because no variable value is ever logged.
#[allow(dead_code)]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variable {
    #[serde(default)]
    pub default: Option<String>,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub secret: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Triggers {
    #[serde(default)]
    pub http: Vec<HttpTrigger>,
}

#[allow(dead_code)] // `id` is metadata.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpTrigger {
    #[serde(default)]
    pub id: Option<String>,
    pub route: RouteSpec,
    pub component: String,
    #[serde(default)]
    pub executor: Option<Executor>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Executor {
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RouteSpec {
    Path(String),
    Private(PrivateRoute),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivateRoute {
    pub private: bool,
}

#[allow(dead_code)] // `description` and `build` are for people and `spin build`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    pub source: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub allowed_outbound_hosts: Vec<String>,
    #[serde(default)]
    pub key_value_stores: Vec<String>,
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    #[serde(default)]
    pub files: Vec<FileMount>,
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    #[serde(default)]
    pub build: Option<Build>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileMount {
    pub source: String,
    pub destination: String,
}

/// Only read by `spin build`; accepted so that one manifest serves both tools.
#[allow(dead_code)]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Build {
    pub command: String,
    #[serde(default)]
    pub workdir: Option<String>,
    #[serde(default)]
    pub watch: Vec<String>,
}

impl Manifest {
    pub fn load(path: &Path) -> Result<Manifest> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read manifest {}", path.display()))?;
        let manifest: Manifest = toml::from_str(&text)
            .with_context(|| format!("manifest {} is not valid", path.display()))?;
        manifest
            .validate()
            .with_context(|| format!("manifest {} is not valid", path.display()))?;
        Ok(manifest)
    }

    fn validate(&self) -> Result<()> {
        if self.spin_manifest_version != 2 {
            bail!(
                "spin_manifest_version = {} is unsupported (only 2)",
                self.spin_manifest_version
            );
        }
        if let Some(base) = self
            .application
            .trigger
            .as_ref()
            .and_then(|t| t.http.as_ref())
            .and_then(|h| h.base.as_deref())
        {
            if base != "/" {
                bail!("application.trigger.http.base = {base:?} is unsupported (only \"/\")");
            }
        }
        for name in self.variables.keys() {
            check_variable_name(name)?;
        }
        for (name, var) in &self.variables {
            if var.required && var.default.is_some() {
                bail!("variable `{name}` cannot be both required and have a default");
            }
            if !var.required && var.default.is_none() {
                bail!("variable `{name}` needs either `default` or `required = true`");
            }
        }
        for (id, component) in &self.component {
            check_component_id(id)?;
            for name in component.variables.keys() {
                check_variable_name(name)
                    .with_context(|| format!("in component `{id}` variables"))?;
            }
            if component.source.trim().is_empty() {
                bail!("component `{id}`: `source` is empty");
            }
            for mount in &component.files {
                if !mount.destination.starts_with('/') {
                    bail!(
                        "component `{id}`: files destination {:?} must be an absolute path",
                        mount.destination
                    );
                }
            }
        }
        if self.trigger.http.is_empty() {
            bail!("no [[trigger.http]] entries");
        }
        for trigger in &self.trigger.http {
            if !self.component.contains_key(&trigger.component) {
                bail!(
                    "[[trigger.http]] names component `{}`, which is not defined",
                    trigger.component
                );
            }
            if let Some(executor) = &trigger.executor {
                if executor.kind != "spin" {
                    bail!(
                        "[[trigger.http]] executor type `{}` is unsupported (only \"spin\")",
                        executor.kind
                    );
                }
            }
            match &trigger.route {
                RouteSpec::Path(route) => crate::router::check_route(route)?,
                RouteSpec::Private(p) if !p.private => {
                    bail!("route = {{ private = false }} is not a route")
                }
                RouteSpec::Private(_) => {}
            }
        }
        Ok(())
    }

    /// Resolves a path written in the manifest against the manifest's folder, as Spin does.
    pub fn resolve(base: &Path, relative: &str) -> PathBuf {
        base.join(relative)
    }
}

fn check_variable_name(name: &str) -> Result<()> {
    let ok = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.ends_with('_')
        && !name.contains("__");
    if !ok {
        bail!("variable name `{name}` must be lower_snake_case (a-z, 0-9, single _)");
    }
    Ok(())
}

fn check_component_id(id: &str) -> Result<()> {
    let ok = id.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !ok {
        bail!("component id `{id}` must be lowercase letters, digits and '-'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest> {
        let m: Manifest = toml::from_str(text)?;
        m.validate()?;
        Ok(m)
    }

    const MINIMAL: &str = r#"
spin_manifest_version = 2
[application]
name = "x"
[[trigger.http]]
route = "/..."
component = "a"
[component.a]
source = "a.wasm"
"#;

    #[test]
    fn minimal_manifest_parses() {
        let m = parse(MINIMAL).unwrap();
        assert_eq!(m.component.len(), 1);
        assert_eq!(m.trigger.http[0].component, "a");
    }

    #[test]
    fn unknown_field_is_named() {
        let text = MINIMAL.replace(
            "source = \"a.wasm\"",
            "source = \"a.wasm\"\nsqlite_databases = [\"default\"]",
        );
        let err = format!("{:#}", parse(&text).unwrap_err());
        assert!(err.contains("sqlite_databases"), "{err}");
    }

    #[test]
    fn trigger_naming_missing_component_is_refused() {
        let text = MINIMAL.replace("component = \"a\"", "component = \"b\"");
        let err = format!("{:#}", parse(&text).unwrap_err());
        assert!(err.contains("`b`"), "{err}");
    }

    #[test]
    fn variable_needs_default_or_required() {
        let text = format!("{MINIMAL}\n[variables]\nfoo = {{ secret = true }}\n");
        let err = format!("{:#}", parse(&text).unwrap_err());
        assert!(err.contains("foo"), "{err}");
    }

    #[test]
    fn bad_variable_name_is_refused() {
        let text = format!("{MINIMAL}\n[variables]\nFoo = {{ default = \"x\" }}\n");
        assert!(parse(&text).is_err());
    }
}
