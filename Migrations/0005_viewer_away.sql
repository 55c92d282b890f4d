-- A tab in the background (another tab in front, window minimised) is still open but away:
-- away_since is when it went away (NULL while visible). Away tabs heartbeat slowly and stay
-- listed, dimmed, up to AWAY_TTL_SECONDS after away_since. A nullable column without a
-- default: instances from before it still write visible tabs correctly during a rolling deploy.
ALTER TABLE viewers ADD COLUMN away_since timestamptz;

-- When a tab's row counts, in one place for every statement (simple SQL functions: the planner
-- inlines them). Kept: its heartbeats still arrive (visible tabs every poll, away tabs slowly);
-- rows no longer kept are swept. Shown: kept, and not away for longer than the away limit.
CREATE FUNCTION viewer_kept(last_seen timestamptz, away_since timestamptz, active_ttl float8, away_ttl float8)
RETURNS boolean LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT last_seen > now() - make_interval(secs => CASE WHEN away_since IS NULL THEN active_ttl ELSE away_ttl END)
$$;

CREATE FUNCTION viewer_shown(last_seen timestamptz, away_since timestamptz, active_ttl float8, away_ttl float8, away_limit float8)
RETURNS boolean LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT viewer_kept(last_seen, away_since, active_ttl, away_ttl)
       AND (away_since IS NULL OR away_since > now() - make_interval(secs => away_limit))
$$;
