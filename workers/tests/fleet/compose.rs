//! compose.yaml against the binaries' real configuration: every variable a service sets is one
//! `Config` knows and parses, every command and queue exists, every service has a healthcheck,
//! dependencies wait for health, and workers get longer to stop than their shutdown timeout.
//! `docker compose config` also runs where Docker's compose plugin exists (not on these machines).

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use crewkit_jobs::Config;
use crewkit_jobs::queue::JobKind;
use serde_yaml::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `${NAME:-default}` becomes the default, `${NAME:?message}` a placeholder, as compose would
/// with those variables unset (the required ones set).
fn interpolate(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let end = rest[i..].find('}').expect("closing brace") + i;
        let expr = &rest[i + 2..end];
        if let Some((_, default)) = expr.split_once(":-") {
            out.push_str(default);
        } else if expr.contains(":?") {
            out.push_str("set-by-operator");
        } else {
            panic!("${{{expr}}} has no default and is not required: compose would leave it empty");
        }
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => interpolate(s),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

fn seconds(s: &str) -> u64 {
    let n = s.trim_end_matches('s');
    n.parse().unwrap_or_else(|_| panic!("stop_grace_period {s:?} is not in seconds"))
}

fn port_of(url_or_bind: &str) -> String {
    let host_port = url_or_bind.split("://").last().unwrap().split('/').next().unwrap();
    host_port.rsplit(':').next().unwrap().to_string()
}

#[test]
fn compose_matches_the_binaries_configuration() {
    let raw = std::fs::read_to_string(root().join("compose.yaml")).expect("compose.yaml");
    let mut doc: Value = serde_yaml::from_str(&raw).expect("compose.yaml is YAML");
    doc.apply_merge().expect("merge keys resolve");
    let services = doc["services"].as_mapping().expect("services");
    let names: BTreeSet<String> = services.keys().map(|k| k.as_str().unwrap().to_string()).collect();
    for want in ["postgres", "redis", "meilisearch", "api", "worker", "worker-ingest"] {
        assert!(names.contains(want), "no {want} service");
    }
    let volumes: BTreeSet<String> =
        doc["volumes"].as_mapping().expect("volumes").keys().map(|k| k.as_str().unwrap().to_string()).collect();
    let known: BTreeSet<&str> = Config::VARIABLES.iter().map(|v| v.name).collect();

    let image_major = |svc: &str, prefix: &str| -> u32 {
        let image = services[svc]["image"].as_str().unwrap();
        let tag = image.strip_prefix(prefix).unwrap_or_else(|| panic!("{svc} image {image}"));
        tag.trim_start_matches('v').split('.').next().unwrap().parse().unwrap()
    };
    assert!(image_major("postgres", "postgres:") >= 16);
    assert!(image_major("redis", "redis:") >= 7);
    assert_eq!(image_major("meilisearch", "getmeili/meilisearch:"), 1);
    let redis_cmd: Vec<String> = services["redis"]["command"].as_sequence().unwrap().iter().map(text).collect();
    for pair in [["--appendonly", "yes"], ["--appendfsync", "everysec"], ["--maxmemory-policy", "noeviction"]] {
        assert!(redis_cmd.windows(2).any(|w| w == pair), "redis lacks {pair:?}: {redis_cmd:?}");
    }
    assert!(
        services["meilisearch"]["environment"]["MEILI_MASTER_KEY"].as_str().unwrap().contains("${MEILI_MASTER_KEY")
    );

    let mut served: BTreeSet<&str> = BTreeSet::new();
    for (name, svc) in services {
        let name = name.as_str().unwrap();
        assert!(svc["healthcheck"]["test"].is_sequence(), "{name} has no healthcheck");
        if let Some(deps) = svc["depends_on"].as_mapping() {
            for (dep, how) in deps {
                assert!(names.contains(dep.as_str().unwrap()), "{name} depends on unknown {dep:?}");
                assert_eq!(how["condition"].as_str(), Some("service_healthy"), "{name} → {dep:?}");
            }
        }
        for v in svc["volumes"].as_sequence().into_iter().flatten() {
            let vol = v.as_str().unwrap().split(':').next().unwrap();
            assert!(volumes.contains(vol), "{name} uses undeclared volume {vol}");
        }
        let Some(command) = svc["command"].as_sequence() else { continue };
        let command: Vec<String> = command.iter().map(text).collect();
        if !command[0].starts_with("crewkit") {
            continue;
        }
        // Our services come back by themselves (a worker that lost Redis exits).
        assert_eq!(svc["restart"].as_str(), Some("unless-stopped"), "{name} has no restart policy");
        // Their environment must be configuration the binaries really read.
        let env: HashMap<String, String> = svc["environment"]
            .as_mapping()
            .unwrap_or_else(|| panic!("{name} has no environment"))
            .iter()
            .map(|(k, v)| (k.as_str().unwrap().to_string(), text(v)))
            .collect();
        for key in env.keys() {
            assert!(known.contains(key.as_str()), "{name} sets {key}, which crewkit does not read");
        }
        let config = Config::from_vars(&env).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(config.meili_url.is_some(), "{name} should search with Meilisearch");
        let health: Vec<String> = svc["healthcheck"]["test"].as_sequence().unwrap().iter().map(text).collect();
        match command[0].as_str() {
            "crewkit-api" => {
                assert_eq!(command.len(), 1, "crewkit-api serves without arguments: {command:?}");
                assert!(health.iter().any(|h| h.ends_with("/readyz")), "{name}: {health:?}");
                assert!(health.iter().any(|h| port_of(h) == config.bind.port().to_string()), "{name}: {health:?}");
            }
            "crewkit-worker" => {
                assert_eq!(command.get(1).map(String::as_str), Some("--queues"), "{command:?}");
                assert_eq!(command.len(), 3, "{command:?}");
                for q in command[2].split(',') {
                    let kind = JobKind::from_queue(q).unwrap_or_else(|| panic!("{name}: unknown queue {q}"));
                    served.insert(kind.queue());
                }
                let metrics = config.metrics_bind.unwrap_or_else(|| panic!("{name}: no CREWKIT_METRICS_BIND"));
                assert!(health.iter().any(|h| port_of(h) == metrics.port().to_string()), "{name}: {health:?}");
                let grace = seconds(svc["stop_grace_period"].as_str().unwrap_or_else(|| panic!("{name}: grace")));
                assert!(
                    grace > config.shutdown_timeout.as_secs(),
                    "{name}: stop_grace_period {grace}s must exceed the shutdown timeout {:?}",
                    config.shutdown_timeout
                );
                assert!(svc["deploy"]["replicas"].as_str().is_some() || svc["deploy"]["replicas"].is_number());
            }
            other => panic!("{name} runs {other}, which no crate builds"),
        }
    }
    let all: BTreeSet<&str> = JobKind::ALL.iter().map(|k| k.queue()).collect();
    assert_eq!(served, all, "every queue has a worker service");
    assert_eq!(text(&services["worker"]["deploy"]["replicas"]), "2", "default worker replicas");

    // One multi-stage image with both binaries.
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    assert!(dockerfile.matches("\nFROM ").count() + usize::from(dockerfile.starts_with("FROM ")) >= 2);
    for bin in ["crewkit-api", "crewkit-worker"] {
        assert!(dockerfile.contains(&format!("--bin {bin}")), "the image does not build {bin}");
    }

    match std::process::Command::new("docker").args(["compose", "version"]).output() {
        Ok(out) if out.status.success() => {
            let check = std::process::Command::new("docker")
                .args(["compose", "-f", "compose.yaml", "config", "--quiet"])
                .current_dir(root())
                .env("MEILI_MASTER_KEY", "test")
                .output()
                .unwrap();
            assert!(check.status.success(), "docker compose config: {}", String::from_utf8_lossy(&check.stderr));
        }
        _ => eprintln!("SKIPPED docker compose config: Docker's compose plugin is not installed here"),
    }
}
