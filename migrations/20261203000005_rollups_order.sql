-- A window's rollup rows are read by (org, grain, bucket) range. Rows the triggers write arrive in
-- time order, so they sit together; rows `crewkit_rebuild_rollups()` writes came out of a hash
-- aggregate in no order, so a 30-day window of a rebuilt `model_rollups` (11,740 rows) was spread
-- over 8,277 pages, most of a cost-breakdown read (benchmark S6, 1M sessions). The rebuild now
-- rewrites both tables in their key's order; so does this migration, once, for tables already
-- rebuilt.
ALTER FUNCTION crewkit_rebuild_rollups() RENAME TO crewkit_rebuild_rollup_rows;

CREATE FUNCTION crewkit_rebuild_rollups() RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM crewkit_rebuild_rollup_rows();
    CLUSTER conversation_rollups USING conversation_rollups_org_id_grain_bucket_project_id_agent_n_key;
    CLUSTER model_rollups USING model_rollups_org_id_grain_bucket_project_id_agent_name_use_key;
END $$;

CLUSTER conversation_rollups USING conversation_rollups_org_id_grain_bucket_project_id_agent_n_key;
CLUSTER model_rollups USING model_rollups_org_id_grain_bucket_project_id_agent_name_use_key;
