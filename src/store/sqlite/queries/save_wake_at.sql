UPDATE conversations SET wake_at_ms = ?2 WHERE id = ?1 AND wake_at_ms IS NOT ?2
