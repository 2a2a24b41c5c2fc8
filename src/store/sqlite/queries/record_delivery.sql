UPDATE transcript
SET delivery_status = ?3, delivery_attempts = delivery_attempts + 1,
    channel_message_id = ?4, delivery_detail = ?5
WHERE conversation_id = ?1 AND seq = ?2 AND delivery_status = 'pending'
