-- The customers projection's row in projections: its version, and the lock its consumers
-- share and a rebuild's swap takes alone (projections.ShareConsumerLock). A database
-- with events already holds orders placed before the feed existed, which only a rebuild
-- brings into the projection: version 0 makes the first start of this release rebuild it.
INSERT IGNORE INTO projections (name, version)
SELECT 'customers', IF(EXISTS (SELECT 1 FROM events), 0, 1);
