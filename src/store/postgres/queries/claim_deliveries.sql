WITH due AS (
    SELECT id FROM conversations
    WHERE deliver_at_ms <= $3
      AND (delivery_owner IS NULL OR delivery_until_ms <= $3)
    ORDER BY deliver_at_ms, id
    LIMIT $4
    FOR UPDATE SKIP LOCKED
)
UPDATE conversations AS c SET delivery_owner = $1, delivery_until_ms = $2
FROM due WHERE c.id = due.id
RETURNING c.id, c.deliver_at_ms
