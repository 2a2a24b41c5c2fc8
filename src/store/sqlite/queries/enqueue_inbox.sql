INSERT INTO inbox (conversation_id, seq, text, at_ms, transcript_seq, details)
VALUES (?1, ?2, ?3, ?4, ?5, ?6)
