UPDATE conversations SET state = ?3, lease_until_ms = ?4
WHERE id = ?1 AND lease_owner = ?2
