-- The embedded search backend: one document per session, written by the index_session job.
-- Full text (tsvector, 'simple' configuration: agents' text mixes languages and code) plus
-- trigrams for typo tolerance.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE search_documents (
    session_id   uuid PRIMARY KEY REFERENCES conversations (id),
    org_id       uuid NOT NULL REFERENCES orgs (id),
    agent_name   text NOT NULL,
    status       text NOT NULL,
    project_id   uuid,
    repo         text,
    user_id      uuid NOT NULL,
    started_at   timestamptz NOT NULL,
    cost_usd     numeric(20, 10),
    title        text,
    summary      text,
    prompts      text NOT NULL DEFAULT '',
    files        text NOT NULL DEFAULT '',
    tools        text NOT NULL DEFAULT '',
    metadata     text NOT NULL DEFAULT '',
    -- Everything searchable, for trigram (typo-tolerant) matching.
    body         text NOT NULL,
    tsv          tsvector NOT NULL,
    indexed_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX search_documents_tsv ON search_documents USING gin (tsv);
CREATE INDEX search_documents_trgm ON search_documents USING gin (body gin_trgm_ops);
CREATE INDEX search_documents_org ON search_documents (org_id, started_at DESC);
