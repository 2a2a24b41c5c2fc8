SELECT t.conversation_id, t.seq, t.direction, t.text, t.at_ms, t.message_id, t.options, t.details,
       t.reply_to, t.delivery_status, t.delivery_attempts, t.channel_message_id, t.delivery_detail,
       r.status, r.detail, r.at_ms
FROM transcript AS t LEFT JOIN receipts AS r ON r.channel_message_id = t.channel_message_id
WHERE t.conversation_id = ANY($1) AND t.delivery_status = 'pending'
UNION ALL
SELECT t.conversation_id, t.seq, t.direction, t.text, t.at_ms, t.message_id, t.options, t.details,
       t.reply_to, t.delivery_status, t.delivery_attempts, t.channel_message_id, t.delivery_detail,
       NULL, NULL, NULL
FROM unnest($1::text[]) AS claimed (id), LATERAL (
    SELECT * FROM transcript
    WHERE conversation_id = claimed.id AND direction = 'in'
    ORDER BY seq DESC LIMIT 1
) AS t
