SELECT t.seq, t.direction, t.text, t.at_ms, t.source_message_id, t.options, t.details, t.reply_to,
       t.delivery_status, t.delivery_attempts, t.channel_message_id, t.delivery_detail,
       r.status, r.detail, r.at_ms
FROM transcript AS t LEFT JOIN receipts AS r ON r.channel_message_id = t.channel_message_id
WHERE t.conversation_id = ?1 AND t.seq > ?2 AND t.reply_to = ?2 ORDER BY t.seq
