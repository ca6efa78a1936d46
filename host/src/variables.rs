//! Application variables: manifest defaults, `required`, `secret`, and the providers Spin's CLI
//! offers — the runtime config's static provider first, then `SPIN_VARIABLE_<NAME>` from the
//! environment, then the default. Everything is resolved once at start, so a missing required
//! variable stops the start with its name and a request never pays for the lookup.

use std::collections::{BTreeMap, HashMap};

use anyhow::{bail, Context, Result};

use crate::manifest::Variable;

/// Resolved application variables. Values of secret variables are never logged; `Debug`
/// deliberately shows names only.
pub struct Resolved {
    values: HashMap<String, String>,
}

impl std::fmt::Debug for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.values.keys()).finish()
    }
}

pub fn env_name(name: &str) -> String {
    format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase())
}

impl Resolved {
    pub fn resolve(
        declared: &BTreeMap<String, Variable>,
        static_values: &BTreeMap<String, String>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Resolved> {
        let mut values = HashMap::new();
        let mut missing = Vec::new();
        for (name, var) in declared {
            let value = static_values
                .get(name)
                .cloned()
                .or_else(|| env(&env_name(name)))
                .or_else(|| var.default.clone());
            match value {
                Some(v) => {
                    values.insert(name.clone(), v);
                }
                None => missing.push(format!("`{name}` (set {})", env_name(name))),
            }
        }
        if !missing.is_empty() {
            bail!("required variable(s) not set: {}", missing.join(", "));
        }
        Ok(Resolved { values })
    }

    /// Expands `{{ name }}` references to application variables.
    pub fn expand(&self, template: &str) -> Result<String> {
        let mut out = String::with_capacity(template.len());
        let mut rest = template;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .with_context(|| format!("unclosed `{{{{` in {template:?}"))?;
            let name = after[..end].trim();
            let value = self.values.get(name).with_context(|| {
                format!("template {template:?} names undefined variable `{name}`")
            })?;
            out.push_str(value);
            rest = &after[end + 2..];
        }
        if rest.contains("}}") {
            bail!("stray `}}}}` in {template:?}");
        }
        out.push_str(rest);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared() -> BTreeMap<String, Variable> {
        let mut d = BTreeMap::new();
        let var = |default: Option<&str>, required| Variable {
            default: default.map(str::to_string),
            required,
            secret: false,
        };
        d.insert("host".into(), var(Some("example.com"), false));
        d.insert("token".into(), var(None, true));
        d
    }

    #[test]
    fn precedence_static_env_default() {
        let mut st = BTreeMap::new();
        st.insert("token".to_string(), "from-static".to_string());
        let env = |n: &str| {
            (n == "SPIN_VARIABLE_HOST" || n == "SPIN_VARIABLE_TOKEN")
                .then(|| "from-env".to_string())
        };
        let r = Resolved::resolve(&declared(), &st, env).unwrap();
        assert_eq!(r.expand("{{ token }}").unwrap(), "from-static");
        assert_eq!(
            r.expand("https://{{host}}/x").unwrap(),
            "https://from-env/x"
        );
        let r = Resolved::resolve(&declared(), &st, |_| None).unwrap();
        assert_eq!(r.expand("{{ host }}").unwrap(), "example.com");
    }

    #[test]
    fn missing_required_is_named() {
        let err = Resolved::resolve(&declared(), &BTreeMap::new(), |_| None).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("token") && msg.contains("SPIN_VARIABLE_TOKEN"),
            "{msg}"
        );
    }

    #[test]
    fn bad_templates() {
        let r =
            Resolved::resolve(&declared(), &BTreeMap::new(), |_| Some("s3cr3t".into())).unwrap();
        assert!(r.expand("{{ nope }}").is_err());
        assert!(r.expand("{{ host").is_err());
        assert!(r.expand("host }}").is_err());
        assert!(
            !format!("{r:?}").contains("s3cr3t"),
            "Debug must not show values"
        );
    }
}
