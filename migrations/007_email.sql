-- Whether the mail server refused the order's notification for good (an EmailFailed event).
-- Such an order is finished without its email, so email_sent = 0 alone no longer means that
-- the email step is still due: the sweeper reads both. No row needs filling in: no release
-- before this one wrote EmailFailed.
ALTER TABLE orders ADD COLUMN email_failed BOOLEAN NOT NULL DEFAULT FALSE AFTER email_sent;
