-- When the sweeper last re-drove an order. Kept out of the orders projection, which must
-- stay a pure function of the event log.
CREATE TABLE IF NOT EXISTS order_redrives (
  order_id    INT         NOT NULL PRIMARY KEY,
  redriven_at DATETIME(6) NOT NULL,
  redrives    INT         NOT NULL DEFAULT 1
) ENGINE=InnoDB;
