-- People as they are now: the latest state of every (brand, person), without the people
-- merged into another by identity resolution (their `identity` segment change names them).
CREATE VIEW IF NOT EXISTS current_people AS
SELECT *
FROM person_state FINAL
WHERE (brand, person_id) NOT IN (
    SELECT brand, from_value FROM segment_changes WHERE dimension = 'identity'
);
