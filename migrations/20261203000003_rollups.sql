-- Analytics rollups by UTC hour and UTC day, kept exact by triggers in the same transaction as
-- every change.
--
-- Analytics over an org with a million sessions cannot scan them per request. Each rollup row
-- holds the sums of the sessions that started in one UTC hour (grain 'h') or day (grain 'd') with
-- one combination of the keys analytics filter and group by. Triggers apply every change as a delta (subtract the old row's
-- contribution, add the new one's): increments commute, so concurrent writers never lose one,
-- and a rollup always equals the raw rows it sums. Queries read whole hours from the rollups and
-- whole days from the day rows, the remaining whole hours from the hour rows, and the partial hours
-- at a window's edges from `conversations` (jobs/src/store/analytics.rs).

-- The latest analysis's outcome, set by analyze_session; failure rate comes from it.
ALTER TABLE conversations ADD COLUMN outcome text;
-- Σ of the session's per-model cost and tokens (kept by the conversation_models trigger), so the
-- model breakdown can report what totals hold beyond their models without a join per session.
ALTER TABLE conversations ADD COLUMN models_cost_usd numeric NOT NULL DEFAULT 0;
ALTER TABLE conversations ADD COLUMN models_tokens numeric NOT NULL DEFAULT 0;

-- An exact median over a window's ended sessions, when there are few enough to sort.
CREATE INDEX conversations_durations ON conversations (org_id, started_at)
    INCLUDE (ended_at, project_id, agent_name) WHERE ended_at IS NOT NULL;

-- Duration histogram bucket (1-based) of a session that lasted `secs` seconds: 1 is under 30 s,
-- k in 2..23 covers [30·2^((k-2)/2), 30·2^((k-1)/2)) s, 24 is 61,440 s (17 h 4 min) and more.
-- jobs/src/store/analytics.rs estimates a median from these bounds.
CREATE FUNCTION crewkit_duration_bucket(secs numeric) RETURNS int
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN secs IS NULL THEN NULL WHEN secs < 30 THEN 1
                ELSE least(24, 2 + floor(2 * log(2.0, secs / 30.0))::int) END
$$;

-- The start of t's UTC hour or UTC day, whatever the session's TimeZone.
CREATE FUNCTION crewkit_bucket(grain "char", t timestamptz) RETURNS timestamptz
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT date_bin(CASE grain WHEN 'd' THEN interval '1 day' ELSE interval '1 hour' END, t,
                    TIMESTAMPTZ '2000-01-01 00:00:00+00')
$$;

CREATE TABLE conversation_rollups (
    org_id             uuid NOT NULL,
    grain              "char" NOT NULL CHECK (grain IN ('h', 'd')),
    bucket             timestamptz NOT NULL,
    project_id         uuid,
    agent_name         text NOT NULL,
    user_id            uuid NOT NULL,
    repository_id      uuid,
    sessions           bigint NOT NULL,
    active             bigint NOT NULL,
    -- sessions whose cost is unknown (cost_usd NULL)
    cost_unknown       bigint NOT NULL,
    cost_usd           numeric NOT NULL,
    input_tokens       numeric NOT NULL,
    output_tokens      numeric NOT NULL,
    cache_read_tokens  numeric NOT NULL,
    cache_write_tokens numeric NOT NULL,
    -- sessions with an ended_at, and the sum of their durations in seconds
    ended              bigint NOT NULL,
    duration_seconds   numeric NOT NULL,
    duration_hist      bigint[] NOT NULL,
    with_errors        bigint NOT NULL,
    -- sessions analysed to a final outcome, and those whose outcome is `failed`
    analysed           bigint NOT NULL,
    failed             bigint NOT NULL,
    -- for sessions with a known cost: their tokens, and Σ of their models' cost and tokens
    known_tokens       numeric NOT NULL,
    attributed_cost    numeric NOT NULL,
    attributed_tokens  numeric NOT NULL,
    UNIQUE NULLS NOT DISTINCT (org_id, grain, bucket, project_id, agent_name, user_id, repository_id)
);

CREATE TABLE model_rollups (
    org_id        uuid NOT NULL,
    grain         "char" NOT NULL CHECK (grain IN ('h', 'd')),
    bucket        timestamptz NOT NULL,
    project_id    uuid,
    agent_name    text NOT NULL,
    user_id       uuid NOT NULL,
    model         text NOT NULL,
    sessions      bigint NOT NULL,
    cost_unknown  bigint NOT NULL,
    cost_usd      numeric NOT NULL,
    tokens        numeric NOT NULL,
    UNIQUE NULLS NOT DISTINCT (org_id, grain, bucket, project_id, agent_name, user_id, model)
);

-- Adds `sign` (1 or -1) times the session's contribution to its hour and day rows.
CREATE FUNCTION crewkit_rollup_conversation(c conversations, sign int) RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    known boolean := c.cost_usd IS NOT NULL;
    tokens numeric := c.input_tokens::numeric + c.output_tokens + c.cache_read_tokens + c.cache_write_tokens;
    hist bigint[] := array_fill(0::bigint, ARRAY[24]);
    g "char";
BEGIN
    IF c.ended_at IS NOT NULL THEN
        hist[crewkit_duration_bucket(extract(epoch FROM c.ended_at - c.started_at))] := sign;
    END IF;
    FOREACH g IN ARRAY ARRAY['h', 'd']::"char"[] LOOP
    INSERT INTO conversation_rollups AS r VALUES (
        c.org_id, g, crewkit_bucket(g, c.started_at), c.project_id, c.agent_name, c.user_id, c.repository_id,
        sign, sign * (c.status = 'active')::int, sign * (NOT known)::int, sign * COALESCE(c.cost_usd, 0),
        sign * c.input_tokens, sign * c.output_tokens, sign * c.cache_read_tokens, sign * c.cache_write_tokens,
        sign * (c.ended_at IS NOT NULL)::int, sign * COALESCE(extract(epoch FROM c.ended_at - c.started_at), 0), hist,
        sign * (c.error_count > 0)::int,
        sign * COALESCE(c.outcome IN ('completed', 'completed_with_errors', 'failed', 'abandoned'), false)::int,
        sign * COALESCE(c.outcome = 'failed', false)::int,
        CASE WHEN known THEN sign * tokens ELSE 0 END,
        CASE WHEN known THEN sign * c.models_cost_usd ELSE 0 END,
        CASE WHEN known THEN sign * c.models_tokens ELSE 0 END)
    ON CONFLICT (org_id, grain, bucket, project_id, agent_name, user_id, repository_id) DO UPDATE SET
        sessions = r.sessions + EXCLUDED.sessions,
        active = r.active + EXCLUDED.active,
        cost_unknown = r.cost_unknown + EXCLUDED.cost_unknown,
        cost_usd = r.cost_usd + EXCLUDED.cost_usd,
        input_tokens = r.input_tokens + EXCLUDED.input_tokens,
        output_tokens = r.output_tokens + EXCLUDED.output_tokens,
        cache_read_tokens = r.cache_read_tokens + EXCLUDED.cache_read_tokens,
        cache_write_tokens = r.cache_write_tokens + EXCLUDED.cache_write_tokens,
        ended = r.ended + EXCLUDED.ended,
        duration_seconds = r.duration_seconds + EXCLUDED.duration_seconds,
        duration_hist = (SELECT array_agg(a + b ORDER BY i)
                           FROM unnest(r.duration_hist, EXCLUDED.duration_hist) WITH ORDINALITY AS t (a, b, i)),
        with_errors = r.with_errors + EXCLUDED.with_errors,
        analysed = r.analysed + EXCLUDED.analysed,
        failed = r.failed + EXCLUDED.failed,
        known_tokens = r.known_tokens + EXCLUDED.known_tokens,
        attributed_cost = r.attributed_cost + EXCLUDED.attributed_cost,
        attributed_tokens = r.attributed_tokens + EXCLUDED.attributed_tokens;
    END LOOP;
END $$;

CREATE FUNCTION crewkit_rollup_model(c conversations, m conversation_models, sign int) RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    g "char";
BEGIN
    FOREACH g IN ARRAY ARRAY['h', 'd']::"char"[] LOOP
    INSERT INTO model_rollups AS r VALUES (
        c.org_id, g, crewkit_bucket(g, c.started_at), c.project_id, c.agent_name, c.user_id, m.model,
        sign, sign * (m.cost_usd IS NULL)::int, sign * COALESCE(m.cost_usd, 0),
        sign * (m.input_tokens::numeric + m.output_tokens + m.cache_read_tokens + m.cache_write_tokens))
    ON CONFLICT (org_id, grain, bucket, project_id, agent_name, user_id, model) DO UPDATE SET
        sessions = r.sessions + EXCLUDED.sessions,
        cost_unknown = r.cost_unknown + EXCLUDED.cost_unknown,
        cost_usd = r.cost_usd + EXCLUDED.cost_usd,
        tokens = r.tokens + EXCLUDED.tokens;
    END LOOP;
END $$;

CREATE FUNCTION crewkit_conversations_rollup() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN PERFORM crewkit_rollup_conversation(OLD, -1); END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN PERFORM crewkit_rollup_conversation(NEW, 1); END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION crewkit_models_rollup() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
    c conversations;
    d_cost numeric := 0;
    d_tokens numeric := 0;
BEGIN
    IF TG_OP = 'DELETE' THEN
        SELECT * INTO c FROM conversations WHERE id = OLD.conversation_id;
    ELSE
        SELECT * INTO c FROM conversations WHERE id = NEW.conversation_id;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM crewkit_rollup_model(c, OLD, -1);
        d_cost := d_cost - COALESCE(OLD.cost_usd, 0);
        d_tokens := d_tokens - (OLD.input_tokens::numeric + OLD.output_tokens + OLD.cache_read_tokens + OLD.cache_write_tokens);
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        PERFORM crewkit_rollup_model(c, NEW, 1);
        d_cost := d_cost + COALESCE(NEW.cost_usd, 0);
        d_tokens := d_tokens + (NEW.input_tokens::numeric + NEW.output_tokens + NEW.cache_read_tokens + NEW.cache_write_tokens);
    END IF;
    IF d_cost <> 0 OR d_tokens <> 0 THEN
        -- Fires the conversations trigger, which moves the session's attributed sums.
        UPDATE conversations SET models_cost_usd = models_cost_usd + d_cost, models_tokens = models_tokens + d_tokens
         WHERE id = c.id;
    END IF;
    RETURN NULL;
END $$;

-- Duration histograms summed by a GROUP BY (the rebuild below).
CREATE FUNCTION crewkit_hist_add(h bigint[], k int) RETURNS bigint[]
    LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF k IS NOT NULL THEN h[k] := h[k] + 1; END IF;
    RETURN h;
END $$;
CREATE AGGREGATE crewkit_hist (int) (
    SFUNC = crewkit_hist_add, STYPE = bigint[], INITCOND = '{0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0}');

-- Rebuilds every rollup (and the denormalised columns they read) from the raw rows in one pass:
-- the backfill below, and for bulk loads that ran with the triggers disabled
-- (`ALTER TABLE conversations DISABLE TRIGGER USER`, load, `SELECT crewkit_rebuild_rollups()`,
-- enable). Takes a share lock on the sources so no write slips between rebuild and triggers.
CREATE FUNCTION crewkit_rebuild_rollups() RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    LOCK TABLE conversations, conversation_models, session_analyses IN SHARE MODE;
    ALTER TABLE conversations DISABLE TRIGGER conversations_rollup_changes;
    UPDATE conversations c SET models_cost_usd = COALESCE(m.cost, 0), models_tokens = COALESCE(m.tokens, 0)
      FROM conversations c2
      LEFT JOIN (SELECT conversation_id, COALESCE(sum(cost_usd), 0) AS cost,
                        sum(input_tokens::numeric + output_tokens + cache_read_tokens + cache_write_tokens) AS tokens
                   FROM conversation_models GROUP BY conversation_id) m ON m.conversation_id = c2.id
     WHERE c2.id = c.id
       AND (c.models_cost_usd, c.models_tokens) IS DISTINCT FROM (COALESCE(m.cost, 0), COALESCE(m.tokens, 0));
    UPDATE conversations c SET outcome = a.analysis ->> 'outcome'
      FROM (SELECT DISTINCT ON (conversation_id) conversation_id, analysis FROM session_analyses
             ORDER BY conversation_id, version DESC, created_at DESC) a
     WHERE a.conversation_id = c.id AND c.outcome IS DISTINCT FROM a.analysis ->> 'outcome';
    ALTER TABLE conversations ENABLE TRIGGER conversations_rollup_changes;
    DELETE FROM conversation_rollups;
    DELETE FROM model_rollups;
    INSERT INTO conversation_rollups
    SELECT c.org_id, g.grain, crewkit_bucket(g.grain, c.started_at), c.project_id, c.agent_name, c.user_id,
           c.repository_id, count(*), count(*) FILTER (WHERE c.status = 'active'),
           count(*) FILTER (WHERE c.cost_usd IS NULL), COALESCE(sum(c.cost_usd), 0),
           sum(c.input_tokens), sum(c.output_tokens), sum(c.cache_read_tokens), sum(c.cache_write_tokens),
           count(c.ended_at), COALESCE(sum(extract(epoch FROM c.ended_at - c.started_at)), 0),
           crewkit_hist(crewkit_duration_bucket(extract(epoch FROM c.ended_at - c.started_at))),
           count(*) FILTER (WHERE c.error_count > 0),
           count(*) FILTER (WHERE c.outcome IN ('completed', 'completed_with_errors', 'failed', 'abandoned')),
           count(*) FILTER (WHERE c.outcome = 'failed'),
           COALESCE(sum(c.input_tokens::numeric + c.output_tokens + c.cache_read_tokens + c.cache_write_tokens)
                    FILTER (WHERE c.cost_usd IS NOT NULL), 0),
           COALESCE(sum(c.models_cost_usd) FILTER (WHERE c.cost_usd IS NOT NULL), 0),
           COALESCE(sum(c.models_tokens) FILTER (WHERE c.cost_usd IS NOT NULL), 0)
      FROM conversations c CROSS JOIN (VALUES ('h'::"char"), ('d'::"char")) g (grain)
     GROUP BY 1, 2, 3, 4, 5, 6, 7;
    INSERT INTO model_rollups
    SELECT c.org_id, g.grain, crewkit_bucket(g.grain, c.started_at), c.project_id, c.agent_name, c.user_id, m.model,
           count(*), count(*) FILTER (WHERE m.cost_usd IS NULL), COALESCE(sum(m.cost_usd), 0),
           sum(m.input_tokens::numeric + m.output_tokens + m.cache_read_tokens + m.cache_write_tokens)
      FROM conversation_models m JOIN conversations c ON c.id = m.conversation_id
     CROSS JOIN (VALUES ('h'::"char"), ('d'::"char")) g (grain)
     GROUP BY 1, 2, 3, 4, 5, 6, 7;
END $$;

CREATE TRIGGER conversations_rollup_rows AFTER INSERT OR DELETE ON conversations
    FOR EACH ROW EXECUTE FUNCTION crewkit_conversations_rollup();
-- Only changes that move a rollup: the hot path's counter updates (event_count, last_event_at)
-- skip the trigger entirely.
CREATE TRIGGER conversations_rollup_changes AFTER UPDATE ON conversations
    FOR EACH ROW WHEN (
        OLD.status IS DISTINCT FROM NEW.status OR OLD.ended_at IS DISTINCT FROM NEW.ended_at
        OR OLD.started_at IS DISTINCT FROM NEW.started_at OR OLD.cost_usd IS DISTINCT FROM NEW.cost_usd
        OR OLD.input_tokens <> NEW.input_tokens OR OLD.output_tokens <> NEW.output_tokens
        OR OLD.cache_read_tokens <> NEW.cache_read_tokens OR OLD.cache_write_tokens <> NEW.cache_write_tokens
        OR (OLD.error_count > 0) <> (NEW.error_count > 0) OR OLD.outcome IS DISTINCT FROM NEW.outcome
        OR OLD.models_cost_usd <> NEW.models_cost_usd OR OLD.models_tokens <> NEW.models_tokens
        OR OLD.project_id IS DISTINCT FROM NEW.project_id OR OLD.agent_name IS DISTINCT FROM NEW.agent_name
        OR OLD.user_id IS DISTINCT FROM NEW.user_id OR OLD.repository_id IS DISTINCT FROM NEW.repository_id
        OR OLD.org_id IS DISTINCT FROM NEW.org_id)
    EXECUTE FUNCTION crewkit_conversations_rollup();
CREATE TRIGGER conversation_models_rollup AFTER INSERT OR UPDATE OR DELETE ON conversation_models
    FOR EACH ROW EXECUTE FUNCTION crewkit_models_rollup();

-- Backfill what exists now; the triggers keep it from here on.
SELECT crewkit_rebuild_rollups();
