//! The generated OpenAPI document and the router describe the same routes: every
//! documented path and method is served (never the 404 fallback or a 405), and every
//! registered route is documented.

mod common;

use std::collections::BTreeSet;

use common::TestServer;
use serde_json::Value;

/// A concrete URL for a templated path.
fn concrete(path: &str) -> String {
    path.replace("{ns}", "probe")
        .replace("{q}", "routes")
        .replace("{id}", "01890000-0000-7000-8000-000000000000")
}

fn spec_routes(doc: &Value) -> BTreeSet<(String, String)> {
    let mut routes = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for method in ["get", "put", "post", "delete", "patch", "head", "options"] {
            if item.get(method).is_some() {
                routes.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    routes
}

/// Every `$ref` target in `v`, e.g. `#/components/schemas/ErrorBody`.
fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            for (k, child) in o {
                match (k.as_str(), child) {
                    ("$ref", Value::String(target)) => out.push(target.clone()),
                    _ => refs(child, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| refs(i, out)),
        _ => {}
    }
}

#[tokio::test]
async fn every_schema_reference_resolves() {
    let s = TestServer::start().await;
    let doc = s.get("/openapi.json").await.ok();
    let mut targets = Vec::new();
    refs(&doc, &mut targets);
    assert!(!targets.is_empty());
    for target in targets {
        let name = target.trim_start_matches("#/components/schemas/");
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "dangling $ref {target}"
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn every_documented_route_is_served_and_every_served_route_is_documented() {
    let s = TestServer::start().await;
    let doc = s.get("/openapi.json").await.ok();
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    let documented = spec_routes(&doc);
    let registered: BTreeSet<(String, String)> = courier_server::route_table()
        .into_iter()
        .map(|(m, p)| (m.to_string(), p.to_owned()))
        .collect();
    assert_eq!(
        documented.difference(&registered).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "documented but not registered"
    );
    assert_eq!(
        registered.difference(&documented).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "registered but not documented"
    );

    for (method, path) in &documented {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let reply = s
            .send(
                s.request(method.clone(), &concrete(path))
                    .header("content-type", "application/json")
                    .body("{}"),
            )
            .await;
        assert_ne!(reply.status, 405, "{method} {path}: {reply:?}");
        let fell_through = reply.status == 404 && reply.body["error"]["code"] == "not_found";
        assert!(!fell_through, "{method} {path} hit the 404 fallback: {reply:?}");
    }
    s.stop().await;
}
