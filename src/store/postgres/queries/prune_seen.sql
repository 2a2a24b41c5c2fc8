WITH seen AS (
    DELETE FROM seen_messages WHERE (conversation_id, message_id) IN (
        SELECT conversation_id, message_id FROM seen_messages WHERE at_ms < $1 ORDER BY at_ms LIMIT $2
    )
    RETURNING 1
),
old_receipts AS (
    DELETE FROM receipts WHERE channel_message_id IN (
        SELECT channel_message_id FROM receipts WHERE at_ms < $1 ORDER BY at_ms LIMIT $2
    )
)
SELECT COUNT(*) FROM seen
