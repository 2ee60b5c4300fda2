-- Upkeep of gravixd's Iceberg tables, run on a schedule by the chart's CronJob and compose's
-- trino-upkeep service (this file is the one source both use): compaction of small files,
-- then expiry of old snapshots and removal of files no snapshot reads. Readers of a snapshot
-- younger than the retention keep working. RETENTION is replaced by the schedule's setting
-- (default 7d, Trino's own minimum).
ALTER TABLE iceberg.gravix.facts EXECUTE optimize;
ALTER TABLE iceberg.gravix.events EXECUTE optimize;
ALTER TABLE iceberg.gravix.facts EXECUTE expire_snapshots(retention_threshold => 'RETENTION');
ALTER TABLE iceberg.gravix.events EXECUTE expire_snapshots(retention_threshold => 'RETENTION');
ALTER TABLE iceberg.gravix.facts EXECUTE remove_orphan_files(retention_threshold => 'RETENTION');
ALTER TABLE iceberg.gravix.events EXECUTE remove_orphan_files(retention_threshold => 'RETENTION');
