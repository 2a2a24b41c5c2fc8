-- Each write of the store is one statement (data-modifying CTEs). A
-- statement reads with the snapshot it started with, even after waiting for
-- the conversation's row lock, so it cannot see transcript entries that a
-- concurrent writer committed meanwhile: the next transcript seq is kept on
-- the conversation's row, whose latest version the locking write sees.
--
-- Rows written before this migration (or by an older process still running)
-- are not counted here: writers take the greater of this and the
-- transcript's MAX(seq) + 1, so no backfill is needed.
ALTER TABLE conversations ADD COLUMN next_transcript_seq BIGINT NOT NULL DEFAULT 1;
