-- Cheap operator reads at any size (projections/orders/listing.go).
--
-- status_order is the order's status as a number (projections.statusCodes) times 2^32, plus
-- its id: one status's orders are one range of its index, in order_id order. A page of one
-- status, newest first from any point (keyset pagination), is then a backward range read of
-- exactly the rows it returns, and a status's count a range count. With the plain
-- order_status index the optimizer reads the whole status from its newest order down to the
-- page (seconds at a million orders). It replaces that index: one index per order, as before.
ALTER TABLE orders
  ADD COLUMN status_order BIGINT AS ((CASE order_status WHEN 'pending' THEN 1 WHEN 'completed' THEN 2
    WHEN 'payment_failed' THEN 3 WHEN 'cancelled' THEN 4 ELSE 0 END) * 4294967296 + order_id) VIRTUAL,
  ADD KEY ix_orders_status_order (status_order),
  DROP KEY ix_orders_status;

-- The sweeper looks for unfinished orders (email_sent = 0: every pending order, and those
-- whose confirmation is still to be sent) that stopped moving; without an index it read the
-- whole table every few seconds. The entry changes once per order, when its email is sent.
ALTER TABLE orders ADD KEY ix_orders_email_sent (email_sent);
