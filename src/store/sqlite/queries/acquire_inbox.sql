SELECT seq, text FROM inbox WHERE conversation_id = ?1 ORDER BY seq
