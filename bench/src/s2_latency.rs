//! S2, accept latency at a constant rate: 50% and 80% of S1's maximum at one event a batch (what
//! the hook forwarder sends: one event per hook call), open-loop with latencies measured from
//! when each request was due. The baseline is the no-op handler at the same rate. The ratio is
//! ours' p99 over the baseline's; the target is on ours' p99 itself.

use serde_json::{Value, json};

use crate::ctx::Bench;
use crate::http::{self, Latencies};
use crate::stats::{Pairs, median};

const SHARES: [f64; 2] = [0.5, 0.8];

pub async fn run(b: &Bench, max_rps: f64) -> anyhow::Result<Value> {
    let t = crate::s1_accept::target(b, 1).await?;
    let bodies = crate::s1_accept::bodies(1);
    let dur = b.secs(5.0, 1.0);
    let auth = b.auth();
    let mut by_rate = serde_json::Map::new();
    let mut headline = Value::Null;
    for share in SHARES {
        let rate = (max_rps * share).max(10.0);
        let mut pairs = Pairs::new("p99 ms");
        let mut ours_all: Vec<Latencies> = Vec::new();
        let mut base_all: Vec<Latencies> = Vec::new();
        for _ in 0..b.pairs() {
            b.clear_prefix(&b.prefix).await?;
            let load = pairs.begin();
            let base = http::open_loop(&b.http, &auth, &t.noop[0], &bodies, rate, dur).await;
            let ours = http::open_loop(&b.http, &auth, &t.urls[0], &bodies, rate, dur).await;
            for (l, what) in [(&base, "baseline"), (&ours, "ours")] {
                if l.counts.errors > 0 {
                    eprintln!("   S2 {what}: {} errors, first: {:?}", l.counts.errors, l.counts.first_error);
                }
            }
            pairs.push(
                load,
                base.percentile_ms(99.0),
                ours.percentile_ms(99.0),
                json!({"baseline": base.json(), "ours": ours.json()}),
            );
            ours_all.push(ours);
            base_all.push(base);
        }
        let pick = |all: &[Latencies], p: f64| median(&all.iter().map(|l| l.percentile_ms(p)).collect::<Vec<_>>());
        let mut v = pairs.json();
        v["rate_rps"] = json!(rate);
        v["ours"]["p50_ms"] = json!(pick(&ours_all, 50.0));
        v["ours"]["p99_ms"] = json!(pick(&ours_all, 99.0));
        v["ours"]["p999_ms"] = json!(pick(&ours_all, 99.9));
        v["baseline"]["p50_ms"] = json!(pick(&base_all, 50.0));
        v["baseline"]["p99_ms"] = json!(pick(&base_all, 99.0));
        v["baseline"]["p999_ms"] = json!(pick(&base_all, 99.9));
        eprintln!(
            "   {:.0}% ({rate:.0} req/s): ours p50 {:.2} p99 {:.2} p99.9 {:.2} ms; baseline p99 {:.2} ms",
            share * 100.0,
            pick(&ours_all, 50.0),
            pick(&ours_all, 99.0),
            pick(&ours_all, 99.9),
            pick(&base_all, 99.0)
        );
        if share == 0.5 {
            headline = v.clone();
        }
        by_rate.insert(format!("{:.0}%", share * 100.0), v);
    }
    b.clear_prefix(&b.prefix).await?;
    let p99 = headline["ours"]["p99_ms"].as_f64().unwrap_or(f64::INFINITY);
    let mut out = headline;
    out["target"] = json!("ours p99 <= 10 ms at 50%");
    out["met"] = json!(p99 <= 10.0);
    out["by_rate"] = Value::Object(by_rate);
    out["batch_size"] = json!(1);
    out["seconds_per_run"] = json!(dur.as_secs_f64());
    Ok(out)
}
