//! `latest.json` (everything, for comparing runs) and `latest.md` (the table the README shows).

use std::fmt::Write;
use std::path::Path;

use serde_json::{Map, Value, json};

fn num(v: &Value) -> String {
    match v.as_f64() {
        None => "–".into(),
        Some(x) if x.abs() >= 1000.0 => format!("{:.0}", x),
        Some(x) if x.abs() >= 10.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.2}"),
    }
}

fn ratio(v: &Value) -> String {
    if v["ratio_median"].is_null() {
        return "–".into();
    }
    let mut s = format!("{} ({}–{})", num(&v["ratio_median"]), num(&v["ratio_min"]), num(&v["ratio_max"]));
    if v["noisy"].as_bool() == Some(true) {
        s.push_str(" ⚠ noisy");
    }
    s
}

fn met(v: &Value) -> &'static str {
    match v["met"].as_bool() {
        Some(true) => "yes",
        Some(false) => "**no**",
        None => "",
    }
}

fn row(md: &mut String, cells: &[String]) {
    let _ = writeln!(md, "| {} |", cells.join(" | "));
}

fn table(s: &Map<String, Value>) -> String {
    let mut md = String::new();
    row(&mut md, &["id", "scenario", "ours", "baseline", "ratio median (min–max)", "target", "met"].map(String::from));
    row(&mut md, &["---"; 7].map(String::from));
    let e = String::new;
    if let Some(v) = s.get("S1") {
        for size in [1, 10, 100] {
            let b = &v["by_batch_size"][format!("batch_{size}")];
            let (target, ok) = if size == 100 {
                (v["target"].as_str().unwrap_or_default().to_string(), met(v).to_string())
            } else {
                (e(), e())
            };
            row(
                &mut md,
                &[
                    "S1".into(),
                    format!("accept, {size}/batch (events/s)"),
                    num(&b["ours"]["median"]),
                    format!("{} no-op", num(&b["baseline"]["median"])),
                    ratio(b),
                    target,
                    ok,
                ],
            );
        }
    }
    if let Some(v) = s.get("S2") {
        for share in ["50%", "80%"] {
            let b = &v["by_rate"][share];
            let (target, ok) =
                if share == "50%" { ("p99 ≤ 10 ms".to_string(), met(v).to_string()) } else { (e(), e()) };
            row(
                &mut md,
                &[
                    "S2".into(),
                    format!(
                        "latency at {share} of S1 max, 1/batch ({} req/s): p50 / p99 / p99.9 ms",
                        num(&b["rate_rps"])
                    ),
                    format!(
                        "{} / {} / {}",
                        num(&b["ours"]["p50_ms"]),
                        num(&b["ours"]["p99_ms"]),
                        num(&b["ours"]["p999_ms"])
                    ),
                    format!(
                        "{} / {} / {} no-op",
                        num(&b["baseline"]["p50_ms"]),
                        num(&b["baseline"]["p99_ms"]),
                        num(&b["baseline"]["p999_ms"])
                    ),
                    format!("{} (p99)", ratio(b)),
                    target,
                    ok,
                ],
            );
        }
    }
    if let Some(v) = s.get("S3") {
        for (key, what) in [
            ("push_only", "queue push-only (jobs/s)"),
            ("consume_1_process", "consume 100k backlog, 1 process (jobs/s)"),
            ("consume_2_processes", "consume, 2 processes (jobs/s)"),
        ] {
            let b = &v[key];
            row(
                &mut md,
                &[
                    "S3".into(),
                    what.into(),
                    num(&b["ours"]["median"]),
                    format!("{} LPUSH -P 16", num(&b["baseline"]["median"])),
                    ratio(b),
                    "≥ 0.1".into(),
                    if b["ratio_median"].as_f64().unwrap_or(0.0) >= 0.1 { "yes".into() } else { "**no**".into() },
                ],
            );
        }
        let sc = &v["scaling_2_over_1"];
        row(
            &mut md,
            &[
                "S3".into(),
                "2 processes over 1 (baseline-normalised)".into(),
                format!("{}×", num(&sc["median"])),
                e(),
                e(),
                "≥ 1.6×".into(),
                if sc["median"].as_f64().unwrap_or(0.0) >= 1.6 { "yes".into() } else { "**no**".into() },
            ],
        );
    }
    if let Some(v) = s.get("S4") {
        row(
            &mut md,
            &[
                "S4".into(),
                format!("end to end, {} events in batches of 100 (persisted events/s)", num(&v["events_per_run"])),
                num(&v["ours"]["median"]),
                format!("{} COPY rows/s", num(&v["baseline"]["median"])),
                ratio(v),
                "≥ 0.5".into(),
                met(v).into(),
            ],
        );
    }
    if let Some(v) = s.get("S5") {
        row(
            &mut md,
            &[
                "S5".into(),
                format!("last event to searchable, {} trials: p50 / p99 ms", num(&v["ours"]["trials"])),
                format!("{} / {}", num(&v["ours"]["p50_ms"]), num(&v["ours"]["p99_ms"])),
                "–".into(),
                "–".into(),
                "p99 < 1 s".into(),
                met(v).into(),
            ],
        );
    }
    if let Some(v) = s.get("S6")
        && let Some(eps) = v["ours"].as_object()
    {
        {
            let order = ["list", "summary", "timeseries", "by-agent", "cost-breakdown", "by-user", "team-overview"];
            let mut eps: Vec<_> = eps.iter().collect();
            eps.sort_by_key(|(k, _)| order.iter().position(|o| o == k));
            for (name, m) in eps {
                let ok = if m["p99_ms"].as_f64().unwrap_or(f64::INFINITY) < 50.0 { "yes" } else { "**no**" };
                row(
                    &mut md,
                    &[
                        "S6".into(),
                        format!("{name} over {} sessions: p50 / p99 ms", num(&v["sessions_seeded"])),
                        format!("{} / {}", num(&m["p50_ms"]), num(&m["p99_ms"])),
                        "–".into(),
                        "–".into(),
                        "p99 < 50 ms".into(),
                        ok.into(),
                    ],
                );
            }
        }
    }
    md
}

pub fn write(out: &Path, meta: &Value, scenarios: &Map<String, Value>, correct: &Value) -> anyhow::Result<()> {
    let doc = json!({"meta": meta, "scenarios": scenarios, "correct": correct});
    std::fs::write(out.join("latest.json"), serde_json::to_string_pretty(&doc)? + "\n")?;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Run: {} mode, {} s, {} CPUs, load average {} at the start and {} at the end; {} interleaved pairs per ratio.\n",
        meta["mode"].as_str().unwrap_or_default(),
        num(&meta["wall_seconds"]),
        meta["cpus"],
        meta["loadavg_start"],
        meta["loadavg_end"],
        meta["pairs"],
    );
    md.push_str(&table(scenarios));
    let _ = writeln!(
        md,
        "\nCorrectness (S4 + S5): {} events in, {} rows in PostgreSQL, {} lost, {} duplicated.",
        correct["events_in"], correct["rows"], correct["lost"], correct["duplicated"]
    );
    let rss = &meta["extra"]["peak_rss_s4"];
    if !rss.is_null() {
        let mib = |v: &Value| v.as_f64().map(|k| format!("{:.0} MiB", k / 1024.0)).unwrap_or("–".into());
        let _ = writeln!(md, "Peak RSS during S4: API {}, worker {}.", mib(&rss["api_kib"]), mib(&rss["worker_kib"]));
    }
    std::fs::write(out.join("latest.md"), md)?;
    Ok(())
}
