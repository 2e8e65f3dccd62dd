//! Cost from tokens, with LiteLLM's price table (MIT; generated into `jobs/prices/` by
//! `script/gen-prices`, or a full newer table from `CREWKIT_PRICES_FILE`).
//!
//! Cache reads and cache writes are priced apart, and 1-hour cache writes at their own rate
//! (Claude Code 2026 builds write only 1-hour cache; pricing those at the 5-minute rate would
//! undercount them by 37.5%). Model ids are normalised: `claude-opus-4-8[1m]` (context-window
//! suffixes), `anthropic/`, `bedrock/`, `vertex_ai/` and regional prefixes (`us.anthropic.`),
//! and dated suffixes (`-20251001`) when the dated id itself is not in the table. An unknown
//! model has no cost (`None`), never 0.

use std::collections::HashMap;
use std::sync::OnceLock;

use rust_decimal::Decimal;
use serde::Deserialize;

const EMBEDDED: &str = include_str!("../prices/prices.json");

/// USD per token.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Prices {
    #[serde(default)]
    pub input_cost_per_token: Option<f64>,
    #[serde(default)]
    pub output_cost_per_token: Option<f64>,
    #[serde(default)]
    pub cache_read_input_token_cost: Option<f64>,
    #[serde(default)]
    pub cache_creation_input_token_cost: Option<f64>,
    #[serde(default)]
    pub cache_creation_input_token_cost_above_1hr: Option<f64>,
}

/// Tokens of one model's usage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: i64,
    pub output: i64,
    pub cache_read: i64,
    /// All cache writes, 5-minute and 1-hour.
    pub cache_write: i64,
    /// Of `cache_write`, those written for one hour.
    pub cache_write_1h: i64,
}

pub struct PriceTable(HashMap<String, Prices>);

/// Exact decimal of an f64 price as printed (`3e-6` is exactly 0.000003).
fn dec(p: f64) -> Option<Decimal> {
    let text = format!("{p:e}");
    Decimal::from_scientific(&text).ok().or_else(|| text.parse().ok())
}

impl PriceTable {
    pub fn parse(json: &str) -> Result<Self, serde_json::Error> {
        let raw: HashMap<String, serde_json::Value> = serde_json::from_str(json)?;
        let table = raw
            .into_iter()
            .filter_map(|(model, v)| serde_json::from_value::<Prices>(v).ok().map(|p| (model, p)))
            .filter(|(_, p)| p.input_cost_per_token.is_some())
            .collect();
        Ok(Self(table))
    }

    /// The table in use: `CREWKIT_PRICES_FILE` if set (and readable), else the embedded one.
    pub fn global() -> &'static PriceTable {
        static TABLE: OnceLock<PriceTable> = OnceLock::new();
        TABLE.get_or_init(|| {
            if let Ok(path) = std::env::var("CREWKIT_PRICES_FILE") {
                match std::fs::read_to_string(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|t| Self::parse(&t).map_err(|e| e.to_string()))
                {
                    Ok(t) => return t,
                    Err(e) => {
                        tracing::error!(path, error = %e, "CREWKIT_PRICES_FILE unreadable; using the embedded table")
                    }
                }
            }
            Self::parse(EMBEDDED).expect("the embedded price table parses")
        })
    }

    /// The prices of a model, after normalising its id.
    pub fn lookup(&self, model: &str) -> Option<&Prices> {
        let mut id = model.trim().to_ascii_lowercase();
        if let Some(i) = id.find('[') {
            id.truncate(i);
        }
        if let Some(p) = self.0.get(&id) {
            return Some(p);
        }
        if let Some((_, rest)) = id.rsplit_once('/') {
            id = rest.to_string();
        }
        if let Some(i) = id.find("claude-") {
            id = id[i..].to_string();
        }
        if let Some(p) = self.0.get(&id) {
            return Some(p);
        }
        // A dated id (`-20251001`) whose date the table does not carry.
        let undated =
            id.rsplit_once('-').filter(|(_, d)| d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit())).map(|(m, _)| m);
        if let Some(p) = undated.and_then(|m| self.0.get(m)) {
            return Some(p);
        }
        // Some Anthropic models are in the table only under their Bedrock id, at the same list
        // price: `claude-sonnet-4-20250514` as `anthropic.claude-sonnet-4-20250514-v1:0`.
        if id.starts_with("claude-") { self.0.get(&format!("anthropic.{id}-v1:0")) } else { None }
    }

    /// The cost of some usage of a model; `None` when the model or a needed price is unknown.
    pub fn cost(&self, model: &str, u: Usage) -> Option<Decimal> {
        let p = self.lookup(model)?;
        let write_5m = (u.cache_write - u.cache_write_1h).max(0);
        let parts = [
            (u.input, p.input_cost_per_token),
            (u.output, p.output_cost_per_token),
            (u.cache_read, p.cache_read_input_token_cost.or(p.input_cost_per_token)),
            (write_5m, p.cache_creation_input_token_cost.or(p.input_cost_per_token)),
            (u.cache_write_1h, p.cache_creation_input_token_cost_above_1hr.or(p.cache_creation_input_token_cost)),
        ];
        let mut total = Decimal::ZERO;
        for (tokens, price) in parts {
            if tokens == 0 {
                continue;
            }
            total += Decimal::from(tokens) * dec(price?)?;
        }
        Some(total.normalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c06_one_api_call_of_sonnet_4_6_with_one_hour_cache_writes_costs_0_01683() {
        let t = PriceTable::parse(EMBEDDED).unwrap();
        let u = Usage { input: 10, output: 300, cache_read: 1000, cache_write: 2000, cache_write_1h: 2000 };
        assert_eq!(t.cost("claude-sonnet-4-6", u).unwrap().to_string(), "0.01683");
        // At the 5-minute rate the same writes would cost less: they are priced apart.
        let five = Usage { cache_write_1h: 0, ..u };
        assert_eq!(t.cost("claude-sonnet-4-6", five).unwrap().to_string(), "0.01233");
    }

    #[test]
    fn model_ids_are_normalised() {
        let t = PriceTable::parse(EMBEDDED).unwrap();
        let base = t.cost("claude-sonnet-4-6", Usage { input: 1_000_000, ..Default::default() }).unwrap();
        for id in
            ["claude-sonnet-4-6[1m]", "anthropic/claude-sonnet-4-6", "vertex_ai/claude-sonnet-4-6", "Claude-Sonnet-4-6"]
        {
            assert_eq!(t.cost(id, Usage { input: 1_000_000, ..Default::default() }), Some(base), "{id}");
        }
        assert!(t.lookup("claude-haiku-4-5-20251001").is_some());
        // In the table only as a Bedrock id (seen in real transcripts): $3 per million input.
        let sonnet4 = t.cost("claude-sonnet-4-20250514", Usage { input: 1_000_000, ..Default::default() });
        assert_eq!(sonnet4.map(|c| c.to_string()), Some("3".to_string()));
        // A regional spelling with its own (higher) price in the table keeps that price.
        let regional =
            t.cost("us.anthropic.claude-sonnet-4-6", Usage { input: 1_000_000, ..Default::default() }).unwrap();
        assert!(regional > base);
    }

    #[test]
    fn an_unknown_model_has_no_cost_not_zero() {
        let t = PriceTable::parse(EMBEDDED).unwrap();
        for id in ["glm-4.6", "x-ai/grok-4-fast:free", "<synthetic>"] {
            assert_eq!(t.cost(id, Usage { input: 5, ..Default::default() }), None, "{id}");
        }
    }
}
