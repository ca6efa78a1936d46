//! Keeps openapi.yaml in sync with the app: every documented operation is routed by spin.toml
//! (Spin's routing rules) to the component it names, every public route of spin.toml is
//! documented, and the running app (`countersign up` on the real spin.toml) answers every
//! documented operation with one of its documented statuses, in the documented shape.

mod support;

use std::collections::BTreeSet;

use bytes::Bytes;
use serde_json::{json, Value};
use shared::Timestamp;
use support::app::*;
use support::*;

const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

fn spec() -> Value {
    let text =
        std::fs::read_to_string(workspace_root().join("openapi.yaml")).expect("openapi.yaml");
    serde_norway::from_str(&text).expect("openapi.yaml is YAML")
}

fn manifest() -> toml::Table {
    let text = std::fs::read_to_string(workspace_root().join("spin.toml")).expect("spin.toml");
    text.parse().expect("spin.toml is TOML")
}

/// Public routes of spin.toml: (route, component).
fn public_routes(m: &toml::Table) -> Vec<(String, String)> {
    m["trigger"]["http"]
        .as_array()
        .expect("[[trigger.http]]")
        .iter()
        .filter_map(|t| {
            let route = t.get("route")?.as_str()?.to_string();
            Some((route, t["component"].as_str()?.to_string()))
        })
        .collect()
}

fn components(m: &toml::Table) -> BTreeSet<String> {
    m["component"]
        .as_table()
        .expect("[component.*]")
        .keys()
        .cloned()
        .collect()
}

/// Spin's routing: an exact route beats a wildcard; among `/prefix/...` wildcards (which also
/// match `/prefix` itself) the longest prefix wins.
fn route<'a>(routes: &'a [(String, String)], path: &str) -> Option<&'a str> {
    if let Some((_, c)) = routes.iter().find(|(r, _)| r == path) {
        return Some(c);
    }
    routes
        .iter()
        .filter_map(|(r, c)| {
            let prefix = r.strip_suffix("/...")?;
            let matches = prefix.is_empty()
                || path == prefix
                || path
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with('/'));
            matches.then_some((prefix.len(), c.as_str()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, c)| c)
}

fn sample_path(template: &str, id: &str) -> String {
    template.replace("{id}", id)
}

/// The operations: (path template, method, operation).
fn operations(spec: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for m in METHODS {
            if let Some(op) = item.get(m) {
                out.push((path.clone(), m.to_string(), op.clone()));
            }
        }
    }
    out
}

fn resolve<'a>(spec: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let ptr = r.strip_prefix('#').expect("local $ref");
            let target = spec
                .pointer(ptr)
                .unwrap_or_else(|| panic!("dangling $ref {r}"));
            resolve(spec, target)
        }
        None => v,
    }
}

/// Documented statuses of an operation.
fn statuses(op: &Value) -> BTreeSet<u16> {
    op["responses"]
        .as_object()
        .expect("responses")
        .keys()
        .map(|k| {
            k.parse()
                .unwrap_or_else(|_| panic!("status {k:?} is not a number"))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// A small JSON Schema check (the subset openapi.yaml uses).

fn type_ok(v: &Value, t: &str) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        other => panic!("unknown schema type {other}"),
    }
}

fn validate(spec: &Value, schema: &Value, v: &Value, at: &str, errors: &mut Vec<String>) {
    let schema = resolve(spec, schema);
    if let Some(t) = schema.get("type") {
        let ok = match t {
            Value::String(t) => type_ok(v, t),
            Value::Array(ts) => ts.iter().any(|t| type_ok(v, t.as_str().unwrap())),
            _ => panic!("bad type in schema at {at}"),
        };
        if !ok {
            errors.push(format!("{at}: {v} is not of type {t}"));
            return;
        }
    }
    if let Some(c) = schema.get("const") {
        if c != v {
            errors.push(format!("{at}: {v} is not {c}"));
        }
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        if !e.contains(v) {
            errors.push(format!("{at}: {v} is not one of {e:?}"));
        }
    }
    if schema.get("format").and_then(Value::as_str) == Some("date-time") {
        if let Some(s) = v.as_str() {
            if Timestamp::parse_rfc3339(s).is_err() {
                errors.push(format!("{at}: {s:?} is not a date-time"));
            }
        }
    }
    if let Some(obj) = v.as_object() {
        for r in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let r = r.as_str().unwrap();
            if !obj.contains_key(r) {
                errors.push(format!("{at}: missing required `{r}`"));
            }
        }
        let props = schema.get("properties").and_then(Value::as_object);
        for (k, val) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(s) => validate(spec, s, val, &format!("{at}.{k}"), errors),
                None => match schema.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        errors.push(format!("{at}: undocumented member `{k}`"))
                    }
                    Some(s @ Value::Object(_)) => {
                        validate(spec, s, val, &format!("{at}.{k}"), errors)
                    }
                    _ => {}
                },
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array()) {
        for (i, item) in arr.iter().enumerate() {
            validate(spec, items, item, &format!("{at}[{i}]"), errors);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Static checks

#[test]
fn the_spec_is_openapi_3_1_and_well_formed() {
    let spec = spec();
    assert!(
        spec["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1.")),
        "openapi: {}",
        spec["openapi"]
    );
    let schemes = spec["components"]["securitySchemes"]
        .as_object()
        .expect("securitySchemes");
    for s in schemes.values() {
        assert_eq!(
            (s["type"].as_str(), s["scheme"].as_str()),
            (Some("http"), Some("bearer"))
        );
    }
    for (path, method, op) in operations(&spec) {
        let what = format!("{} {path}", method.to_uppercase());
        assert!(op["operationId"].is_string(), "{what}: no operationId");
        assert!(
            op["x-countersign-component"].is_string(),
            "{what}: no x-countersign-component"
        );
        for alt in op
            .get("security")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for name in alt.as_object().unwrap().keys() {
                assert!(
                    schemes.contains_key(name),
                    "{what}: unknown security scheme {name}"
                );
            }
        }
        for (status, resp) in op["responses"].as_object().unwrap() {
            let resp = resolve(&spec, resp);
            assert!(
                resp["description"].is_string(),
                "{what} {status}: no description"
            );
            // Every error is problem details, except the policy's denial (an answer).
            let code: u16 = status.parse().unwrap();
            let is_denial = path == "/v1/actions" && code == 403;
            if code >= 400 && !is_denial {
                let content = resp["content"]
                    .as_object()
                    .unwrap_or_else(|| panic!("{what} {status}: no content"));
                assert!(
                    content.contains_key("application/problem+json"),
                    "{what} {status}: not problem details"
                );
            }
            // Every $ref resolves.
            let text = serde_json::to_string(resp).unwrap();
            for r in text.split("\"$ref\":\"").skip(1) {
                let r = &r[..r.find('"').unwrap()];
                assert!(
                    spec.pointer(r.trim_start_matches('#')).is_some(),
                    "{what}: dangling {r}"
                );
            }
        }
        if path.contains('{') {
            let params = serde_json::to_string(&op["parameters"]).unwrap();
            assert!(
                params.contains("RequestId"),
                "{what}: path parameter undocumented"
            );
        }
    }
}

#[test]
fn every_documented_operation_is_routed_to_its_component() {
    let spec = spec();
    let m = manifest();
    let routes = public_routes(&m);
    let present = components(&m);
    let mut checked = 0;
    for (path, method, op) in operations(&spec) {
        let component = op["x-countersign-component"].as_str().unwrap();
        if !present.contains(component) {
            // A component documented ahead of its arrival in spin.toml (slack, teams): checked
            // as soon as spin.toml has it.
            eprintln!("note: {path}: component {component} is not in spin.toml yet");
            continue;
        }
        let sample = sample_path(&path, "req_aaaaaaaaaaaaaaaaaaaaaaaaaa");
        assert_eq!(
            route(&routes, &sample),
            Some(component),
            "{} {path} is not routed to {component} by spin.toml",
            method.to_uppercase()
        );
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} operations checked");
}

#[test]
fn every_public_route_is_documented() {
    let spec = spec();
    let paths: Vec<&String> = spec["paths"].as_object().unwrap().keys().collect();
    for (r, component) in public_routes(&manifest()) {
        let documented = match r.strip_suffix("/...") {
            Some(prefix) => paths
                .iter()
                .any(|p| p.as_str() == prefix || p.starts_with(&format!("{prefix}/"))),
            None => paths.iter().any(|p| p.as_str() == r),
        };
        assert!(
            documented,
            "spin.toml routes {r} to {component}, openapi.yaml has no path for it"
        );
    }
}

#[test]
fn spin_routing_rules() {
    let routes: Vec<(String, String)> = [
        ("/v1/actions", "intake"),
        ("/v1/actions/...", "decision"),
        ("/v1/audit", "audit"),
        ("/v1/audit/...", "audit"),
        ("/v1/a/...", "short"),
        ("/v1/a/b/...", "long"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(route(&routes, "/v1/actions"), Some("intake"));
    assert_eq!(route(&routes, "/v1/actions/x/decision"), Some("decision"));
    assert_eq!(route(&routes, "/v1/actionsx"), None);
    assert_eq!(route(&routes, "/v1/a/b/c"), Some("long"));
    assert_eq!(route(&routes, "/v1/a/b"), Some("long"));
    assert_eq!(route(&routes, "/v1/a/c"), Some("short"));
    assert_eq!(route(&routes, "/v1/audit/head"), Some("audit"));
}

// ---------------------------------------------------------------------------------------------
// The running app

fn token_for(f: &Fixture, op: &Value) -> Option<String> {
    let alt = op.get("security")?.as_array()?.first()?.as_object()?;
    let scheme = alt.keys().next()?;
    Some(match scheme.as_str() {
        "agentToken" => f.token("etl-bot").to_string(),
        "approverToken" => f.token("bob").to_string(),
        "adminToken" => f.admin_token.clone(),
        other => panic!("no test token for scheme {other}"),
    })
}

/// The documented example body (and its media type), made to fit the test directory.
fn example_body(spec: &Value, op: &Value) -> Option<(String, Vec<u8>)> {
    let content = resolve(spec, op.get("requestBody")?)["content"].as_object()?;
    let (media, mt) = content.iter().next()?;
    let mut example = mt.get("example").cloned().unwrap_or(json!({}));
    if let Some(o) = example.as_object_mut() {
        // The example's callback URL is not a test agent's prefix.
        o.remove("callback_url");
    }
    Some((media.clone(), serde_json::to_vec(&example).unwrap()))
}

#[tokio::test]
async fn the_running_app_answers_with_documented_statuses() {
    let spec = spec();
    let present = components(&manifest());
    let f = Fixture::new(Options::default()).await;
    let h = f.start().await;
    // A pending request for the `{id}` operations.
    let body = json!({"action": "db.export",
        "resource": {"type": "Dataset", "id": "openapi", "attributes": {"classification": "pii"}}});
    let r = h
        .post_as("/v1/actions", f.token("etl-bot"), &body)
        .await
        .expect(202);
    let id = r.json()["id"].as_str().unwrap().to_string();

    let mut checked = 0;
    for (template, method, op) in operations(&spec) {
        let component = op["x-countersign-component"].as_str().unwrap();
        if !present.contains(component) {
            continue;
        }
        let documented = statuses(&op);
        let path = sample_path(&template, &id);
        let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let body = example_body(&spec, &op);
        for token in [None, token_for(&f, &op)] {
            let auth = token.as_ref().map(|t| format!("Bearer {t}"));
            let mut headers: Vec<(&str, &str)> = Vec::new();
            if let Some(a) = &auth {
                headers.push(("authorization", a.as_str()));
            }
            if let Some((media, _)) = &body {
                headers.push(("content-type", media.as_str()));
            }
            let bytes = body.as_ref().map(|(_, b)| b.clone()).unwrap_or_default();
            let r = h
                .request(m.clone(), &path, Bytes::from(bytes), &headers)
                .await;
            let what = format!("{} {template} (token: {})", m, token.is_some());
            let s = r.status.as_u16();
            assert!(
                documented.contains(&s),
                "{what}: answered {s}, documented {documented:?}: {}",
                r.text()
            );
            // The answer has the documented shape.
            let resp = resolve(&spec, &op["responses"][s.to_string()]);
            let ct = r
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .split(';')
                .next()
                .unwrap()
                .trim()
                .to_string();
            if let Some(content) = resp.get("content").and_then(Value::as_object) {
                let mt = content.get(&ct).unwrap_or_else(|| {
                    panic!("{what}: content-type {ct:?} is not documented for {s}")
                });
                let mut errors = Vec::new();
                if ct == "application/x-ndjson" {
                    for (i, line) in r.text().lines().enumerate() {
                        let v: Value = serde_json::from_str(line).unwrap();
                        validate(
                            &spec,
                            &mt["x-item-schema"],
                            &v,
                            &format!("line {}", i + 1),
                            &mut errors,
                        );
                    }
                } else if let Some(schema) = mt.get("schema") {
                    validate(&spec, schema, &r.json(), "body", &mut errors);
                }
                assert!(
                    errors.is_empty(),
                    "{what}: {s} answer differs from openapi.yaml: {errors:#?}\n{}",
                    r.text()
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} answers checked");
}
