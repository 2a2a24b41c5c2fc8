-- The highest inbox seq a save has applied to the state. `acquire` reads the
-- inbox with its statement's snapshot, which can still show entries that a
-- save committed away while the lease waited for the row lock; the row's
-- latest version, which the lease upsert sees, says which of them are
-- applied already. Existing rows start at 0: entries still in their inbox
-- are the unapplied ones.
ALTER TABLE conversations ADD COLUMN applied_inbox_seq BIGINT NOT NULL DEFAULT 0;
