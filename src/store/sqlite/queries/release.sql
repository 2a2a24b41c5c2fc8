UPDATE conversations SET lease_owner = NULL, lease_until_ms = NULL
WHERE id = ?1 AND lease_owner = ?2
