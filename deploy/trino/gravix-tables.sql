-- External tables over what gravixd writes to s3://gravix/events (segment_format=parquet
-- in the compose stack) and what `gravixd rollup` compacts into s3://gravix/events/rollup.
-- Run: docker compose exec trino trino --file /etc/trino/gravix-tables.sql
CREATE SCHEMA IF NOT EXISTS gravix.events WITH (location = 's3://gravix/trino-warehouse/events');

CREATE TABLE IF NOT EXISTS gravix.events.facts (
  "timestamp" timestamp(3),
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

CREATE TABLE IF NOT EXISTS gravix.events.service_events (
  "timestamp" timestamp(3),
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

CREATE TABLE IF NOT EXISTS gravix.events.facts_rollup (
  "timestamp" timestamp(3),
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

-- New dt=/hour= folders appear as gravixd writes; register them before querying.
CALL gravix.system.sync_partition_metadata('events', 'facts', 'ADD');
CALL gravix.system.sync_partition_metadata('events', 'service_events', 'ADD');
CALL gravix.system.sync_partition_metadata('events', 'facts_rollup', 'ADD');
