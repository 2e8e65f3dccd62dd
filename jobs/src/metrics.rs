//! Prometheus metrics, kept in one process-wide registry and rendered in the text exposition
//! format. Hand-rolled on purpose: a few counters and histograms need no exporter stack, and the
//! hot path pays one uncontended mutex per update.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{LazyLock, Mutex};

/// Histogram buckets, in seconds.
const BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

type Key = (&'static str, Vec<(&'static str, String)>);

/// A gauge read at render time: name, help, labels, value.
pub type Gauge = (&'static str, &'static str, Vec<(&'static str, String)>, f64);

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Registry {
    counters: BTreeMap<Key, u64>,
    histograms: BTreeMap<Key, Histogram>,
    help: BTreeMap<&'static str, &'static str>,
}

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(Default::default);

fn key(name: &'static str, labels: &[(&'static str, &str)]) -> Key {
    (name, labels.iter().map(|(k, v)| (*k, v.to_string())).collect())
}

/// Adds `by` to a counter.
pub fn inc(name: &'static str, help: &'static str, labels: &[(&'static str, &str)], by: u64) {
    let mut r = REGISTRY.lock().expect("metrics lock");
    r.help.entry(name).or_insert(help);
    *r.counters.entry(key(name, labels)).or_default() += by;
}

/// Records one observation, in seconds.
pub fn observe(name: &'static str, help: &'static str, labels: &[(&'static str, &str)], secs: f64) {
    let mut r = REGISTRY.lock().expect("metrics lock");
    r.help.entry(name).or_insert(help);
    let h = r.histograms.entry(key(name, labels)).or_default();
    for (i, b) in BUCKETS.iter().enumerate() {
        if secs <= *b {
            h.counts[i] += 1;
        }
    }
    h.sum += secs;
    h.count += 1;
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn labels(ls: &[(&'static str, String)], extra: Option<(&str, String)>) -> String {
    let mut parts: Vec<String> = ls.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    if parts.is_empty() { String::new() } else { format!("{{{}}}", parts.join(",")) }
}

/// The exposition text: every counter and histogram, then the given gauges.
pub fn render(gauges: &[Gauge]) -> String {
    let r = REGISTRY.lock().expect("metrics lock");
    let mut out = String::new();
    let mut last = "";
    for ((name, ls), v) in &r.counters {
        if *name != last {
            let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} counter", r.help.get(name).unwrap_or(&""));
            last = name;
        }
        let _ = writeln!(out, "{name}{} {v}", labels(ls, None));
    }
    last = "";
    for ((name, ls), h) in &r.histograms {
        if *name != last {
            let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} histogram", r.help.get(name).unwrap_or(&""));
            last = name;
        }
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(out, "{name}_bucket{} {}", labels(ls, Some(("le", b.to_string()))), h.counts[i]);
        }
        let _ = writeln!(out, "{name}_bucket{} {}", labels(ls, Some(("le", "+Inf".into()))), h.count);
        let _ = writeln!(out, "{name}_sum{} {}", labels(ls, None), h.sum);
        let _ = writeln!(out, "{name}_count{} {}", labels(ls, None), h.count);
    }
    last = "";
    for (name, help, ls, v) in gauges {
        if *name != last {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            last = name;
        }
        let _ = writeln!(out, "{name}{} {v}", labels(ls, None));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_histograms_render_in_the_exposition_format() {
        inc("crewkit_test_total", "a test counter", &[("kind", "a\"b")], 2);
        observe("crewkit_test_seconds", "a test histogram", &[("kind", "x")], 0.02);
        let text = render(&[("crewkit_test_depth", "a gauge", vec![("kind", "y".into())], 3.0)]);
        assert!(text.contains("# TYPE crewkit_test_total counter\ncrewkit_test_total{kind=\"a\\\"b\"} 2"), "{text}");
        assert!(text.contains("crewkit_test_seconds_bucket{kind=\"x\",le=\"0.025\"} 1"), "{text}");
        assert!(text.contains("crewkit_test_seconds_bucket{kind=\"x\",le=\"0.01\"} 0"), "{text}");
        assert!(text.contains("crewkit_test_seconds_count{kind=\"x\"} 1"), "{text}");
        assert!(text.contains("# TYPE crewkit_test_depth gauge\ncrewkit_test_depth{kind=\"y\"} 3"), "{text}");
    }
}
