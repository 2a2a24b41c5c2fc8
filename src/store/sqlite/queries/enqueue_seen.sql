INSERT INTO seen_messages (conversation_id, message_id, at_ms) VALUES (?1, ?2, ?3)
