DELETE FROM receipts WHERE channel_message_id IN (
    SELECT channel_message_id FROM receipts WHERE at_ms < ?1 ORDER BY at_ms LIMIT ?2
)
