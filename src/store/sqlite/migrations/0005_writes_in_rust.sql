-- The store's writes are now plain statements run by the store itself, one
-- transaction per operation (rusqlite runs them in-process, so several
-- statements cost no more round trips than one). The triggers of 0003 made
-- SQLite build a temporary B-tree for nearly every write (for the rows of
-- the INSTEAD OF view, for RETURNING, for an INSERT that reads its own
-- table): about 25 per turn, a third of the store's CPU. They go, with the
-- view.
DROP TRIGGER turn_saves_insert;
DROP VIEW turn_saves;
DROP TRIGGER transcript_enqueue;

-- `direction IN (...)` builds a temporary B-tree of the list at every
-- insert; the same check written with `=` compares in place. Changing a
-- CHECK means rebuilding the table.
--
-- The message id column gets a new name: an older process still running
-- would otherwise go on inserting user entries that, without the trigger,
-- never reach the inbox (its message silently lost); now its insert fails.
CREATE TABLE transcript_new (
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    direction TEXT NOT NULL CHECK (direction = 'in' OR direction = 'out' OR direction = 'handoff'),
    text TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    -- The id of the inbound message a user entry came from (NULL for the
    -- bot's entries).
    source_message_id TEXT,
    PRIMARY KEY (conversation_id, seq)
) WITHOUT ROWID;
INSERT INTO transcript_new (conversation_id, seq, direction, text, at_ms, source_message_id)
SELECT conversation_id, seq, direction, text, at_ms, message_id FROM transcript;
DROP TABLE transcript;
ALTER TABLE transcript_new RENAME TO transcript;
