SELECT EXISTS (SELECT 1 FROM saved), replies.seqs, replies.directions, replies.texts, replies.ats
FROM (
    SELECT array_agg(seq ORDER BY seq) AS seqs, array_agg(direction ORDER BY seq) AS directions,
           array_agg(text ORDER BY seq) AS texts, array_agg(at_ms ORDER BY seq) AS ats
    FROM (
        SELECT seq, direction, text, at_ms FROM transcript
        WHERE conversation_id = $1 AND seq > $10 AND direction <> 'in'
          AND EXISTS (SELECT 1 FROM saved)
        UNION ALL
        SELECT seq, direction, text, at_ms FROM said
    ) AS entry
) AS replies
