SELECT EXISTS (SELECT 1 FROM saved), entry.seq, entry.direction, entry.text, entry.at_ms, entry.message_id,
       entry.options, entry.details, entry.reply_to, entry.delivery_status, entry.delivery_attempts,
       entry.channel_message_id, entry.delivery_detail, entry.receipt_status, entry.receipt_detail,
       entry.receipt_at_ms
FROM (SELECT 1) AS one LEFT JOIN (
    SELECT t.seq, t.direction, t.text, t.at_ms, t.message_id, t.options, t.details, t.reply_to,
           t.delivery_status, t.delivery_attempts, t.channel_message_id, t.delivery_detail,
           r.status AS receipt_status, r.detail AS receipt_detail, r.at_ms AS receipt_at_ms
    FROM transcript AS t LEFT JOIN receipts AS r ON r.channel_message_id = t.channel_message_id
    WHERE t.conversation_id = $1 AND t.seq > $14 AND t.reply_to = $14
      AND EXISTS (SELECT 1 FROM saved)
    UNION ALL
    SELECT seq, direction, text, at_ms, NULL, options, details, reply_to,
           delivery_status, delivery_attempts, NULL, NULL, NULL, NULL, NULL
    FROM said WHERE reply_to = $14
) AS entry ON true
ORDER BY entry.seq
