WITH woken (id, since) AS (
    SELECT id, wake_at_ms FROM conversations
    WHERE wake_at_ms <= $1 AND (lease_owner IS NULL OR lease_until_ms <= $1)
    ORDER BY wake_at_ms, id
    LIMIT $2
),
messaged (id, since) AS (
    SELECT i.conversation_id, MIN(i.at_ms) FROM inbox i
    JOIN conversations c ON c.id = i.conversation_id
    WHERE c.lease_owner IS NULL OR c.lease_until_ms <= $1
    GROUP BY i.conversation_id
    ORDER BY MIN(i.at_ms), i.conversation_id
    LIMIT $2
),
overdue (id, since) AS (
    SELECT id, MIN(since) FROM (
        SELECT id, since FROM woken UNION ALL SELECT id, since FROM messaged
    ) AS pending
    GROUP BY id
)
SELECT c.id FROM overdue o JOIN conversations c ON c.id = o.id
ORDER BY o.since, c.id
LIMIT $2
FOR UPDATE OF c SKIP LOCKED
