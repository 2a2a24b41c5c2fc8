WITH saved AS (
    UPDATE conversations SET
        state = $3, wake_at_ms = $4, lease_until_ms = $5,
        applied_inbox_seq = GREATEST(applied_inbox_seq, $6),
        next_transcript_seq = CASE WHEN cardinality($7::text[]) = 0 THEN next_transcript_seq
            ELSE GREATEST(
                next_transcript_seq,
                (SELECT COALESCE(MAX(seq), 0) + 1 FROM transcript WHERE conversation_id = $1)
            ) + cardinality($7::text[])
        END,
        deliver_at_ms = CASE WHEN $11 AND cardinality($7::text[]) > 0 THEN COALESCE(deliver_at_ms, $9)
            ELSE deliver_at_ms END
    WHERE id = $1 AND lease_owner = $2
    RETURNING next_transcript_seq - cardinality($7::text[]) AS first_seq
),
consumed AS (
    DELETE FROM inbox
    WHERE conversation_id = $1 AND seq <= $6 AND EXISTS (SELECT 1 FROM saved)
),
said AS (
    INSERT INTO transcript (
        conversation_id, seq, direction, text, at_ms, reply_to, options, details,
        delivery_status, delivery_attempts
    )
    SELECT $1, saved.first_seq + entry.n - 1, entry.direction, entry.text, $9, $10,
           entry.options, entry.details,
           CASE WHEN $11 THEN 'pending' END, CASE WHEN $11 THEN 0 END
    FROM saved, unnest($7::text[], $8::bytea[], $12::text[], $13::text[])
        WITH ORDINALITY AS entry (direction, text, options, details, n)
    RETURNING seq, direction, text, at_ms, reply_to, options, details, delivery_status, delivery_attempts
)
