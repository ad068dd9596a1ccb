-- The sink's write-ahead record of the offset spans it is about to insert (one row per
-- source partition per batch, written before the batch's inserts). A sink restarted after
-- a crash between insert and offset commit finds the span starting at its committed
-- offset and re-forms exactly that insert, so it carries the same deduplication token and
-- ClickHouse drops it. Rows matter only until the span is committed: kept a week.
CREATE TABLE IF NOT EXISTS sink_intents
(
    consumer_group  String,
    topic           String,
    partition       UInt32,
    first_offset    UInt64,
    last_offset     UInt64,
    written_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(written_at)
ORDER BY (consumer_group, topic, partition, first_offset)
TTL toDateTime(written_at) + INTERVAL 7 DAY;
