-- Jira sites that installed the app (Connect "tenants"), keyed by the clientKey Jira gave.
-- The shared secret is stored sealed with AES-GCM under SECRET_ENCRYPTION_KEY (nonce ||
-- ciphertext || tag, the clientKey as associated data so a sealed secret cannot be moved to
-- another row); secret_key_id names the key that sealed it, for key rotation. Uninstall
-- keeps the row (state, dates) but drops the secret.
CREATE TABLE tenants (
    client_key text PRIMARY KEY CHECK (length(client_key) BETWEEN 1 AND 255),
    base_url text NOT NULL,
    display_url text,
    product_type text NOT NULL DEFAULT 'jira',
    description text,
    oauth_client_id text,
    installation_id text,
    shared_secret_sealed bytea,
    secret_key_id text,
    state text NOT NULL CHECK (state IN ('installed', 'uninstalled')),
    installed_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    uninstalled_at timestamptz,
    CHECK (state = 'uninstalled' OR (shared_secret_sealed IS NOT NULL AND secret_key_id IS NOT NULL))
);
