WITH seen AS (
    INSERT INTO seen_messages (conversation_id, message_id, at_ms) VALUES ($1, $2, $4)
    ON CONFLICT DO NOTHING
    RETURNING 1
),
conversation AS (
    INSERT INTO conversations AS c
        (id, next_inbox_seq, next_transcript_seq, lease_owner, lease_until_ms)
    SELECT $1, 2, 2, $5, $6 FROM seen
    ON CONFLICT (id) DO UPDATE SET
        next_inbox_seq = c.next_inbox_seq + 1,
        next_transcript_seq = GREATEST(
            c.next_transcript_seq,
            (SELECT COALESCE(MAX(seq), 0) + 1 FROM transcript WHERE conversation_id = $1)
        ) + 1,
        lease_owner = CASE
            WHEN c.lease_owner IS NULL OR c.lease_owner = $5 OR c.lease_until_ms <= $4
            THEN $5 ELSE c.lease_owner END,
        lease_until_ms = CASE
            WHEN c.lease_owner IS NULL OR c.lease_owner = $5 OR c.lease_until_ms <= $4
            THEN $6 ELSE c.lease_until_ms END
    RETURNING next_inbox_seq - 1 AS inbox_seq, next_transcript_seq - 1 AS seq,
        lease_owner = $5 AS leased, applied_inbox_seq,
        CASE WHEN lease_owner = $5 THEN state END AS state
),
inbox_entry AS (
    INSERT INTO inbox (conversation_id, seq, text, at_ms, transcript_seq)
    SELECT $1, inbox_seq, $3, $4, seq FROM conversation
),
transcript_entry AS (
    INSERT INTO transcript (conversation_id, seq, direction, text, at_ms, message_id)
    SELECT $1, seq, 'in', $3, $4, $2 FROM conversation
)
SELECT c.seq, c.inbox_seq, c.leased, c.applied_inbox_seq, c.state,
       inbox.seqs, inbox.texts, inbox.transcript_seqs, inbox.details
FROM conversation AS c, LATERAL (
    SELECT array_agg(seq ORDER BY seq) AS seqs, array_agg(text ORDER BY seq) AS texts,
           array_agg(transcript_seq ORDER BY seq) AS transcript_seqs,
           array_agg(details ORDER BY seq) AS details
    FROM (
        SELECT seq, text, transcript_seq, details FROM inbox
        WHERE c.leased AND conversation_id = $1 AND seq > c.applied_inbox_seq
        UNION ALL
        SELECT c.inbox_seq, $3, c.seq, NULL WHERE c.leased
    ) AS entry
) AS inbox
