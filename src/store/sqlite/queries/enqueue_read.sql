SELECT EXISTS (SELECT 1 FROM seen_messages WHERE conversation_id = ?1 AND message_id = ?2),
       COALESCE((SELECT next_inbox_seq FROM conversations WHERE id = ?1), 1),
       (SELECT COALESCE(MAX(seq), 0) FROM transcript WHERE conversation_id = ?1)
