WITH lease AS (
    INSERT INTO conversations (id, lease_owner, lease_until_ms) VALUES ($1, $2, $3)
    ON CONFLICT (id) DO UPDATE
       SET lease_owner = EXCLUDED.lease_owner, lease_until_ms = EXCLUDED.lease_until_ms
       WHERE conversations.lease_owner IS NULL
          OR conversations.lease_owner = EXCLUDED.lease_owner
          OR conversations.lease_until_ms <= $4
    RETURNING state, applied_inbox_seq
)
SELECT lease.state, inbox.seqs, inbox.texts, inbox.transcript_seqs, inbox.details
FROM lease, LATERAL (
    SELECT array_agg(seq ORDER BY seq) AS seqs, array_agg(text ORDER BY seq) AS texts,
           array_agg(transcript_seq ORDER BY seq) AS transcript_seqs,
           array_agg(details ORDER BY seq) AS details
    FROM inbox WHERE conversation_id = $1 AND seq > lease.applied_inbox_seq
) AS inbox
