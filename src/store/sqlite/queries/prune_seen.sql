DELETE FROM seen_messages WHERE (conversation_id, message_id) IN (
    SELECT conversation_id, message_id FROM seen_messages WHERE at_ms < ?1 ORDER BY at_ms LIMIT ?2
)
