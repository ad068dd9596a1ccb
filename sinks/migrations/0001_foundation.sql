-- Raw touchpoints as accepted by the contract (one row per event_id after merges / FINAL).
CREATE TABLE IF NOT EXISTS events
(
    event_id      String,
    type          LowCardinality(String),
    brand         LowCardinality(String),
    channel       LowCardinality(String),
    person_id     String,
    id_type       LowCardinality(String),
    user_id       String COMMENT 'keyed hash of the channel id, never the raw value',
    occurred_at   DateTime64(3, 'UTC'),
    amount_minor  Int64 COMMENT 'purchase: amount paid, refund: amount refunded, else 0',
    order_id      String,
    source        LowCardinality(String) COMMENT 'join: acquisition source',
    related_id    String COMMENT 'join: referrer, share: invitee (keyed hashes)',
    src_partition UInt16,
    src_offset    UInt64,
    ingested_at   DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (brand, toDate(occurred_at), person_id, event_id)
SETTINGS non_replicated_deduplication_window = 1000;

-- Latest state per (brand, person): the highest version wins on merge / FINAL.
CREATE TABLE IF NOT EXISTS person_state
(
    brand                 LowCardinality(String),
    person_id             String,
    version               UInt64,
    seq                   UInt64,
    first_seen            DateTime64(3, 'UTC'),
    last_seen             DateTime64(3, 'UTC'),
    engagements           UInt32,
    lifetime_orders       Int32,
    lifetime_amount_minor Int64,
    last_purchase_day     Int32 COMMENT 'days since epoch, -1 = never',
    r                     UInt8,
    f                     UInt8,
    m                     UInt8,
    rfm_segment           LowCardinality(String) COMMENT 'empty = never purchased',
    aipl_stage            LowCardinality(String)
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (brand, person_id)
SETTINGS non_replicated_deduplication_window = 1000;

-- Every segment change, keyed like the topic's dedup key (brand, person_id, seq).
CREATE TABLE IF NOT EXISTS segment_changes
(
    brand          LowCardinality(String),
    person_id      String,
    seq            UInt64,
    dimension      LowCardinality(String),
    from_value     LowCardinality(String),
    to_value       LowCardinality(String),
    rule           String,
    cause_event_id String,
    event_time     DateTime64(3, 'UTC'),
    r_before UInt8, f_before UInt8, m_before UInt8,
    r_after  UInt8, f_after  UInt8, m_after  UInt8
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (brand, person_id, seq)
SETTINGS non_replicated_deduplication_window = 1000;
