SELECT seq, text, transcript_seq, details FROM inbox WHERE conversation_id = ?1 ORDER BY seq
