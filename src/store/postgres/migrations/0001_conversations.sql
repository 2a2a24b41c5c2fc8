-- chatflow's conversation store (Postgres). Times are Unix milliseconds.
--
-- Message texts are BYTEA (UTF-8), not TEXT: Postgres text cannot hold a NUL
-- character, and a user may send one. Read them with
-- `convert_from(text, 'UTF8')`. The state is JSON kept as TEXT for the same
-- reason (JSONB rejects `\u0000`); cast it with `state::jsonb` to query it.

-- One row per conversation: its state and who may advance it.
CREATE TABLE conversations (
    id TEXT PRIMARY KEY,
    -- The serialized `Conversation` (JSON); NULL until the first save.
    state TEXT,
    -- When it needs a runner even if no message comes; NULL when it waits
    -- for the user or has ended.
    wake_at_ms BIGINT,
    -- The runner holding the lease, and until when; both NULL when free.
    lease_owner TEXT,
    lease_until_ms BIGINT,
    -- The inbox seq the next message gets (seqs are never reused).
    next_inbox_seq BIGINT NOT NULL DEFAULT 1
);

CREATE INDEX conversations_wake_at_ms ON conversations (wake_at_ms);

-- User messages recorded but not yet applied to the state.
CREATE TABLE inbox (
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    text BYTEA NOT NULL,
    -- Arrival time: orders conversations in `due`.
    at_ms BIGINT NOT NULL,
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
    seq BIGINT NOT NULL,
    direction TEXT NOT NULL CHECK (direction IN ('in', 'out', 'handoff')),
    text BYTEA NOT NULL,
    at_ms BIGINT NOT NULL,
    PRIMARY KEY (conversation_id, seq)
);
