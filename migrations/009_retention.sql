-- Retention: the background cleaner (outbox.Cleaner) finds what has expired through these
-- indexes, a batch at a time, without scanning the tables.
--
-- An idempotency key expires IDEMPOTENCY_TTL after its order was placed. key_created_at is
-- created_at for rows that still hold a key and NULL for the others, so its index holds
-- exactly the keys not yet expired or cleared: the cleaner's range never grows with history.
-- It is VIRTUAL (computed, not stored), so placing an order writes one small index entry more.
ALTER TABLE order_ids
  ADD COLUMN key_created_at DATETIME(6) AS (IF(idempotency_key IS NULL, NULL, created_at)) VIRTUAL,
  ADD KEY ix_order_ids_key_created_at (key_created_at);

-- Dead letters and re-drive records are removed DEAD_LETTER_RETENTION after they were made.
ALTER TABLE dead_letters ADD KEY ix_dead_letters_dead_at (dead_at);

ALTER TABLE order_redrives ADD KEY ix_order_redrives_at (redriven_at);
