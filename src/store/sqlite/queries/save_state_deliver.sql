UPDATE conversations SET state = ?3, lease_until_ms = ?4, deliver_at_ms = COALESCE(deliver_at_ms, ?5)
WHERE id = ?1 AND lease_owner = ?2
