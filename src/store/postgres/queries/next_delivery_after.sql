SELECT MIN(deliver_at_ms) FROM conversations WHERE deliver_at_ms > $1
