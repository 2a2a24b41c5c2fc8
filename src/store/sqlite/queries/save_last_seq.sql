SELECT COALESCE(MAX(seq), 0) FROM transcript WHERE conversation_id = ?1
