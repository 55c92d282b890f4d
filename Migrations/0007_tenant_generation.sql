-- Each Connect install (a new shared secret, after an uninstall or not) starts a new
-- generation of the site. Viewer tickets carry the generation they were issued in, and every
-- statement that records or lists for a ticket checks it: a ticket of an earlier install
-- records and lists nothing, even though it still verifies (it is signed with our key, not the
-- site's secret). Forge installations have no tickets; a reinstall gets a new installationId.
ALTER TABLE tenants ADD COLUMN generation bigint NOT NULL DEFAULT 1;
