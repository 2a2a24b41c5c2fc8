UPDATE conversations SET delivery_owner = ?2, delivery_until_ms = ?3 WHERE id = ?1
