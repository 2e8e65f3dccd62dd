//! The committed OpenAPI document is generated from the code: this test regenerates it and fails
//! on any difference. `UPDATE_OPENAPI=1 cargo test -p crewkit-api openapi` (or `script/openapi`)
//! rewrites it.

#[test]
fn the_committed_openapi_document_matches_the_code() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../openapi/openapi.json");
    let generated = format!("{}\n", crewkit_api::startup::openapi_json());
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi/openapi.json is out of date: run `UPDATE_OPENAPI=1 cargo test -p crewkit-api openapi` and commit it"
    );
}

#[test]
fn every_operation_has_an_id_a_summary_a_description_and_declared_errors() {
    let spec: serde_json::Value = serde_json::from_str(&crewkit_api::startup::openapi_json()).unwrap();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let name = format!("{method} {path}");
            assert!(op["operationId"].is_string(), "{name} lacks operationId");
            assert!(op["summary"].is_string(), "{name} lacks a summary");
            assert!(op["description"].is_string(), "{name} lacks a description");
            if op.get("security").is_some() {
                for status in ["400", "401", "404", "503"] {
                    let r = &op["responses"][status];
                    assert!(r["content"]["application/problem+json"].is_object(), "{name} does not declare {status}");
                }
            }
        }
    }
}

#[test]
fn all_sixteen_operations_of_the_sessions_api_are_in_the_document() {
    let spec: serde_json::Value = serde_json::from_str(&crewkit_api::startup::openapi_json()).unwrap();
    let ops = [
        ("post", "/{org_id}/sessions"),
        ("get", "/{org_id}/sessions"),
        ("get", "/{org_id}/sessions/{id}"),
        ("patch", "/{org_id}/sessions/{id}"),
        ("post", "/{org_id}/sessions/{id}/end"),
        ("get", "/{org_id}/sessions/{id}/hierarchy"),
        ("get", "/{org_id}/sessions/threads"),
        ("get", "/{org_id}/sessions/search"),
        ("post", "/{org_id}/sessions/{id}/compact"),
        ("get", "/{org_id}/sessions/analytics/summary"),
        ("get", "/{org_id}/sessions/analytics/timeseries"),
        ("get", "/{org_id}/sessions/analytics/by-agent"),
        ("get", "/{org_id}/sessions/analytics/cost-breakdown"),
        ("get", "/{org_id}/sessions/analytics/by-user"),
        ("get", "/{org_id}/sessions/analytics/team-overview"),
        ("post", "/{org_id}/observability/sessions/{session_id}/events"),
    ];
    for (method, path) in ops {
        assert!(spec["paths"][path][method].is_object(), "{method} {path} is missing");
    }
    let list = &spec["paths"]["/{org_id}/sessions"]["get"]["parameters"];
    let names: Vec<&str> = list.as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    for name in ["page", "per_page", "project_id", "repo", "agent_name", "current_user_only"] {
        assert!(names.contains(&name), "list sessions lacks `{name}`");
    }
    let ts = &spec["paths"]["/{org_id}/sessions/analytics/timeseries"]["get"]["parameters"];
    let names: Vec<&str> = ts.as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    for name in ["start_date", "end_date", "interval", "metric"] {
        assert!(names.contains(&name), "timeseries lacks `{name}`");
    }
}
