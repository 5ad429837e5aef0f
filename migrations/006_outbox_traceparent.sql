-- The W3C trace context of the event, sent with the message as its traceparent attribute so
-- that the stage's span joins the order's trace.
ALTER TABLE outbox ADD COLUMN traceparent VARCHAR(64) NOT NULL DEFAULT '';
