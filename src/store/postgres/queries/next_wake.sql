SELECT MIN(wake_at_ms) FROM conversations
