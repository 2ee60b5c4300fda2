-- Register the dt=/hour= folders that appeared since the last run (the file metastore does
-- not discover partitions). compose and the Helm chart run this every minute.

CALL gravix.system.sync_partition_metadata('events', 'facts', 'FULL');
CALL gravix.system.sync_partition_metadata('events', 'facts_rollup', 'FULL');
CALL gravix.system.sync_partition_metadata('events', 'facts_commits', 'FULL');
CALL gravix.system.sync_partition_metadata('events', 'events', 'FULL');
CALL gravix.system.sync_partition_metadata('events', 'events_rollup', 'FULL');
CALL gravix.system.sync_partition_metadata('events', 'events_commits', 'FULL');
