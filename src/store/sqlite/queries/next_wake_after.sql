SELECT MIN(wake_at_ms) FROM conversations WHERE wake_at_ms > ?1
