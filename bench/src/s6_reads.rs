//! S6, reads at scale: 1M sessions seeded straight into the real schema with SQL (90 days, 40
//! users, 6 projects, 12 repositories, 4 agents, 5 models, most with cost and some without),
//! then list sessions and each analytics endpoint (default 30-day window) timed one request at a
//! time. For every endpoint over 50 ms at p99, the plans of its slow queries are captured with
//! PostgreSQL's auto_explain (ANALYZE, BUFFERS) from the very queries the API runs, into
//! `bench/results/explain-<endpoint>.txt`.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::ctx::Bench;

const ENDPOINTS: [(&str, &str); 7] = [
    ("list", "/sessions"),
    ("summary", "/sessions/analytics/summary"),
    ("timeseries", "/sessions/analytics/timeseries"),
    ("by-agent", "/sessions/analytics/by-agent"),
    ("cost-breakdown", "/sessions/analytics/cost-breakdown"),
    ("by-user", "/sessions/analytics/by-user"),
    ("team-overview", "/sessions/analytics/team-overview"),
];
const TARGET_MS: f64 = 50.0;

const SEED: &[&str] = &[
    "INSERT INTO users (id, org_id, email, role)
       SELECT gen_random_uuid(), $1, 'dev' || g || '@bench.dev', CASE WHEN g % 10 = 0 THEN 'manager' ELSE 'member' END
         FROM generate_series(1, 40) g",
    "INSERT INTO projects (id, org_id, name) SELECT gen_random_uuid(), $1, 'project-' || g FROM generate_series(1, 6) g",
    "INSERT INTO repositories (id, org_id, project_id, host, slug, remote_url)
       SELECT gen_random_uuid(), $1, p.id, 'github.com', 'acme/repo-' || g, 'git@github.com:acme/repo-' || g
         FROM generate_series(1, 12) g
         JOIN (SELECT id, row_number() OVER (ORDER BY name) - 1 AS i FROM projects WHERE org_id = $1) p ON p.i = g % 6",
    "CREATE TEMP TABLE seed ON COMMIT DROP AS
     WITH u AS (SELECT array_agg(id ORDER BY email) a FROM users WHERE org_id = $1 AND email LIKE '%@bench.dev'),
          r AS (SELECT array_agg(id ORDER BY slug) a, array_agg(project_id ORDER BY slug) p FROM repositories WHERE org_id = $1)
     SELECT g, gen_random_uuid() AS cid, gen_random_uuid() AS rid,
            now() - random() * interval '90 days' AS t, (random() * 7200)::int AS secs,
            u.a[1 + (g * 7) % array_length(u.a, 1)] AS uid,
            CASE WHEN g % 9 = 0 THEN NULL ELSE r.a[1 + (g * 13) % array_length(r.a, 1)] END AS repo,
            CASE WHEN g % 9 = 0 THEN NULL ELSE r.p[1 + (g * 13) % array_length(r.a, 1)] END AS proj,
            CASE WHEN g % 10 < 6 THEN 'claude-code' WHEN g % 10 < 8 THEN 'codex' WHEN g % 10 < 9 THEN 'cursor' ELSE 'gemini' END AS agent,
            (random() * 300000)::bigint AS tin, (random() * 40000)::bigint AS tout,
            (random() * 2000000)::bigint AS tcr, (random() * 100000)::bigint AS tcw,
            CASE WHEN g % 7 = 0 THEN NULL ELSE round((random() * 6)::numeric, 6) END AS cost,
            (random() * 400)::int AS events
       FROM generate_series(1, $2) g, u, r",
    "INSERT INTO runs (id, org_id, user_id, project_id, repository_id, started_at)
       SELECT rid, $1, uid, proj, repo, t FROM seed",
    "INSERT INTO conversations (id, org_id, run_id, user_id, project_id, repository_id, thread_id, agent_name,
            agent_session_id, title, status, end_reason, started_at, ended_at, first_event_at, last_event_at,
            input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_usd, event_count,
            tool_call_count, error_count, models_cost_usd, models_tokens)
       SELECT cid, $1, rid, uid, proj, repo, cid, agent, 'seed-' || g, 'Seeded session ' || g,
              CASE WHEN t > now() - interval '2 hours' THEN 'active' ELSE 'ended' END,
              CASE WHEN t > now() - interval '2 hours' THEN NULL WHEN g % 13 = 0 THEN 'idle' ELSE 'client' END,
              t, CASE WHEN t > now() - interval '2 hours' THEN NULL ELSE t + secs * interval '1 second' END,
              t, t + secs * interval '1 second', tin, tout, tcr, tcw, cost, events, events / 3,
              CASE WHEN g % 11 = 0 THEN 1 + g % 3 ELSE 0 END,
              -- The sums of the model rows below, so the rebuild finds them right and rewrites no row.
              CASE WHEN cost IS NULL THEN 0 WHEN g % 2 = 0 THEN cost * 0.8 + cost * 0.2 ELSE cost END,
              CASE WHEN cost IS NULL THEN 0
                   ELSE tin * 8 / 10 + tout * 8 / 10 + tcr * 8 / 10 + tcw * 8 / 10
                        + CASE WHEN g % 2 = 0 THEN tin * 2 / 10 + tout * 2 / 10 + tcr * 2 / 10 + tcw * 2 / 10 ELSE 0 END
              END
         FROM seed",
    "INSERT INTO conversation_models (conversation_id, model, input_tokens, output_tokens, cache_read_tokens,
            cache_write_tokens, cost_usd)
       SELECT cid, (ARRAY['claude-sonnet-4-5', 'claude-opus-4-1', 'gpt-5-codex', 'gemini-2.5-pro'])[1 + g % 4],
              tin * 8 / 10, tout * 8 / 10, tcr * 8 / 10, tcw * 8 / 10, CASE WHEN g % 2 = 0 THEN cost * 0.8 ELSE cost END
         FROM seed WHERE cost IS NOT NULL
       UNION ALL
       SELECT cid, 'claude-haiku-4-5', tin * 2 / 10, tout * 2 / 10, tcr * 2 / 10, tcw * 2 / 10, cost * 0.2
         FROM seed WHERE cost IS NOT NULL AND g % 2 = 0",
];

async fn seed(b: &Bench, n: i64) -> anyhow::Result<f64> {
    let org: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM orgs WHERE slug = $1").bind(&b.org).fetch_one(&b.db).await?;
    let start = Instant::now();
    // Bulk load as the rollups migration says: triggers off, load, one rebuild of the rollups
    // (per-row triggers would take about 1 ms a session). Schemas without rollups load plainly.
    let rollups: bool =
        sqlx::query_scalar("SELECT to_regproc('crewkit_rebuild_rollups') IS NOT NULL").fetch_one(&b.db).await?;
    let mut tx = b.db.begin().await?;
    let triggers = |on: &str| {
        [
            format!("ALTER TABLE conversations {on} TRIGGER USER"),
            format!("ALTER TABLE conversation_models {on} TRIGGER USER"),
        ]
    };
    if rollups {
        for sql in triggers("DISABLE") {
            sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut *tx).await?;
        }
    }
    for (i, sql) in SEED.iter().enumerate() {
        let q = sqlx::query(sqlx::AssertSqlSafe(*sql)).bind(org);
        let q = if i == 3 { q.bind(n) } else { q };
        q.execute(&mut *tx).await?;
    }
    if rollups {
        for sql in triggers("ENABLE") {
            sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut *tx).await?;
        }
        sqlx::query("SELECT crewkit_rebuild_rollups()").execute(&mut *tx).await?;
    }
    tx.commit().await?;
    for t in [
        "runs",
        "conversations",
        "conversation_models",
        "users",
        "repositories",
        "projects",
        "conversation_rollups",
        "model_rollups",
    ] {
        // conversation_rollups is absent from schemas before the rollups migration.
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!("VACUUM ANALYZE {t}"))).execute(&b.db).await;
    }
    Ok(start.elapsed().as_secs_f64())
}

async fn get_ms(b: &Bench, url: &str) -> anyhow::Result<f64> {
    let t = Instant::now();
    let r = b.http.get(url).header("authorization", b.auth()).send().await?;
    let status = r.status();
    let body = r.bytes().await?;
    anyhow::ensure!(status.is_success(), "{url}: {status} {}", String::from_utf8_lossy(&body));
    Ok(t.elapsed().as_secs_f64() * 1000.0)
}

async fn measure(b: &Bench, path: &str) -> anyhow::Result<Value> {
    let url = b.url(&format!("/{}{path}", b.org));
    for _ in 0..2 {
        get_ms(b, &url).await?;
    }
    let (max_n, budget) = if b.quick() { (10, Duration::from_secs(1)) } else { (60, Duration::from_secs(12)) };
    let start = Instant::now();
    let mut us = Vec::new();
    while us.len() < max_n && (us.len() < 5 || start.elapsed() < budget) {
        us.push((get_ms(b, &url).await? * 1000.0) as u64);
    }
    us.sort_unstable();
    let p = |q: f64| crate::stats::percentile(&us, q) / 1000.0;
    Ok(json!({"p50_ms": p(50.0), "p99_ms": p(99.0), "max_ms": p(100.0), "requests": us.len()}))
}

/// Runs each slow endpoint once with auto_explain on and keeps what PostgreSQL logged.
async fn explain(b: &Bench, slow: &[(&str, &str)]) -> anyhow::Result<Vec<String>> {
    // Plans from an earlier run would read as this run's.
    for entry in std::fs::read_dir(&b.args.out)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("explain-") && name.ends_with(".txt") {
            std::fs::remove_file(entry.path())?;
        }
    }
    let Some(log) = b.args.pg_log.clone() else {
        return Ok(Vec::new());
    };
    let db: String = sqlx::query_scalar("SELECT current_database()").fetch_one(&b.db).await?;
    let set = |k: &str, v: &str| format!("ALTER DATABASE \"{db}\" SET {k} = '{v}'");
    for sql in [
        set("session_preload_libraries", "auto_explain"),
        set("auto_explain.log_min_duration", "20ms"),
        set("auto_explain.log_analyze", "on"),
        set("auto_explain.log_buffers", "on"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&b.db).await?;
    }
    let api = b.start_api().await?;
    let mut files = Vec::new();
    for (name, path) in slow {
        let before = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        get_ms(b, &b.url(&format!("/{}{path}", b.org))).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let text = std::fs::read(&log)?;
        let new = String::from_utf8_lossy(&text[(before as usize).min(text.len())..]).to_string();
        let plans: String = new.find("duration:").map(|i| new[i..].to_string()).unwrap_or(new);
        let file = b.args.out.join(format!("explain-{name}.txt"));
        std::fs::write(
            &file,
            format!("# auto_explain (ANALYZE, BUFFERS) of GET /{{org}}{path}, one request\n{plans}"),
        )?;
        // Only the file name: results are compared across machines, whose paths differ.
        files.push(file.file_name().map_or_else(String::new, |f| f.to_string_lossy().into_owned()));
    }
    api.stop(Duration::from_secs(10)).await;
    sqlx::query(sqlx::AssertSqlSafe(format!("ALTER DATABASE \"{db}\" RESET ALL"))).execute(&b.db).await?;
    Ok(files)
}

pub async fn run(b: &Bench) -> anyhow::Result<Value> {
    let n: i64 = if b.quick() { 50_000 } else { 1_000_000 };
    let seed_secs = seed(b, n).await?;
    eprintln!("   seeded {n} sessions in {seed_secs:.0} s");
    let api = b.start_api().await?;
    let mut endpoints = serde_json::Map::new();
    let mut slow = Vec::new();
    let mut worst: f64 = 0.0;
    for (name, path) in ENDPOINTS {
        let v = measure(b, path).await?;
        let p99 = v["p99_ms"].as_f64().unwrap_or(f64::INFINITY);
        eprintln!("   {name}: p50 {:.1} ms, p99 {p99:.1} ms", v["p50_ms"].as_f64().unwrap_or(0.0));
        worst = worst.max(p99);
        if p99 > TARGET_MS {
            slow.push((name, path));
        }
        endpoints.insert(name.to_string(), v);
    }
    api.stop(Duration::from_secs(10)).await;
    let files = explain(b, &slow).await?;
    Ok(json!({
        "ratio_median": null, "ratio_min": null, "ratio_max": null,
        "target": "p99 < 50 ms for every endpoint",
        "met": worst < TARGET_MS,
        "ours": endpoints,
        "baseline": null,
        "sessions_seeded": n,

        "seed_seconds": seed_secs,
        "slowest_p99_ms": worst,
        "explain_files": files,
    }))
}
