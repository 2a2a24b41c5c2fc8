SELECT conversation_id, seq FROM transcript WHERE channel_message_id = ?1 LIMIT 1
