-- A tab's requests can reach the database out of order: a heartbeat sent just before the tab
-- closed may be written after its leave (batches run concurrently, instances too) and would
-- bring the closed tab back until its TTL. Panels number every heartbeat and leave of a tab
-- (seq, from 1); a write older than the row's seq changes nothing. A leave keeps the row as a
-- tombstone (gone) until it is swept, so a late heartbeat finds it; a tab back from the
-- browser's back/forward cache sends a newer seq and is listed again. seq 0: a client that
-- does not number its requests (panel loads; instances from before this file), written as
-- before.
ALTER TABLE viewers ADD COLUMN seq bigint NOT NULL DEFAULT 0, ADD COLUMN gone boolean NOT NULL DEFAULT false;
