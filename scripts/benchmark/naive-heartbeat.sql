-- pgbench baseline: what one heartbeat needs done naively, two statements: record the viewer,
-- then list the issue's viewers. Same table and the same shape as the app's heartbeats: each
-- viewer always on one issue (VIEWERS / ISSUES people per issue), so after the first pass
-- every upsert rewrites an existing row, as heartbeats do.
\set viewer random(1, :viewers)
\set issue :viewer % :issues + 1
INSERT INTO viewers (client_key, issue_id, issue_key, account_id, tab_id, first_seen, last_seen)
VALUES ('pgbench', :issue, 'PGB-' || :issue, 'pgb-' || :viewer, 'tab', now(), now())
ON CONFLICT (client_key, issue_id, account_id, tab_id) DO UPDATE SET last_seen = EXCLUDED.last_seen;
SELECT account_id FROM viewers
WHERE client_key = 'pgbench' AND issue_id = :issue::text AND last_seen > now() - interval '45 seconds';
