INSERT INTO receipts (channel_message_id, status, detail, at_ms) VALUES (?1, ?2, ?3, ?4)
ON CONFLICT (channel_message_id) DO UPDATE
   SET status = excluded.status, detail = excluded.detail, at_ms = excluded.at_ms
   WHERE ?5 > CASE receipts.status
       WHEN 'sent' THEN 0 WHEN 'delivered' THEN 1 WHEN 'read' THEN 2 ELSE 3 END
