-- The event log: one stream per order. `position` orders the whole log; (stream_id, version)
-- orders one stream and is UNIQUE, so two writers deciding on the same version cannot both
-- append: the loser gets a duplicate-key error, reloads and decides again.
CREATE TABLE IF NOT EXISTS events (
  position       BIGINT      NOT NULL AUTO_INCREMENT PRIMARY KEY,
  stream_id      INT         NOT NULL,
  version        INT         NOT NULL,
  event_type     VARCHAR(64) NOT NULL,
  schema_version SMALLINT    NOT NULL,
  payload        TEXT        NOT NULL,
  metadata       TEXT        NOT NULL,
  occurred_at    DATETIME(6) NOT NULL,
  UNIQUE KEY uq_events_stream_version (stream_id, version)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Order ids are allocated here, in the transaction that appends OrderPlaced, so they are
-- numeric like the seed's. The idempotency key makes a retried POST /orders a no-op.
CREATE TABLE IF NOT EXISTS order_ids (
  order_id        INT          NOT NULL AUTO_INCREMENT PRIMARY KEY,
  idempotency_key VARCHAR(255) NULL,
  request_hash    CHAR(64)     NULL,
  created_at      DATETIME(6)  NOT NULL,
  UNIQUE KEY uq_order_ids_key (idempotency_key)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- The transactional outbox: a row per event that some queue must receive, written in the
-- append's transaction and deleted by the relay once SQS has accepted the message. The relay
-- takes whatever rows are present rather than "positions after the last one it saw", so an
-- append that commits late with a lower position is never skipped.
CREATE TABLE IF NOT EXISTS outbox (
  position       BIGINT       NOT NULL PRIMARY KEY,
  queue          VARCHAR(80)  NOT NULL,
  event_id       VARCHAR(40)  NOT NULL,
  event_type     VARCHAR(64)  NOT NULL,
  correlation_id VARCHAR(100) NOT NULL,
  body           TEXT         NOT NULL,
  created_at     DATETIME(6)  NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- The log barrier: every append transaction reads this row in share mode before it inserts
-- an event, so appends run side by side; a reader that needs the log quiescent (a replay
-- taking its snapshot, or swapping tables) takes it exclusively. Once it holds the row no
-- append is between its first insert and its commit, so no lower position can still commit
-- after a higher one has been read.
CREATE TABLE IF NOT EXISTS event_log_barrier (
  id TINYINT NOT NULL PRIMARY KEY
) ENGINE=InnoDB;

INSERT IGNORE INTO event_log_barrier (id) VALUES (1);
