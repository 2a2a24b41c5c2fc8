SELECT seq, direction, text, at_ms FROM transcript
WHERE conversation_id = ?1 AND seq > ?2 ORDER BY seq
