-- Trino tables and views over what gravixd writes to s3://gravix/events, the compose
-- stack's store (the Helm chart renders a copy of this file with its own store URL).
-- Columns and types are checked against gravixd/schema.py by tests/unit/test_query_sql.py.
-- Timestamps are timestamp(9): the catalog sets hive.timestamp-precision=NANOSECONDS, the
-- precision gravixd writes (Parquet INT64 TIMESTAMP(NANOS, UTC)); values are UTC.
-- dt and hour are the path's partitions, varchar: filter with dt = '2026-11-25' AND hour = '07'.
-- Run: docker compose exec trino trino --file /etc/trino/gravix-tables.sql
CREATE SCHEMA IF NOT EXISTS gravix.events WITH (location = 's3://gravix/events/_trino');

-- facts: live segments (segment_format = "parquet"; Trino cannot read Arrow IPC)
CREATE TABLE IF NOT EXISTS gravix.events.facts (
  "timestamp" timestamp(9),
  service varchar,
  route varchar,
  method varchar,
  status_code integer,
  duration_ms double,
  bytes_in bigint,
  bytes_out bigint,
  trace_id varchar,
  attributes map(varchar, varchar),
  dt varchar,
  hour varchar
) WITH (
  external_location = 's3://gravix/events/facts',
  format = 'PARQUET',
  partitioned_by = ARRAY['dt', 'hour']
);

-- facts_rollup: what `gravixd rollup` compacted
CREATE TABLE IF NOT EXISTS gravix.events.facts_rollup (
  "timestamp" timestamp(9),
  service varchar,
  route varchar,
  method varchar,
  status_code integer,
  duration_ms double,
  bytes_in bigint,
  bytes_out bigint,
  trace_id varchar,
  attributes map(varchar, varchar),
  dt varchar,
  hour varchar
) WITH (
  external_location = 's3://gravix/events/rollup/facts',
  format = 'PARQUET',
  partitioned_by = ARRAY['dt', 'hour']
);

-- facts_commits: one row per source segment and part of each committed rollup batch
CREATE TABLE IF NOT EXISTS gravix.events.facts_commits (
  batch integer,
  role varchar,
  file varchar,
  dt varchar,
  hour varchar
) WITH (
  external_location = 's3://gravix/events/rollup-commits/facts',
  format = 'PARQUET',
  partitioned_by = ARRAY['dt', 'hour']
);

-- events: live segments (segment_format = "parquet"; Trino cannot read Arrow IPC)
CREATE TABLE IF NOT EXISTS gravix.events.events (
  "timestamp" timestamp(9),
  service varchar,
  kind varchar,
  severity varchar,
  message varchar,
  trace_id varchar,
  attributes map(varchar, varchar),
  dt varchar,
  hour varchar
) WITH (
  external_location = 's3://gravix/events/events',
  format = 'PARQUET',
  partitioned_by = ARRAY['dt', 'hour']
);

-- events_rollup: what `gravixd rollup` compacted
CREATE TABLE IF NOT EXISTS gravix.events.events_rollup (
  "timestamp" timestamp(9),
  service varchar,
  kind varchar,
  severity varchar,
  message varchar,
  trace_id varchar,
  attributes map(varchar, varchar),
  dt varchar,
  hour varchar
) WITH (
  external_location = 's3://gravix/events/rollup/events',
  format = 'PARQUET',
  partitioned_by = ARRAY['dt', 'hour']
);

-- events_commits: one row per source segment and part of each committed rollup batch
CREATE TABLE IF NOT EXISTS gravix.events.events_commits (
  batch integer,
  role varchar,
  file varchar,
  dt varchar,
  hour varchar
) WITH (
  external_location = 's3://gravix/events/rollup-commits/events',
  format = 'PARQUET',
  partitioned_by = ARRAY['dt', 'hour']
);

-- facts_all: every stored fact exactly once, rolled up or not (docs/query.md): rollup parts a
-- commit record names, plus live segments no commit record names (not yet rolled up, being
-- rolled up, or late for a rolled-up hour).
CREATE OR REPLACE VIEW gravix.events.facts_all AS
SELECT "timestamp", service, route, method, status_code, duration_ms, bytes_in, bytes_out, trace_id, attributes, dt, hour
FROM gravix.events.facts_rollup AS r
WHERE EXISTS (
  SELECT 1 FROM gravix.events.facts_commits AS c
  WHERE c.dt = r.dt AND c.hour = r.hour AND c.role = 'part'
    AND c.file = regexp_extract(r."$path", '[^/]+$')
)
UNION ALL
SELECT "timestamp", service, route, method, status_code, duration_ms, bytes_in, bytes_out, trace_id, attributes, dt, hour
FROM gravix.events.facts AS l
WHERE NOT EXISTS (
  SELECT 1 FROM gravix.events.facts_commits AS c
  WHERE c.dt = l.dt AND c.hour = l.hour AND c.role = 'source'
    AND c.file = regexp_extract(l."$path", '[^/]+$')
);

-- events_all: every stored event exactly once, rolled up or not (docs/query.md): rollup parts a
-- commit record names, plus live segments no commit record names (not yet rolled up, being
-- rolled up, or late for a rolled-up hour).
CREATE OR REPLACE VIEW gravix.events.events_all AS
SELECT "timestamp", service, kind, severity, message, trace_id, attributes, dt, hour
FROM gravix.events.events_rollup AS r
WHERE EXISTS (
  SELECT 1 FROM gravix.events.events_commits AS c
  WHERE c.dt = r.dt AND c.hour = r.hour AND c.role = 'part'
    AND c.file = regexp_extract(r."$path", '[^/]+$')
)
UNION ALL
SELECT "timestamp", service, kind, severity, message, trace_id, attributes, dt, hour
FROM gravix.events.events AS l
WHERE NOT EXISTS (
  SELECT 1 FROM gravix.events.events_commits AS c
  WHERE c.dt = l.dt AND c.hour = l.hour AND c.role = 'source'
    AND c.file = regexp_extract(l."$path", '[^/]+$')
);
