-- Each write of the store is one statement (SQLite runs a statement
-- atomically, under the write lock, without BEGIN/COMMIT round trips); the
-- triggers below do the rest of the write inside that statement.

-- The id of the inbound message a user entry came from (NULL for the bot's
-- entries and for entries written before this migration).
ALTER TABLE transcript ADD COLUMN message_id TEXT;

-- Enqueue: inserting a user entry that carries its message id records the
-- id as seen and appends the text to the inbox with the conversation's next
-- inbox seq (creating the conversation's row). The store's INSERT skips an
-- id already seen, so a redelivered message writes nothing.
CREATE TRIGGER transcript_enqueue AFTER INSERT ON transcript
WHEN NEW.message_id IS NOT NULL
BEGIN
    INSERT INTO seen_messages (conversation_id, message_id)
    VALUES (NEW.conversation_id, NEW.message_id);
    INSERT INTO conversations (id, next_inbox_seq) VALUES (NEW.conversation_id, 2)
    ON CONFLICT (id) DO UPDATE SET next_inbox_seq = conversations.next_inbox_seq + 1;
    INSERT INTO inbox (conversation_id, seq, text, at_ms)
    SELECT NEW.conversation_id, next_inbox_seq - 1, NEW.text, NEW.at_ms
    FROM conversations WHERE id = NEW.conversation_id;
END;

-- Save: one row inserted here commits a turn under its lease, or fails with
-- the error 'chatflow: lease lost' (changing nothing) when `owner` does not
-- hold the conversation's lease. `outgoing` is a JSON array of
-- [direction, hex of the UTF-8 text] pairs (hex, because SQLite's JSON
-- functions cut a text at a NUL character), appended to the transcript in
-- order and stamped `at_ms`.
CREATE VIEW turn_saves (
    conversation_id, owner, state, wake_at_ms, lease_until_ms, consumed_up_to, outgoing, at_ms
) AS SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL WHERE 0;

CREATE TRIGGER turn_saves_insert INSTEAD OF INSERT ON turn_saves
BEGIN
    SELECT RAISE(ABORT, 'chatflow: lease lost')
    WHERE NOT EXISTS (
        SELECT 1 FROM conversations WHERE id = NEW.conversation_id AND lease_owner = NEW.owner
    );
    UPDATE conversations
    SET state = NEW.state, wake_at_ms = NEW.wake_at_ms, lease_until_ms = NEW.lease_until_ms
    WHERE id = NEW.conversation_id;
    DELETE FROM inbox WHERE conversation_id = NEW.conversation_id AND seq <= NEW.consumed_up_to;
    INSERT INTO transcript (conversation_id, seq, direction, text, at_ms)
    SELECT NEW.conversation_id,
           (SELECT COALESCE(MAX(seq), 0) FROM transcript WHERE conversation_id = NEW.conversation_id)
               + entry.key + 1,
           entry.value ->> 0,
           CAST(unhex(entry.value ->> 1) AS TEXT),
           NEW.at_ms
    FROM json_each(NEW.outgoing) AS entry
    ORDER BY entry.key;
END;
