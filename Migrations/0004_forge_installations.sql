-- Forge installations are tenants too: one table and one uninstall/erase path for both front
-- doors, and the viewers and user_details rows of either kind key on tenants.client_key.
--   kind 'connect': client_key is Connect's clientKey; a shared secret while installed.
--   kind 'forge': client_key is the Forge installationId (an ARI, "ari:cloud:ecosystem::
--     installation/<uuid>", so it cannot collide with a Connect clientKey); no secret: every
--     call carries a Forge Invocation Token, and Jira is called with the system token the
--     call brings (kept in memory only, never here). base_url is the installation's
--     apiBaseUrl (where REST calls go); site_url the site people browse, once a UI call
--     has told us; cloud_id maps a reinstall (new installationId) to the same site.
ALTER TABLE tenants ADD COLUMN kind text NOT NULL DEFAULT 'connect' CHECK (kind IN ('connect', 'forge'));
ALTER TABLE tenants ADD COLUMN cloud_id text;
ALTER TABLE tenants ADD COLUMN site_url text;
ALTER TABLE tenants DROP CONSTRAINT tenants_check;
ALTER TABLE tenants ADD CONSTRAINT tenants_installed_connect_has_secret
    CHECK (state = 'uninstalled' OR kind = 'forge' OR (shared_secret_sealed IS NOT NULL AND secret_key_id IS NOT NULL));
CREATE INDEX tenants_forge_cloud_id ON tenants (cloud_id) WHERE kind = 'forge';
