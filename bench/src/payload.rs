//! Event batches shaped like real Claude Code hook payloads (~340 bytes an event): tool calls,
//! tool results, prompts and notifications, with the fields the hooks really send.

use std::fmt::Write;

/// One event as the forwarder posts it: a client id (UUIDv7), the hook's name, a timestamp and
/// the hook's payload. `n` picks the kind; `word` goes into prompts (S5 searches for it).
pub fn event(n: u64, session: &str, word: &str) -> String {
    let id = uuid::Uuid::now_v7();
    let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let common = format!(
        r#""session_id":"{session}","transcript_path":"/home/dev/.claude/projects/-home-dev-acme/{}.jsonl","cwd":"/home/dev/acme""#,
        &session[..8]
    );
    let tool = format!("toolu_01{:016X}{:06}", n.wrapping_mul(0x9E37_79B9_7F4A_7C15), n % 1_000_000);
    let (kind, data) = match n % 4 {
        0 => (
            "PreToolUse",
            format!(
                r#"{{{common},"hook_event_name":"PreToolUse","tool_name":"Bash","tool_input":{{"command":"cargo test -p api","description":"Run the API tests"}},"tool_use_id":"{tool}"}}"#
            ),
        ),
        1 => (
            "PostToolUse",
            format!(
                r#"{{{common},"hook_event_name":"PostToolUse","tool_name":"Read","tool_input":{{"file_path":"/home/dev/acme/src/lib.rs"}},"tool_response":{{"ok":true}},"tool_use_id":"{tool}"}}"#
            ),
        ),
        2 => (
            "UserPromptSubmit",
            format!(
                r#"{{{common},"hook_event_name":"UserPromptSubmit","permission_mode":"default","prompt":"Find why the {word} handler drops events under load and fix it"}}"#
            ),
        ),
        _ => (
            "Notification",
            format!(
                r#"{{{common},"hook_event_name":"Notification","message":"Claude needs your permission to use Bash","notification_type":"permission_prompt"}}"#
            ),
        ),
    };
    format!(r#"{{"id":"{id}","event_type":"{kind}","timestamp":"{ts}","data":{data}}}"#)
}

/// `{"events": [...]}` of `size` events starting at kind `first`.
pub fn batch(first: u64, size: usize, session: &str, word: &str) -> String {
    let mut out = String::with_capacity(size * 360 + 16);
    out.push_str(r#"{"events":["#);
    for i in 0..size {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{}", event(first + i as u64, session, word));
    }
    out.push_str("]}");
    out
}

/// The mean size of an event, for the report.
pub fn mean_event_bytes() -> usize {
    let s = uuid::Uuid::now_v7().to_string();
    (0..400).map(|n| event(n, &s, "benchmark").len()).sum::<usize>() / 400
}
