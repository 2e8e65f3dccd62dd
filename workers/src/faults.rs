//! Fault injection for the fleet tests: `CREWKIT_FAULTS=analyze_session=fail,compact_session=delay:3000`
//! makes every job of a kind fail (retryably), panic, or take longer. Unset in production; the
//! tests use it to prove retries, dead jobs, panics and kills behave, on real processes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crewkit_jobs::lifecycle::JobError;

#[derive(Debug)]
pub enum Fault {
    Fail,
    Panic,
    /// Panics in the first N jobs, then lets the rest run.
    PanicFirst(AtomicUsize),
    Delay(Duration),
}

#[derive(Debug, Default)]
pub struct Faults(HashMap<String, Fault>);

impl Faults {
    pub fn parse(spec: Option<&str>) -> Self {
        let mut map = HashMap::new();
        for item in spec.unwrap_or_default().split(',').filter(|s| !s.is_empty()) {
            let Some((kind, fault)) = item.split_once('=') else {
                continue;
            };
            let fault = match fault {
                "fail" => Fault::Fail,
                "panic" => Fault::Panic,
                d => {
                    if let Some(ms) = d.strip_prefix("delay:").and_then(|ms| ms.parse().ok()) {
                        Fault::Delay(Duration::from_millis(ms))
                    } else if let Some(n) = d.strip_prefix("panic_first:").and_then(|n| n.parse().ok()) {
                        Fault::PanicFirst(AtomicUsize::new(n))
                    } else {
                        continue;
                    }
                }
            };
            map.insert(kind.trim().to_string(), fault);
        }
        if !map.is_empty() {
            tracing::warn!(?map, "fault injection is on");
        }
        Self(map)
    }

    /// Applies the fault configured for `kind`, if any, before the job's real work.
    pub async fn before(&self, kind: &str) -> Result<(), JobError> {
        match self.0.get(kind) {
            None => Ok(()),
            Some(Fault::Fail) => Err(JobError::Retryable("injected failure".into())),
            Some(Fault::Panic) => panic!("injected panic"),
            Some(Fault::PanicFirst(left)) => {
                if left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
                    panic!("injected panic");
                }
                Ok(())
            }
            Some(Fault::Delay(d)) => {
                tokio::time::sleep(*d).await;
                Ok(())
            }
        }
    }
}
