-- Channels: the ids and details of inbound messages, the replies' options
-- and owners, the outbox of replies to deliver, channels' receipts, and a
-- retention for the ids of messages seen.

-- Seen message ids get the time they were seen, so that the oldest can be
-- forgotten in batches (`prune_seen`, by `seen_messages_at_ms`).
--
-- Ids recorded before this migration carry no time. They are given the
-- time of their conversation's latest transcript entry: the id was seen
-- then or earlier, so it is kept at least as long as its real age says
-- (never forgotten too early: a redelivered webhook is not taken as new
-- right after an upgrade), and no statement reads the clock. Rows that an
-- older process still running writes without a time (NULL) are never
-- pruned.
ALTER TABLE seen_messages ADD COLUMN at_ms BIGINT;
UPDATE seen_messages AS s SET at_ms = latest.at_ms
FROM (SELECT conversation_id, MAX(at_ms) AS at_ms FROM transcript GROUP BY conversation_id) AS latest
WHERE latest.conversation_id = s.conversation_id;
CREATE INDEX seen_messages_at_ms ON seen_messages (at_ms);

-- An unapplied message knows its transcript entry (replies name it in
-- `reply_to`) and keeps its channel's details (JSON as TEXT: JSONB rejects
-- `\u0000`). Messages waiting in the inbox find their entry by text and
-- time, as enqueue wrote both.
ALTER TABLE inbox ADD COLUMN transcript_seq BIGINT;
ALTER TABLE inbox ADD COLUMN details TEXT;
UPDATE inbox SET transcript_seq = (
    SELECT MAX(t.seq) FROM transcript AS t
    WHERE t.conversation_id = inbox.conversation_id AND t.direction = 'in'
      AND t.at_ms = inbox.at_ms AND t.text = inbox.text
);

-- Transcript entries: the inbound message's id, details (JSON), a
-- question's options (JSON), the user message a reply answers, and for a
-- reply to deliver its delivery state: 'pending', 'accepted' or 'refused'
-- (NULL: not for a channel), attempts, the channel's id of the sent
-- message, and why it was refused or is retried.
ALTER TABLE transcript ADD COLUMN message_id TEXT;
ALTER TABLE transcript ADD COLUMN details TEXT;
ALTER TABLE transcript ADD COLUMN options TEXT;
ALTER TABLE transcript ADD COLUMN reply_to BIGINT;
ALTER TABLE transcript ADD COLUMN delivery_status TEXT;
ALTER TABLE transcript ADD COLUMN delivery_attempts INTEGER;
ALTER TABLE transcript ADD COLUMN channel_message_id TEXT;
ALTER TABLE transcript ADD COLUMN delivery_detail TEXT;
-- The outbox: the pending entries only. Recording a reply to deliver is
-- one more index row, its only cost on a turn's path; a reply without a
-- channel adds nothing to it.
CREATE INDEX transcript_pending ON transcript (conversation_id, seq)
WHERE delivery_status = 'pending';
-- Receipts find their entry by the channel's message id.
CREATE INDEX transcript_channel_message_id ON transcript (channel_message_id)
WHERE channel_message_id IS NOT NULL;

-- When a conversation's pending deliveries are due (NULL: none pending),
-- and the delivery lease, apart from the turn's: one deliverer per
-- conversation at a time, beside its turns.
ALTER TABLE conversations ADD COLUMN deliver_at_ms BIGINT;
ALTER TABLE conversations ADD COLUMN delivery_owner TEXT;
ALTER TABLE conversations ADD COLUMN delivery_until_ms BIGINT;
CREATE INDEX conversations_deliver_at_ms_id ON conversations (deliver_at_ms, id)
WHERE deliver_at_ms IS NOT NULL;

-- Channels' receipts by their message id: the furthest one ('sent' <
-- 'delivered' < 'read' < 'failed'), whether it came before or after the
-- send was recorded. `at_ms` is the receipt's own time (pruned with the
-- seen ids).
CREATE TABLE receipts (
    channel_message_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    detail TEXT,
    at_ms BIGINT NOT NULL
);
CREATE INDEX receipts_at_ms ON receipts (at_ms);
