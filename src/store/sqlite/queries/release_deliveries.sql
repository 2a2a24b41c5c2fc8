UPDATE conversations SET delivery_owner = NULL, delivery_until_ms = NULL
WHERE id = ?1 AND delivery_owner = ?2
