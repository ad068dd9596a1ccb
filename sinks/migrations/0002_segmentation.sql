-- Segmentation engine: lifecycle, tags and layers, the person's clock, acquisition.
-- Added columns have defaults, so rows written before this migration still read.
ALTER TABLE person_state
    ADD COLUMN IF NOT EXISTS as_of DateTime64(3, 'UTC') DEFAULT last_seen
        COMMENT 'the person''s clock: segments hold as of this time',
    ADD COLUMN IF NOT EXISTS lifecycle LowCardinality(String) DEFAULT ''
        COMMENT 'new | active | at_risk | dormant | churned | won_back; empty = never purchased',
    ADD COLUMN IF NOT EXISTS tags Array(LowCardinality(String)),
    ADD COLUMN IF NOT EXISTS layers Map(LowCardinality(String), LowCardinality(String))
        COMMENT 'layer -> level',
    ADD COLUMN IF NOT EXISTS shares UInt32 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS invitations UInt32 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS first_purchase_day Int32 DEFAULT -1,
    ADD COLUMN IF NOT EXISTS subscribed Nullable(UInt8)
        COMMENT '1 following/friends/in group, 0 left, NULL never seen joining or leaving',
    ADD COLUMN IF NOT EXISTS acquisition_channel LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS acquisition_source LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS policy_version LowCardinality(String) DEFAULT '';

ALTER TABLE segment_changes
    ADD COLUMN IF NOT EXISTS policy_version LowCardinality(String) DEFAULT ''
        COMMENT 'rules and thresholds that decided the change (see touchflow rebuild)',
    ADD COLUMN IF NOT EXISTS cause LowCardinality(String) MATERIALIZED
        if(cause_event_id = 'time', 'time', 'event');
