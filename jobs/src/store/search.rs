//! The embedded search backend: documents in `search_documents` under a full-text index, and a
//! lexicon of each org's words (`search_words`) whose trigrams correct typos in the query.
//!
//! Tenant isolation is the `org_id = $1` every query starts with; user input only ever travels
//! as bind parameters (never spliced into SQL or a query language), so quotes, `OR` or `org_id`
//! inside `q` are just text to look for.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, QueryBuilder};

use super::sessions::SessionFilter;
use super::{StoreError, StoreResult};
use crate::ids::{OrgId, ProjectId, SessionId, UserId};

/// At most this much prompt text goes into a document.
const MAX_PROMPTS_BYTES: i32 = 20_000;

/// Builds the session's document from its row and its events, in one statement.
/// The session row and what its events say, for one document; binds $1 org, $2 session,
/// $3 the prompt bytes kept.
const DOCUMENT_CTE: &str = "WITH c AS (
        SELECT c.*, r.slug AS repo FROM conversations c LEFT JOIN repositories r ON r.id = c.repository_id
         WHERE c.org_id = $1 AND c.id = $2),
     p AS (
        SELECT left(string_agg(e.data->>'prompt', E'\\n' ORDER BY e.order_at, e.seq), $3) AS prompts
          FROM events e WHERE e.conversation_id = $2 AND e.event_type = 'UserPromptSubmit'),
     f AS (
        SELECT string_agg(DISTINCT COALESCE(e.data->'tool_input'->>'file_path', e.data->'tool_input'->>'path'), ' ') AS files,
               string_agg(DISTINCT e.tool_name, ' ') AS tools
          FROM events e WHERE e.conversation_id = $2 AND e.event_type = 'PreToolUse')";

/// Builds the session's document from its row and its events, in one statement.
pub async fn index_session(db: &PgPool, org: OrgId, session: SessionId) -> StoreResult<()> {
    let sql = format!(
        "{DOCUMENT_CTE}
         INSERT INTO search_documents (session_id, org_id, agent_name, status, project_id, repo, user_id,
                started_at, cost_usd, title, summary, prompts, files, tools, metadata, tsv, indexed_at)
         SELECT c.id, c.org_id, c.agent_name, c.status, c.project_id, c.repo, c.user_id, c.started_at,
                c.cost_usd, c.title, c.summary, COALESCE(p.prompts, ''), COALESCE(f.files, ''),
                COALESCE(f.tools, ''), c.metadata::text,
                setweight(to_tsvector('simple', concat_ws(' ', c.title, c.summary)), 'A')
                  || setweight(to_tsvector('simple', COALESCE(p.prompts, '')), 'B')
                  || setweight(to_tsvector('simple', concat_ws(' ', f.files, c.repo, f.tools, c.agent_session_id)), 'C')
                  || setweight(to_tsvector('simple', c.metadata::text), 'D'),
                now()
           FROM c, p, f
         ON CONFLICT (session_id) DO UPDATE SET
                agent_name = EXCLUDED.agent_name, status = EXCLUDED.status, project_id = EXCLUDED.project_id,
                repo = EXCLUDED.repo, started_at = EXCLUDED.started_at, cost_usd = EXCLUDED.cost_usd,
                title = EXCLUDED.title, summary = EXCLUDED.summary, prompts = EXCLUDED.prompts,
                files = EXCLUDED.files, tools = EXCLUDED.tools, metadata = EXCLUDED.metadata,
                tsv = EXCLUDED.tsv, indexed_at = now()"
    );
    let mut tx = db.begin().await?;
    let res =
        sqlx::query(sqlx::AssertSqlSafe(sql)).bind(org).bind(session).bind(MAX_PROMPTS_BYTES).execute(&mut *tx).await?;
    if res.rows_affected() == 0 {
        return Err(StoreError::NotFound("session"));
    }
    // The document's words join the org's lexicon, in a fixed order so that concurrent index
    // jobs sharing words take their locks in the same order.
    sqlx::query(
        "INSERT INTO search_words (org_id, word)
         SELECT DISTINCT $1::uuid, w.lexeme FROM search_documents d, unnest(d.tsv) w
          WHERE d.session_id = $2 AND length(w.lexeme) BETWEEN 3 AND 64
          ORDER BY 2
         ON CONFLICT DO NOTHING",
    )
    .bind(org)
    .bind(session)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// A session's document for an external index (Meilisearch).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DocumentRow {
    pub session_id: SessionId,
    pub org_id: OrgId,
    pub agent_name: String,
    pub status: String,
    pub project_id: Option<ProjectId>,
    pub repo: Option<String>,
    pub user_id: UserId,
    pub started_at: DateTime<Utc>,
    pub cost_usd: Option<rust_decimal::Decimal>,
    pub title: Option<String>,
    pub summary: Option<String>,
    pub prompts: String,
    pub files: String,
    pub tools: String,
    pub agent_session_id: Option<String>,
    pub metadata: String,
}

pub async fn document(db: &PgPool, org: OrgId, session: SessionId) -> StoreResult<Option<DocumentRow>> {
    let sql = format!(
        "{DOCUMENT_CTE}
         SELECT c.id AS session_id, c.org_id, c.agent_name, c.status, c.project_id, c.repo, c.user_id, c.started_at,
                c.cost_usd, c.title, c.summary, COALESCE(p.prompts, '') AS prompts, COALESCE(f.files, '') AS files,
                COALESCE(f.tools, '') AS tools, c.agent_session_id, c.metadata::text AS metadata
           FROM c, p, f"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(org)
        .bind(session)
        .bind(MAX_PROMPTS_BYTES)
        .fetch_optional(db)
        .await?)
}

/// One hit.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Hit {
    pub session_id: SessionId,
    pub score: f32,
    pub title_highlight: Option<String>,
    pub summary_highlight: Option<String>,
    pub prompts_highlight: Option<String>,
    pub indexed_at: DateTime<Utc>,
}

/// Opens the query with `fz`, the typo-corrected form of `q` as a tsquery (NULL when there is
/// nothing to correct): each word of `q` or any of the org's five words most like it (trigram
/// similarity above pg_trgm's threshold), all words required. Queries with a negation or a
/// quoted phrase are not corrected: an AND of corrected words could bring back what `-word`
/// excludes.
fn push_fuzzy(qb: &mut QueryBuilder<Postgres>, org: OrgId, q: &str) {
    let plain = !q.contains('"') && !q.split_whitespace().any(|w| w.starts_with('-'));
    if !plain {
        qb.push("WITH fz AS (SELECT NULL::tsquery AS q) ");
        return;
    }
    qb.push(
        "WITH fz AS (
            SELECT crewkit_tsquery_and(alts) AS q FROM (
                SELECT crewkit_tsquery_or(plainto_tsquery('simple', w.word)) AS alts
                  FROM unnest(to_tsvector('simple', ",
    );
    qb.push_bind(q.to_string());
    qb.push(
        ")) t
                 CROSS JOIN LATERAL (
                       SELECT t.lexeme AS word
                       UNION ALL
                       (SELECT s.word FROM search_words s
                         WHERE s.org_id = ",
    );
    qb.push_bind(org);
    qb.push(
        " AND s.word % t.lexeme AND s.word <> t.lexeme
                         ORDER BY s.word <-> t.lexeme, s.word LIMIT 5)) w
                 GROUP BY t.lexeme) x) ",
    );
}

fn push_where(qb: &mut QueryBuilder<Postgres>, org: OrgId, q: &str, f: &SessionFilter) {
    qb.push(" WHERE d.org_id = ").push_bind(org);
    qb.push(" AND (d.tsv @@ websearch_to_tsquery('simple', ").push_bind(q.to_string());
    qb.push(") OR d.tsv @@ (SELECT q FROM fz))");
    if let Some(p) = f.project_id {
        qb.push(" AND d.project_id = ").push_bind(p);
    }
    if let Some(r) = &f.repo_slug {
        qb.push(" AND d.repo = ").push_bind(r.clone());
    }
    if let Some(a) = &f.agent_name {
        qb.push(" AND d.agent_name = ").push_bind(a.clone());
    }
    if let Some(u) = f.user_id {
        qb.push(" AND d.user_id = ").push_bind(u);
    }
    if let Some(s) = &f.status {
        qb.push(" AND d.status = ").push_bind(s.clone());
    }
    if let Some(t) = f.started_after {
        qb.push(" AND d.started_at >= ").push_bind(t);
    }
    if let Some(t) = f.started_before {
        qb.push(" AND d.started_at < ").push_bind(t);
    }
}

/// A page of hits, best first, and the number of matches.
pub async fn search(
    db: &PgPool,
    org: OrgId,
    q: &str,
    filter: &SessionFilter,
    page: u32,
    per_page: u32,
) -> StoreResult<(Vec<Hit>, i64)> {
    let mut count = QueryBuilder::new("");
    push_fuzzy(&mut count, org, q);
    count.push("SELECT count(*) FROM search_documents d");
    push_where(&mut count, org, q, filter);
    let (total,): (i64,) = count.build_query_as().fetch_one(db).await?;

    // Exact matches rank above corrected ones; highlights show both.
    let mut qb = QueryBuilder::new("");
    push_fuzzy(&mut qb, org, q);
    qb.push("SELECT d.session_id, (ts_rank(d.tsv, websearch_to_tsquery('simple', ");
    qb.push_bind(q.to_string()).push(")) + COALESCE(ts_rank(d.tsv, (SELECT q FROM fz)), 0) / 2)::float4 AS score, ");
    for (col, name) in
        [("title", "title_highlight"), ("summary", "summary_highlight"), ("prompts", "prompts_highlight")]
    {
        qb.push(format!("CASE WHEN d.{col} IS NULL OR d.{col} = '' THEN NULL ELSE ts_headline('simple', d.{col}, "));
        qb.push("COALESCE(websearch_to_tsquery('simple', ").push_bind(q.to_string());
        qb.push(") || (SELECT q FROM fz), websearch_to_tsquery('simple', ").push_bind(q.to_string());
        qb.push(format!(
            ")), 'MaxFragments=2, MaxWords=20, MinWords=5, StartSel=<em>, StopSel=</em>') END AS {name}, "
        ));
    }
    qb.push("d.indexed_at FROM search_documents d");
    push_where(&mut qb, org, q, filter);
    qb.push(" ORDER BY score DESC, d.started_at DESC, d.session_id DESC LIMIT ")
        .push_bind(i64::from(per_page))
        .push(" OFFSET ")
        .push_bind(i64::from(page.saturating_sub(1)) * i64::from(per_page));
    let hits = qb.build_query_as().fetch_all(db).await?;
    Ok((hits, total))
}
