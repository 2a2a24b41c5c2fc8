SELECT 1 FROM conversations WHERE id = ?1 AND delivery_owner = ?2
