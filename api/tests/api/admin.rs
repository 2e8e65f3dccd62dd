//! Users and API keys: admin only; a revoked key stops working at once on every API process.

use crewkit_api::startup::Application;
use crewkit_testkit::TestApp;
use serde_json::json;

#[tokio::test]
async fn admins_manage_users_and_keys_and_others_get_403() {
    let app = TestApp::spawn_without_worker().await;
    let org = &app.org;
    let (status, user) =
        app.post(&format!("/{org}/users"), &json!({"email": "Dev@Example.com", "role": "manager"})).await;
    assert_eq!(status, 201, "{user}");
    assert_eq!((user["email"].as_str(), user["role"].as_str()), (Some("dev@example.com"), Some("manager")));
    let (status, _) = app.post(&format!("/{org}/users"), &json!({"email": "dev@example.com"})).await;
    assert_eq!(status, 409);
    let (status, p) = app.post(&format!("/{org}/users"), &json!({"email": "nope", "role": "manager"})).await;
    assert_eq!((status.as_u16(), p["errors"][0]["field"].as_str()), (400, Some("email")));
    let (status, p) = app.post(&format!("/{org}/users"), &json!({"email": "x@example.com", "role": "owner"})).await;
    assert_eq!((status.as_u16(), p["errors"][0]["field"].as_str()), (400, Some("role")));
    let (_, users) = app.get(&format!("/{org}/users")).await;
    assert_eq!(users["data"].as_array().unwrap().len(), 2);

    let (status, key) = app.post(&format!("/{org}/api-keys"), &json!({"user_id": user["id"], "name": "ci"})).await;
    assert_eq!(status, 201, "{key}");
    let secret = key["api_key"].as_str().unwrap();
    assert!(secret.starts_with("ck_") && key["prefix"].as_str().is_some_and(|p| secret.starts_with(p)));
    let (_, keys) = app.get(&format!("/{org}/api-keys")).await;
    assert!(!keys.to_string().contains(secret), "secrets are never listed");

    // A manager may not administer.
    for (method, path) in [("GET", "users"), ("POST", "users"), ("GET", "api-keys"), ("POST", "api-keys")] {
        let req = app.http.request(method.parse().unwrap(), app.url(&format!("/{org}/{path}"))).bearer_auth(secret);
        let resp = req.json(&json!({"email": "y@example.com"})).send().await.unwrap();
        assert_eq!(resp.status(), 403, "{method} {path}");
    }
    let (status, _) = app.get_as(secret, &format!("/{org}/sessions")).await;
    assert_eq!(status, 200, "but may use the API");
}

#[tokio::test]
async fn a_revoked_key_is_refused_at_once_by_every_api_process() {
    let app = TestApp::spawn_without_worker().await;
    // A second API process on the same database and Redis.
    let mut config = app.config.clone();
    config.bind = "127.0.0.1:0".parse().unwrap();
    let second = Application::build(config, false).await.unwrap();
    let second_url = format!("http://127.0.0.1:{}", second.port());
    tokio::spawn(second.run_until_stopped(std::future::pending()));

    let (_, key) = app.post(&format!("/{}/api-keys", app.org), &json!({})).await;
    let secret = key["api_key"].as_str().unwrap().to_string();
    let list = |base: String| {
        let http = app.http.clone();
        let secret = secret.clone();
        let org = app.org.clone();
        async move { http.get(format!("{base}/{org}/sessions")).bearer_auth(secret).send().await.unwrap().status() }
    };
    // Both processes have the key in their cache now.
    assert_eq!(list(app.base.clone()).await, 200);
    assert_eq!(list(second_url.clone()).await, 200);
    // Both processes listen for revocations before one is made.
    let redis = redis::Client::open(app.config.redis_url.as_str()).unwrap();
    let mut conn = redis.get_multiplexed_async_connection().await.unwrap();
    let channel = format!("{}:revocations", app.config.queue_prefix);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, n): (String, i64) =
            redis::cmd("PUBSUB").arg("NUMSUB").arg(&channel).query_async(&mut conn).await.unwrap();
        if n >= 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "API processes did not subscribe");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let resp = app
        .http
        .delete(app.url(&format!("/{}/api-keys/{}", app.org, key["id"].as_str().unwrap())))
        .bearer_auth(&app.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(list(app.base.clone()).await, 401);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let status = list(second_url.clone()).await;
        if status == 401 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the second process still accepts the revoked key");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (_, keys) = app.get(&format!("/{}/api-keys", app.org)).await;
    assert!(keys["data"].as_array().unwrap().iter().any(|k| k["id"] == key["id"] && k["revoked_at"].is_string()));
}
