WITH lease AS (
    SELECT id FROM conversations WHERE id = $1 AND delivery_owner = $2 FOR UPDATE
),
entry AS (
    UPDATE transcript
    SET delivery_status = $4, delivery_attempts = delivery_attempts + 1,
        channel_message_id = $5, delivery_detail = $6
    WHERE conversation_id = $1 AND seq = $3 AND delivery_status = 'pending'
      AND EXISTS (SELECT 1 FROM lease)
    RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM lease), EXISTS (SELECT 1 FROM entry)
