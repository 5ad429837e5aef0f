-- Stock, reserved by the inventory stage in the same transaction that appends
-- InventoryReserved, so a reservation happens exactly once per order. The CHECK keeps
-- `available` from going negative whatever a bug might try.
CREATE TABLE IF NOT EXISTS stock (
  sku         VARCHAR(64)  NOT NULL PRIMARY KEY,
  name        VARCHAR(200) NOT NULL,
  price_cents BIGINT       NOT NULL,
  available   INT          NOT NULL,
  reserved    INT          NOT NULL DEFAULT 0,
  CONSTRAINT ck_stock_available CHECK (available >= 0),
  CONSTRAINT ck_stock_price CHECK (price_cents >= 0)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- A small demo catalogue so that a fresh install can take an order straight away.
INSERT IGNORE INTO stock (sku, name, price_cents, available) VALUES
  ('SKU-BOOK',   'Paperback book',   1299, 1000000),
  ('SKU-MUG',    'Coffee mug',        899, 1000000),
  ('SKU-TSHIRT', 'T-shirt',          1999, 1000000),
  ('SKU-POSTER', 'Limited poster',   4999, 10);
