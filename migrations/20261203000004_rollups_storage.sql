-- Rollup rows are updated in place all day long (every session start, end and cost change moves
-- one hour row and one day row). Leave room on each page so those updates are HOT (no index
-- column changes, the new version stays on its page and is pruned there), and vacuum them far
-- more eagerly than the default 20% of dead rows, so a scan reads live rows, not dead versions.
ALTER TABLE conversation_rollups SET (fillfactor = 50, autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000, autovacuum_analyze_scale_factor = 0.02);
ALTER TABLE model_rollups SET (fillfactor = 50, autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000, autovacuum_analyze_scale_factor = 0.02);
