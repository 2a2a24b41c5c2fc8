WITH seen AS (
    INSERT INTO seen_messages (conversation_id, message_id, at_ms) VALUES ($1, $2, $4)
    ON CONFLICT DO NOTHING
    RETURNING 1
),
conversation AS (
    INSERT INTO conversations (id, next_inbox_seq, next_transcript_seq)
    SELECT $1, CASE WHEN $6 THEN 2 ELSE 1 END, 2 FROM seen
    ON CONFLICT (id) DO UPDATE SET
        next_inbox_seq = conversations.next_inbox_seq + CASE WHEN $6 THEN 1 ELSE 0 END,
        next_transcript_seq = GREATEST(
            conversations.next_transcript_seq,
            (SELECT COALESCE(MAX(seq), 0) + 1 FROM transcript WHERE conversation_id = $1)
        ) + 1
    RETURNING next_inbox_seq - 1 AS inbox_seq, next_transcript_seq - 1 AS seq
),
inbox_entry AS (
    INSERT INTO inbox (conversation_id, seq, text, at_ms, transcript_seq, details)
    SELECT $1, inbox_seq, $3, $4, seq, $5 FROM conversation WHERE $6
),
transcript_entry AS (
    INSERT INTO transcript (conversation_id, seq, direction, text, at_ms, message_id, details)
    SELECT $1, seq, 'in', $3, $4, $2, $5 FROM conversation
)
SELECT seq FROM conversation
