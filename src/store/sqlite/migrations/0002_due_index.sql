-- `due` walks conversations in wake-up order and stops after the batch it
-- needs: (wake_at_ms, id) is that order, ties included, so neither the
-- conversations that are due but held (mid-turn saves are due at once,
-- under a lease) nor a backlog after an outage are read and sorted whole.
CREATE INDEX conversations_wake_at_ms_id ON conversations (wake_at_ms, id);
DROP INDEX conversations_wake_at_ms;
