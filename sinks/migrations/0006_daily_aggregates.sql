-- Daily aggregates kept by materialized views, for dashboards that should not scan events.
-- They add what each insert block holds: a row that reaches `events` twice (an insert the
-- dedup window no longer remembers) counts twice here, while `events FINAL` counts it once.
-- Exact figures (the reports) read the base tables; these are for trends.
CREATE TABLE IF NOT EXISTS events_daily
(
    day           Date,
    brand         LowCardinality(String),
    channel       LowCardinality(String),
    type          LowCardinality(String),
    events        SimpleAggregateFunction(sum, UInt64),
    amount_minor  SimpleAggregateFunction(sum, Int64),
    people        AggregateFunction(uniq, String)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (brand, day, channel, type);

CREATE MATERIALIZED VIEW IF NOT EXISTS events_daily_mv TO events_daily AS
SELECT
    toDate(occurred_at) AS day, brand, channel, type,
    toUInt64(count()) AS events,
    toInt64(sum(amount_minor)) AS amount_minor,
    uniqState(person_id) AS people
FROM events
GROUP BY day, brand, channel, type;

CREATE TABLE IF NOT EXISTS segment_changes_daily
(
    day        Date,
    brand      LowCardinality(String),
    dimension  LowCardinality(String),
    to_value   LowCardinality(String),
    changes    UInt64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (brand, day, dimension, to_value);

CREATE MATERIALIZED VIEW IF NOT EXISTS segment_changes_daily_mv TO segment_changes_daily AS
SELECT toDate(event_time) AS day, brand, dimension, to_value, toUInt64(count()) AS changes
FROM segment_changes
GROUP BY day, brand, dimension, to_value;

-- Raw events are kept five years (cohorts and lifetime value look back that far; RFM
-- needs one); daily aggregates and person state are kept for good.
ALTER TABLE events MODIFY TTL toDateTime(occurred_at) + INTERVAL 5 YEAR;
