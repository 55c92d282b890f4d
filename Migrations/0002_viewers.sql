-- Who is looking at which issue now: one row per tab, rewritten by every heartbeat (every
-- few seconds per open issue page) and deleted when it expires. This is soft state:
--   UNLOGGED: no WAL for a write-heavy table whose content is seconds old anyway. After a
--     crash PostgreSQL empties it, and every open panel puts itself back within one poll.
--     (Unlogged tables are not replicated: a standby starts empty, which is the same story.)
--   fillfactor 50: leaves room in each page so a heartbeat's UPDATE of last_seen stays a HOT
--     update on the same page, with no index write.
--   No index on last_seen: an index on it would end HOT updates, costing one index write per
--     heartbeat to speed up a sweep that runs every few seconds over a table holding only live
--     viewers. Listing uses the primary key's (client_key, issue_id) prefix.
--   Aggressive autovacuum: dead tuples come from every sweep.
-- issue_id is the key: an issue's key changes when it moves project; issue_key is for display.
CREATE UNLOGGED TABLE viewers (
    client_key text NOT NULL,
    issue_id text NOT NULL,
    issue_key text NOT NULL,
    account_id text NOT NULL,
    tab_id text NOT NULL,
    first_seen timestamptz NOT NULL,
    last_seen timestamptz NOT NULL,
    PRIMARY KEY (client_key, issue_id, account_id, tab_id)
) WITH (fillfactor = 50, autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_cost_delay = 0);
