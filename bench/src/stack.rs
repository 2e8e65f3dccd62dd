//! The processes a run starts (the API, workers, S3's consumers) and what is read about them and
//! about the machine: peak RSS from `/proc/<pid>/status`, the load average from `/proc/loadavg`.
//! Every child is killed when its handle drops, so an aborted run leaves nothing behind.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::process::{Child, Command};

pub struct Proc {
    pub name: String,
    child: Child,
}

impl Proc {
    /// Starts `bin` with `env` added to ours, its output appended to `log`.
    pub fn spawn(name: &str, bin: &Path, args: &[&str], env: &[(String, String)], log: &Path) -> anyhow::Result<Self> {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
        let err = out.try_clone()?;
        let child = Command::new(bin)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        Ok(Self { name: name.to_string(), child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Fails when the process has exited (for start-up checks).
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            Some(status) => anyhow::bail!("{} exited during start-up ({status}); see its log", self.name),
            None => Ok(()),
        }
    }

    /// Peak resident set size so far (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        status_field(self.pid(), "VmHWM:")
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub async fn stop(mut self, grace: Duration) {
        let pid = self.pid();
        if pid != 0 {
            let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status().await;
        }
        if tokio::time::timeout(grace, self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }

    /// SIGKILL at once (S3's consumers: their queue is thrown away afterwards).
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

fn status_field(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line[field.len()..].trim().trim_end_matches("kB").trim().parse().ok()
}

/// CPU seconds (user + system) a process has used so far, all its threads; 0 if it is gone.
pub fn cpu_secs(pid: u32) -> f64 {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // Fields after the command name (which may hold spaces, so split after its closing paren):
    // utime and stime are fields 14 and 15, in clock ticks (100 a second on Linux).
    let Some(rest) = text.rsplit_once(')').map(|(_, r)| r) else { return 0.0 };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds used by each of a few processes between `start` and now.
#[derive(Clone, Copy)]
pub struct CpuMeter<const N: usize> {
    pids: [u32; N],
    start: [f64; N],
}

impl<const N: usize> CpuMeter<N> {
    pub fn start(pids: [u32; N]) -> Self {
        Self { pids, start: pids.map(cpu_secs) }
    }

    pub fn used(&self) -> [f64; N] {
        std::array::from_fn(|i| cpu_secs(self.pids[i]) - self.start[i])
    }
}

/// The 1, 5 and 15-minute load averages.
pub fn loadavg() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut it = text.split_whitespace().map(|v| v.parse().unwrap_or(0.0));
    [it.next().unwrap_or(0.0), it.next().unwrap_or(0.0), it.next().unwrap_or(0.0)]
}

/// Waits until `url` answers 200, or fails after `within`, checking that `proc` still runs.
pub async fn wait_ready(http: &reqwest::Client, url: &str, proc: &mut Proc, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(r) = http.get(url).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        proc.check_alive()?;
        anyhow::ensure!(Instant::now() < deadline, "{} did not answer {url} within {within:?}", proc.name);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
