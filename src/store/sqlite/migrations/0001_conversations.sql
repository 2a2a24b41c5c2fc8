-- chatflow's conversation store (SQLite). Times are Unix milliseconds.

-- One row per conversation: its state and who may advance it.
CREATE TABLE conversations (
    id TEXT PRIMARY KEY NOT NULL,
    -- The serialized `Conversation` (JSON); NULL until the first save.
    state TEXT,
    -- When it needs a runner even if no message comes; NULL when it waits
    -- for the user or has ended.
    wake_at_ms INTEGER,
    -- The runner holding the lease, and until when; both NULL when free.
    lease_owner TEXT,
    lease_until_ms INTEGER,
    -- The inbox seq the next message gets (seqs are never reused).
    next_inbox_seq INTEGER NOT NULL DEFAULT 1
);

CREATE INDEX conversations_wake_at_ms ON conversations (wake_at_ms);

-- User messages recorded but not yet applied to the state.
CREATE TABLE inbox (
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    text TEXT NOT NULL,
    -- Arrival time: orders conversations in `due`.
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, seq)
);

-- Message ids already recorded, so redelivered webhooks change nothing.
CREATE TABLE seen_messages (
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    message_id TEXT NOT NULL,
    PRIMARY KEY (conversation_id, message_id)
);

-- What was said, in order; seq from 1 per conversation.
CREATE TABLE transcript (
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    direction TEXT NOT NULL CHECK (direction IN ('in', 'out', 'handoff')),
    text TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, seq)
);
