//! The forwarder, `crewkit hook`, run as the agent runs it: the real binary, one payload on
//! stdin per call, against the real stack (`crewkit-testkit`).

mod corpus;
mod import;
mod spool;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use crewkit_testkit::TestApp;

/// One run of `crewkit hook`: its exit code and stderr.
pub struct HookRun {
    pub code: Option<i32>,
    pub stderr: String,
}

/// Pipes `payload` into `crewkit hook` aimed at `url`, with its own home (session cache) and spool.
pub fn run_hook(app: &TestApp, url: &str, home: &Path, payload: &[u8]) -> HookRun {
    let mut child = Command::new(env!("CARGO_BIN_EXE_crewkit"))
        .arg("hook")
        .env("CREWKIT_URL", url)
        .env("CREWKIT_API_KEY", &app.api_key)
        .env("CREWKIT_ORG", &app.org)
        .env("CREWKIT_SPOOL_DIR", home.join("spool"))
        .env("HOME", home)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("crewkit binary runs");
    child.stdin.take().unwrap().write_all(payload).unwrap();
    let out = child.wait_with_output().unwrap();
    HookRun { code: out.status.code(), stderr: String::from_utf8_lossy(&out.stderr).into_owned() }
}

pub fn spooled(home: &Path) -> usize {
    std::fs::read_dir(home.join("spool"))
        .map(|d| d.filter_map(Result::ok).filter(|e| e.path().extension().is_some_and(|x| x == "json")).count())
        .unwrap_or(0)
}

pub fn temp_home() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("crewkit-hook-test-{}", uuid_like()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn uuid_like() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("{}-{nanos}", std::process::id())
}
