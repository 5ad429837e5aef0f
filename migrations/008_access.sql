-- Order capabilities: a customer reads their own order with the link the placement answer
-- carried (/orders/42?access=<token>). Only the SHA-256 of each token is stored, so the table
-- (or a backup of it) gives no working link.
--
-- The token issued when the order is created is stored in the order's own order_ids row,
-- written by the multi-row INSERT that allocates the group's ids: placing an order costs no
-- extra statement. Tokens issued later (an idempotent replay gets a fresh one, as the first
-- exists only as its hash) go to order_access. Both are read by primary key.
CREATE TABLE IF NOT EXISTS order_access (
  token_hash BINARY(32)  NOT NULL PRIMARY KEY,
  order_id   INT         NOT NULL,
  created_at DATETIME(6) NOT NULL
) ENGINE=InnoDB;

-- Last: the one statement that cannot run twice (MySQL 8 has no ADD COLUMN IF NOT EXISTS).
-- Adding a nullable column at the end is instant on MySQL 8 and MariaDB 10.11; orders placed
-- before it have no capability, and only operators read them.
ALTER TABLE order_ids ADD COLUMN access_hash BINARY(32) NULL;
