UPDATE conversations SET deliver_at_ms = ?2 WHERE id = ?1
