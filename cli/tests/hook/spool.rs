//! Nothing is lost when the API is down: events wait in the spool and the next call sends them
//! first, once each, in order.

use crewkit_testkit::TestApp;
use serde_json::json;

use super::{run_hook, spooled, temp_home};

#[tokio::test(flavor = "multi_thread")]
async fn events_spooled_while_the_api_is_down_are_sent_first_by_the_next_call() {
    let app = TestApp::spawn().await;
    let home = temp_home();
    let payload = |n: u32| {
        serde_json::to_vec(
            &json!({"session_id": "spool-1", "hook_event_name": "UserPromptSubmit", "prompt": format!("p{n}")}),
        )
        .unwrap()
    };

    let down = "http://127.0.0.1:1";
    for n in 0..3 {
        let run = tokio::task::block_in_place(|| run_hook(&app, down, &home, &payload(n)));
        assert_eq!(run.code, Some(0), "the hook never fails the agent");
        assert!(run.stderr.contains("spooled"), "it says what went wrong: {}", run.stderr);
    }
    assert_eq!(spooled(&home), 3);

    let run = tokio::task::block_in_place(|| run_hook(&app, &app.base, &home, &payload(3)));
    assert_eq!((run.code, run.stderr.as_str()), (Some(0), ""));
    assert_eq!(spooled(&home), 0, "the spool was flushed");

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let prompts = loop {
        let events = app.events("spool-1").await;
        if events.len() >= 4 || std::time::Instant::now() > deadline {
            break events.iter().map(|e| e["data"]["prompt"].as_str().unwrap().to_string()).collect::<Vec<_>>();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(prompts, ["p0", "p1", "p2", "p3"], "once each, in the order they were read");

    // Resending the same spooled events (a crash after sending, before deleting) stores nothing new.
    let _ = std::fs::remove_dir_all(&home);
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_on_stdin_is_reported_and_the_hook_still_exits_zero() {
    let app = TestApp::spawn_without_worker().await;
    let home = temp_home();
    for input in [&b"not json at all"[..], b"", b"[1,2,3]", br#"{"message": "Test notification"}"#] {
        let run = tokio::task::block_in_place(|| run_hook(&app, &app.base, &home, input));
        assert_eq!(run.code, Some(0));
        assert!(run.stderr.contains("not recorded"), "{:?}: {}", String::from_utf8_lossy(input), run.stderr);
    }
    assert_eq!(spooled(&home), 0, "nothing to retry: these name no session");
    let _ = std::fs::remove_dir_all(&home);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_503_with_retry_after_makes_the_forwarder_spool_without_trying_until_then() {
    let vars = std::collections::HashMap::from([("CREWKIT_MAX_QUEUE_DEPTH".to_string(), "0".to_string())]);
    let app = TestApp::spawn_with(false, vars).await;
    let home = temp_home();
    let payload =
        |n: u32| serde_json::to_vec(&json!({"session_id": "busy", "hook_event_name": "Stop", "n": n})).unwrap();
    // No worker: the first batch stays queued, and once sampled the queue is over its limit of 0.
    let first = tokio::task::block_in_place(|| run_hook(&app, &app.base, &home, &payload(0)));
    assert_eq!((first.code, first.stderr.as_str()), (Some(0), ""));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut n = 1;
    loop {
        let run = tokio::task::block_in_place(|| run_hook(&app, &app.base, &home, &payload(n)));
        assert_eq!(run.code, Some(0));
        n += 1;
        if run.stderr.contains("503") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never refused: {}", run.stderr);
    }
    let pushed = app.jobs_pushed("persist_events").await;
    let run = tokio::task::block_in_place(|| run_hook(&app, &app.base, &home, &payload(n)));
    assert!(run.stderr.contains("asked to wait"), "{}", run.stderr);
    assert_eq!(app.jobs_pushed("persist_events").await, pushed, "it did not even try");
    assert_eq!(spooled(&home), 2, "the refused event and the one after it wait in the spool");
    let _ = std::fs::remove_dir_all(&home);
}
