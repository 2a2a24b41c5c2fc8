INSERT INTO conversations (id, next_inbox_seq) VALUES (?1, ?2)
ON CONFLICT (id) DO UPDATE SET next_inbox_seq = excluded.next_inbox_seq
