-- Messages a stage dead-lettered, with the reason, so that GET /orders/{id} can say what is
-- stuck and why, and the sweeper leaves such orders to a person (`orderd dlq redrive`)
-- instead of re-driving them forever. The SQS dead-letter queues hold the messages themselves.
CREATE TABLE IF NOT EXISTS dead_letters (
  id         BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
  order_id   INT          NULL,
  version    INT          NULL,
  queue      VARCHAR(80)  NOT NULL,
  event_id   VARCHAR(40)  NOT NULL,
  event_type VARCHAR(64)  NOT NULL,
  reason     TEXT         NOT NULL,
  dead_at    DATETIME(6)  NOT NULL,
  KEY ix_dead_letters_order (order_id, version)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
