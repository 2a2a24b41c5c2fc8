INSERT INTO transcript (conversation_id, seq, direction, text, at_ms, source_message_id, details)
VALUES (?1, ?2, 'in', ?3, ?4, ?5, ?6)
