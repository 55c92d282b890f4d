-- What Jira told us about the people who look at issues: one row per tenant and account.
--   status 'found': display name and avatar to show, until expires_at (then shown while refetched);
--   status 'missing': Jira did not return the account (deleted, hidden); not asked again before expires_at;
--   status 'not_person': an app or other non-human account; never listed, no personal data kept.
-- fetched_at is when Jira gave us the data: the personal data report's updatedAt.
-- reported_at is when the account was last reported to Atlassian's personal data reporting API;
-- due again one cycle later, so a restart resumes without reporting twice in a cycle.
CREATE TABLE user_details (
    client_key text NOT NULL,
    account_id text NOT NULL,
    status text NOT NULL CHECK (status IN ('found', 'missing', 'not_person')),
    display_name text,
    avatar_url text,
    account_type text,
    active boolean,
    fetched_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    reported_at timestamptz,
    PRIMARY KEY (client_key, account_id)
);

-- The report job picks accounts whose report is due.
CREATE INDEX user_details_report_due ON user_details (client_key, reported_at) WHERE status = 'found';

-- Small durable settings the app learns at run time (e.g. the reporting API's Cycle-Period).
CREATE TABLE app_settings (
    name text PRIMARY KEY,
    value text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
