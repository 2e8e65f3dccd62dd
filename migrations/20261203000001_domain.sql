-- The whole domain of DESIGN §4, so later work adds migrations rather than rewriting this one.
-- Ids are UUIDv7 (shown with a type prefix by the API). Money is NUMERIC, tokens BIGINT.
-- Every tenant-owned row carries org_id, and every lookup by id also filters on it.

CREATE TABLE orgs (
    id          uuid PRIMARY KEY,
    slug        text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id          uuid PRIMARY KEY,
    org_id      uuid NOT NULL REFERENCES orgs (id),
    email       text NOT NULL,
    name        text,
    role        text NOT NULL CHECK (role IN ('admin', 'manager', 'member')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, email)
);

CREATE TABLE api_keys (
    id            uuid PRIMARY KEY,
    org_id        uuid NOT NULL REFERENCES orgs (id),
    user_id       uuid NOT NULL REFERENCES users (id),
    -- SHA-256 of the secret, hex. The secret itself is shown once and never stored.
    key_hash      text NOT NULL UNIQUE,
    -- The first characters of the secret, to tell keys apart in listings.
    key_prefix    text NOT NULL,
    name          text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz
);
CREATE INDEX api_keys_org ON api_keys (org_id, created_at DESC);

CREATE TABLE projects (
    id          uuid PRIMARY KEY,
    org_id      uuid NOT NULL REFERENCES orgs (id),
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, name)
);

CREATE TABLE repositories (
    id          uuid PRIMARY KEY,
    org_id      uuid NOT NULL REFERENCES orgs (id),
    project_id  uuid REFERENCES projects (id),
    host        text NOT NULL,
    slug        text NOT NULL,
    remote_url  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, host, slug)
);
CREATE INDEX repositories_slug ON repositories (org_id, slug);

CREATE TABLE runs (
    id             uuid PRIMARY KEY,
    org_id         uuid NOT NULL REFERENCES orgs (id),
    user_id        uuid NOT NULL REFERENCES users (id),
    project_id     uuid REFERENCES projects (id),
    repository_id  uuid REFERENCES repositories (id),
    component      text,
    started_at     timestamptz NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);

-- A conversation is what the API calls a session.
CREATE TABLE conversations (
    id                 uuid PRIMARY KEY,
    org_id             uuid NOT NULL REFERENCES orgs (id),
    run_id             uuid NOT NULL REFERENCES runs (id),
    user_id            uuid NOT NULL REFERENCES users (id),
    project_id         uuid REFERENCES projects (id),
    repository_id      uuid REFERENCES repositories (id),
    -- Related conversations (resume, fork, continuation after compaction) share a thread; the
    -- thread id is the id of the conversation that started it.
    thread_id          uuid NOT NULL,
    parent_id          uuid REFERENCES conversations (id),
    agent_name         text NOT NULL DEFAULT 'claude-code',
    agent_session_id   text,
    component          text,
    title              text,
    status             text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'ended')),
    end_reason         text,
    summary            text,
    metadata           jsonb NOT NULL DEFAULT '{}',
    started_at         timestamptz NOT NULL,
    ended_at           timestamptz,
    first_event_at     timestamptz,
    last_event_at      timestamptz,
    -- Cumulative model metrics (PATCH snapshots only ever raise these).
    input_tokens       bigint NOT NULL DEFAULT 0,
    output_tokens      bigint NOT NULL DEFAULT 0,
    cache_read_tokens  bigint NOT NULL DEFAULT 0,
    cache_write_tokens bigint NOT NULL DEFAULT 0,
    cost_usd           numeric(20, 10),
    -- Counters raised by the worker for events it really inserted.
    event_count        bigint NOT NULL DEFAULT 0,
    tool_call_count    bigint NOT NULL DEFAULT 0,
    error_count        bigint NOT NULL DEFAULT 0,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX conversations_agent_session ON conversations (org_id, agent_session_id)
    WHERE agent_session_id IS NOT NULL;
-- The list endpoint's stable order.
CREATE INDEX conversations_list ON conversations (org_id, started_at DESC, id DESC);
CREATE INDEX conversations_thread ON conversations (org_id, thread_id);
CREATE INDEX conversations_run ON conversations (run_id);
CREATE INDEX conversations_active ON conversations (last_event_at) WHERE status = 'active';

-- Per-model usage of a conversation (cumulative, like the totals).
CREATE TABLE conversation_models (
    conversation_id    uuid NOT NULL REFERENCES conversations (id),
    model              text NOT NULL,
    input_tokens       bigint NOT NULL DEFAULT 0,
    output_tokens      bigint NOT NULL DEFAULT 0,
    cache_read_tokens  bigint NOT NULL DEFAULT 0,
    cache_write_tokens bigint NOT NULL DEFAULT 0,
    cost_usd           numeric(20, 10),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (conversation_id, model)
);

CREATE TABLE tasks (
    id               uuid PRIMARY KEY,
    org_id           uuid NOT NULL REFERENCES orgs (id),
    conversation_id  uuid NOT NULL REFERENCES conversations (id),
    parent_task_id   uuid REFERENCES tasks (id),
    -- 'subagent' (hook events carrying agent_id) or 'team_task' (TaskCreated/TaskCompleted).
    kind             text NOT NULL,
    -- The agent's own id for it: agent_id for subagents, task_id for team tasks.
    external_id      text NOT NULL,
    agent_type       text,
    description      text,
    -- The Agent/Task tool call that launched it.
    tool_use_id      text,
    status           text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'completed')),
    started_at       timestamptz,
    ended_at         timestamptz,
    event_count      bigint NOT NULL DEFAULT 0,
    tool_call_count  bigint NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (conversation_id, kind, external_id)
);

CREATE TABLE events (
    id                 uuid PRIMARY KEY,
    -- Arrival order, to break ties between events with the same timestamp.
    seq                bigint GENERATED ALWAYS AS IDENTITY,
    org_id             uuid NOT NULL,
    conversation_id    uuid NOT NULL REFERENCES conversations (id),
    task_id            uuid REFERENCES tasks (id),
    event_type         text NOT NULL,
    client_event_id    text,
    -- The dedup key: the client's id when it gave one, else a hash of the event's content.
    dedup_key          text NOT NULL,
    timestamp          timestamptz NOT NULL,
    received_at        timestamptz NOT NULL,
    -- What the event is ordered by: its timestamp, or received_at when the timestamp is in the
    -- future (flagged by timestamp_in_future).
    order_at           timestamptz NOT NULL,
    timestamp_in_future boolean NOT NULL DEFAULT false,
    tool_name          text,
    tool_use_id        text,
    agent_id           text,
    data               jsonb NOT NULL,
    UNIQUE (conversation_id, dedup_key)
);
CREATE INDEX events_timeline ON events (conversation_id, order_at, seq);

-- Records of background jobs (the queue itself lives in Redis).
CREATE TABLE jobs (
    id            uuid PRIMARY KEY,
    org_id        uuid NOT NULL REFERENCES orgs (id),
    kind          text NOT NULL,
    status        text NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    attempts      integer NOT NULL DEFAULT 0,
    max_attempts  integer NOT NULL,
    error         text,
    session_id    uuid,
    request_id    text,
    result        jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    finished_at   timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX jobs_org_status ON jobs (org_id, status, created_at DESC);

CREATE TABLE session_analyses (
    id               uuid PRIMARY KEY,
    org_id           uuid NOT NULL REFERENCES orgs (id),
    conversation_id  uuid NOT NULL REFERENCES conversations (id),
    -- The conversation's event_count when analysed: one analysis per session version.
    version          bigint NOT NULL,
    schema_version   integer NOT NULL,
    analysis         jsonb NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (conversation_id, version)
);

CREATE TABLE compactions (
    id               uuid PRIMARY KEY,
    org_id           uuid NOT NULL REFERENCES orgs (id),
    conversation_id  uuid NOT NULL REFERENCES conversations (id),
    request_id       text NOT NULL,
    job_id           uuid,
    status           text NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    trigger          text NOT NULL,
    digest           jsonb,
    first_event_seq  bigint,
    last_event_seq   bigint,
    size_before      bigint,
    size_after       bigint,
    created_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    UNIQUE (conversation_id, request_id)
);
