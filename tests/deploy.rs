//! Keeps deploy/ in sync with spin.toml: the Redis runtime config selects Redis for the store
//! the components use, and the SpinKube example binds every required variable, takes every
//! secret from a Kubernetes Secret (never a literal), and runs the sweep.

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn manifest() -> toml::Table {
    read("spin.toml").parse().expect("spin.toml")
}

/// The documents of a multi-document YAML file.
fn yaml_docs(path: &str) -> Vec<Value> {
    let text = read(path);
    serde_norway::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{path}: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

#[test]
fn redis_runtime_config_backs_every_store_label() {
    let rc: toml::Table = read("deploy/runtime-config.redis.toml").parse().unwrap();
    let stores = rc["key_value_store"]
        .as_table()
        .expect("[key_value_store.*]");
    let m = manifest();
    for (id, c) in m["component"].as_table().unwrap() {
        for label in c
            .get("key_value_stores")
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
        {
            let label = label.as_str().unwrap();
            let store = stores.get(label).unwrap_or_else(|| {
                panic!("component {id} uses store {label}: not in the runtime config")
            });
            assert_eq!(store["type"].as_str(), Some("redis"));
            let url = store["url"].as_str().unwrap();
            assert!(
                url.starts_with("redis://") || url.starts_with("rediss://"),
                "{url}"
            );
        }
    }
}

#[test]
fn spinapp_binds_variables_from_secrets() {
    let docs = yaml_docs("deploy/spinkube/spinapp.yaml");
    let app = docs
        .iter()
        .find(|d| d["kind"] == "SpinApp")
        .expect("a SpinApp");
    assert_eq!(app["apiVersion"], "core.spinkube.dev/v1alpha1");
    let spec = &app["spec"];
    assert!(spec["image"].as_str().is_some_and(|i| !i.is_empty()));
    let replicas = spec["replicas"].as_u64().expect("replicas");
    if replicas > 1 {
        assert!(
            spec["runtimeConfig"]["loadFromSecret"].is_string(),
            "more than one replica needs the shared store's runtime config"
        );
    }
    let m = manifest();
    let declared = m["variables"].as_table().unwrap();
    let bound: Vec<&Value> = spec["variables"]
        .as_array()
        .expect("variables")
        .iter()
        .collect();
    for b in &bound {
        let name = b["name"].as_str().unwrap();
        let decl = declared
            .get(name)
            .unwrap_or_else(|| panic!("SpinApp binds {name}, spin.toml declares no such variable"));
        let secret = decl.get("secret").and_then(|v| v.as_bool()) == Some(true);
        if secret {
            assert!(
                b.get("value").is_none() && b["valueFrom"]["secretKeyRef"]["name"].is_string(),
                "secret variable {name} must come from a Secret"
            );
        }
    }
    for (name, decl) in declared {
        let required = decl.get("required").and_then(|v| v.as_bool()) == Some(true);
        if required {
            assert!(
                bound.iter().any(|b| b["name"] == name.as_str()),
                "required variable {name} is not bound"
            );
        }
    }
    // The admin token hash too: without it the sweep cannot be called.
    assert!(bound.iter().any(|b| b["name"] == "admin_token_sha256"));
}

#[test]
fn spinkube_example_runs_the_sweep_with_the_admin_token() {
    let docs = yaml_docs("deploy/spinkube/spinapp.yaml");
    let job = docs
        .iter()
        .find(|d| d["kind"] == "CronJob")
        .expect("a CronJob for the sweep");
    let container = &job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
    let command = container["command"].to_string();
    assert!(
        command.contains("/v1/sweep") && command.contains("POST"),
        "{command}"
    );
    assert!(command.contains("Authorization: Bearer"), "{command}");
    let env = container["env"].as_array().expect("env");
    assert!(env
        .iter()
        .all(|e| e.get("value").is_none() && e["valueFrom"]["secretKeyRef"].is_object()));
}
