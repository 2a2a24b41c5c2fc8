WITH saved AS (
    UPDATE conversations SET
        state = $3, wake_at_ms = $4, lease_until_ms = $5,
        applied_inbox_seq = GREATEST(applied_inbox_seq, $6),
        next_transcript_seq = CASE WHEN cardinality($7::text[]) = 0 THEN next_transcript_seq
            ELSE GREATEST(
                next_transcript_seq,
                (SELECT COALESCE(MAX(seq), 0) + 1 FROM transcript WHERE conversation_id = $1)
            ) + cardinality($7::text[])
        END
    WHERE id = $1 AND lease_owner = $2
    RETURNING next_transcript_seq - cardinality($7::text[]) AS first_seq
),
consumed AS (
    DELETE FROM inbox
    WHERE conversation_id = $1 AND seq <= $6 AND EXISTS (SELECT 1 FROM saved)
),
said AS (
    INSERT INTO transcript (conversation_id, seq, direction, text, at_ms)
    SELECT $1, saved.first_seq + entry.n - 1, entry.direction, entry.text, $9
    FROM saved, unnest($7::text[], $8::bytea[]) WITH ORDINALITY AS entry (direction, text, n)
    RETURNING seq, direction, text, at_ms
)
