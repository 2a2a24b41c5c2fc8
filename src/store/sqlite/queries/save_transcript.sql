INSERT INTO transcript
    (conversation_id, seq, direction, text, at_ms, reply_to, options, details, delivery_status, delivery_attempts)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
