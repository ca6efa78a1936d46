//! The runtime config file (`--runtime-config-file`), in Spin's format: key-value stores per
//! label and variable providers. Unknown tables and fields are refused by name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    #[serde(default)]
    pub key_value_store: BTreeMap<String, KeyValueStore>,
    #[serde(default)]
    pub variable_provider: Vec<VariableProvider>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum KeyValueStore {
    /// Spin's name for its embedded SQLite store.
    Spin {
        path: Option<PathBuf>,
    },
    Redis {
        url: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum VariableProvider {
    Static {
        values: BTreeMap<String, String>,
    },
    /// The environment provider is always on; listing it changes nothing.
    Env {},
}

impl RuntimeConfig {
    pub fn load(path: &Path) -> Result<RuntimeConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read runtime config {}", path.display()))?;
        let mut config: RuntimeConfig = toml::from_str(&text)
            .with_context(|| format!("runtime config {} is not valid", path.display()))?;
        // Relative SQLite paths are relative to the runtime config file, as in Spin.
        let base = path.parent().unwrap_or(Path::new("."));
        for store in config.key_value_store.values_mut() {
            if let KeyValueStore::Spin { path: Some(p) } = store {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
        }
        Ok(config)
    }

    /// Values from static providers; earlier providers win, as in Spin.
    pub fn static_values(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for provider in &self.variable_provider {
            if let VariableProvider::Static { values } = provider {
                for (k, v) in values {
                    out.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_redis_and_static_provider() {
        let c: RuntimeConfig = toml::from_str(
            r#"
[key_value_store.default]
type = "redis"
url = "redis://127.0.0.1:6379/3"

[[variable_provider]]
type = "static"
[variable_provider.values]
signing_key = "abc"
"#,
        )
        .unwrap();
        assert!(
            matches!(&c.key_value_store["default"], KeyValueStore::Redis { url } if url.ends_with("/3"))
        );
        assert_eq!(c.static_values()["signing_key"], "abc");
    }

    #[test]
    fn unknown_store_type_is_named() {
        let err =
            toml::from_str::<RuntimeConfig>("[key_value_store.default]\ntype = \"azure_cosmos\"\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("azure_cosmos"), "{err}");
    }
}
