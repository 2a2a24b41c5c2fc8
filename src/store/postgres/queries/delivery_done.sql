UPDATE conversations SET deliver_at_ms = NULL
WHERE id = $1 AND deliver_at_ms IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM transcript WHERE conversation_id = $1 AND delivery_status = 'pending')
