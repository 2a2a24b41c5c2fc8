INSERT INTO seen_messages (conversation_id, message_id) VALUES (?1, ?2)
