INSERT INTO inbox (conversation_id, seq, text, at_ms) VALUES (?1, ?2, ?3, ?4)
