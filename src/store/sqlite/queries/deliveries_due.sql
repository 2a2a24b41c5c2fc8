SELECT id FROM conversations
WHERE deliver_at_ms <= ?1
  AND (delivery_owner IS NULL OR delivery_until_ms <= ?1)
ORDER BY deliver_at_ms, id
LIMIT ?3
