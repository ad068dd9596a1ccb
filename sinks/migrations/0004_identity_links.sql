-- Identity links: which person an absorbed person id (a seed, or a person merged earlier)
-- now belongs to. The source is the `identity` segment change the segmentation agent emits
-- when it merges a person (from_value = absorbed id, to_value = survivor): it is emitted only
-- once the merge has happened, after the resolver's link proposals were decided, and it
-- arrives through a table the sink already stores. An absorbed id is aliased exactly once
-- (a later merge of its survivor adds a new row for the survivor), so one row per seed.
CREATE TABLE IF NOT EXISTS identity_links
(
    seed       String COMMENT 'absorbed person id (events keep it in events.person_id)',
    person_id  String COMMENT 'the person it was merged into (may itself be merged later)',
    brand      LowCardinality(String) COMMENT 'the brand whose state carried the change',
    linked_at  DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(linked_at)
ORDER BY seed
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS identity_links_mv TO identity_links AS
SELECT from_value AS seed, to_value AS person_id, brand, event_time AS linked_at
FROM segment_changes
WHERE dimension = 'identity' AND from_value != '' AND to_value != '';

-- Changes stored before this migration (duplicates collapse: same key).
INSERT INTO identity_links (seed, person_id, brand, linked_at)
SELECT from_value, to_value, brand, event_time
FROM segment_changes
WHERE dimension = 'identity' AND from_value != '' AND to_value != '';

-- seed -> person as it is now: links followed to their end (a survivor may be absorbed
-- later; survivors are always smaller ids, so chains end). Ids never merged have no row.
CREATE VIEW IF NOT EXISTS person_of_seed AS
WITH RECURSIVE chain AS (
    SELECT seed, person_id, 1 AS hops FROM identity_links FINAL
    UNION ALL
    SELECT c.seed AS seed, l.person_id AS person_id, c.hops + 1 AS hops
    FROM chain AS c
    INNER JOIN (SELECT seed, person_id FROM identity_links FINAL) AS l ON l.seed = c.person_id
    WHERE c.hops < 64
)
SELECT seed, argMax(person_id, hops) AS person_id
FROM chain
GROUP BY seed;
