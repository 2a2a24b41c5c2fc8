INSERT INTO transcript (conversation_id, seq, direction, text, at_ms)
VALUES (?1, ?2, ?3, ?4, ?5)
