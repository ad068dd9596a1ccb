-- Referral edges (referrer -> invitee), from the events themselves: a share naming an
-- invitee (sharer -> invitee) and a join naming a referrer (referrer -> joiner). Both ends
-- are seed person ids (resolve them through person_of_seed). The events table keeps the
-- related identity's seed in `related_person` (its keyed-hash id alone does not say which
-- id type it is, so it could not be turned into a person id in SQL).
ALTER TABLE events
    ADD COLUMN IF NOT EXISTS related_person String DEFAULT ''
        COMMENT 'seed person id of related_id (join: referrer, share: invitee)';

CREATE TABLE IF NOT EXISTS referral_edges
(
    brand     LowCardinality(String),
    referrer  String COMMENT 'seed person id of the sharer / referrer',
    invitee   String COMMENT 'seed person id of the invitee / joiner',
    kind      LowCardinality(String) COMMENT 'share | join',
    channel   LowCardinality(String),
    at        DateTime64(3, 'UTC'),
    event_id  String
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(at)
ORDER BY (brand, referrer, invitee, event_id)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS referral_edges_mv TO referral_edges AS
SELECT
    brand,
    if(type = 'share', person_id, related_person) AS referrer,
    if(type = 'share', related_person, person_id) AS invitee,
    type AS kind,
    channel,
    occurred_at AS at,
    event_id
FROM events
WHERE type IN ('share', 'join') AND related_person != '';
