DELETE FROM inbox WHERE conversation_id = ?1 AND seq < ?2
