-- The orders projection, derived from the log and rebuilt by `orderd replay`. The first six
-- columns are the seed's, with their names and meanings, so the seed's SQL keeps working.
CREATE TABLE IF NOT EXISTS orders (
  order_id         INT          NOT NULL PRIMARY KEY,
  customer_name    VARCHAR(100) NULL,
  order_status     VARCHAR(50)  NULL,
  payment_status   VARCHAR(50)  NULL,
  inventory_status VARCHAR(50)  NULL,
  email_sent       BOOLEAN      DEFAULT FALSE,
  customer_email   VARCHAR(254) NULL,
  items            TEXT         NOT NULL,
  total_cents      BIGINT       NOT NULL,
  failure_reason   TEXT         NULL,
  version          INT          NOT NULL,
  last_position    BIGINT       NOT NULL,
  placed_at        DATETIME(6)  NOT NULL,
  updated_at       DATETIME(6)  NOT NULL,
  KEY ix_orders_status (order_status)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- One row per projection: its code version and when it was last rebuilt.
CREATE TABLE IF NOT EXISTS projections (
  name       VARCHAR(64) NOT NULL PRIMARY KEY,
  version    INT         NOT NULL,
  rebuilt_at DATETIME(6) NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

INSERT IGNORE INTO projections (name, version) VALUES ('orders', 1);
