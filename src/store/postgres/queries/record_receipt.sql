WITH kept AS (
    INSERT INTO receipts (channel_message_id, status, detail, at_ms) VALUES ($1, $2, $3, $4)
    ON CONFLICT (channel_message_id) DO UPDATE
       SET status = EXCLUDED.status, detail = EXCLUDED.detail, at_ms = EXCLUDED.at_ms
       WHERE $5 > CASE receipts.status
           WHEN 'sent' THEN 0 WHEN 'delivered' THEN 1 WHEN 'read' THEN 2 ELSE 3 END
)
SELECT conversation_id, seq FROM transcript WHERE channel_message_id = $1 LIMIT 1
