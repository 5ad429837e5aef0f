-- The log's change feed (package feed): a row per event that a consumer, named by its topic,
-- has yet to handle. Rows are written in the append's transaction and deleted in the
-- transaction that handles them, so the rows present are the work left: an append that
-- commits late with a lower position is handled when it commits, and a consumer, which locks
-- only the rows it took, never makes an append wait.
CREATE TABLE IF NOT EXISTS event_feed (
  topic          VARCHAR(64) NOT NULL,
  position       BIGINT      NOT NULL,
  stream_id      INT         NOT NULL,
  version        INT         NOT NULL,
  event_type     VARCHAR(64) NOT NULL,
  schema_version SMALLINT    NOT NULL,
  payload        TEXT        NOT NULL,
  metadata       TEXT        NOT NULL,
  occurred_at    DATETIME(6) NOT NULL,
  PRIMARY KEY (topic, position)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Orders and totals per customer (package projections/customers), kept from the feed's
-- "customers" topic. A customer is the name and email an order was placed with ('' for none);
-- version is the order's stream version the row was folded from.
CREATE TABLE IF NOT EXISTS customer_orders (
  order_id       INT          NOT NULL PRIMARY KEY,
  customer_name  VARCHAR(100) NOT NULL,
  customer_email VARCHAR(254) NOT NULL,
  order_status   VARCHAR(50)  NOT NULL,
  total_cents    BIGINT       NOT NULL,
  version        INT          NOT NULL,
  KEY ix_customer_orders_customer (customer_name, customer_email, order_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS customers (
  customer_name    VARCHAR(100) NOT NULL,
  customer_email   VARCHAR(254) NOT NULL,
  orders_placed    INT          NOT NULL,
  orders_completed INT          NOT NULL,
  completed_cents  BIGINT       NOT NULL,
  PRIMARY KEY (customer_name, customer_email),
  KEY ix_customers_completed_cents (completed_cents)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
