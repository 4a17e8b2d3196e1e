-- Viewer tokens: short-lived, read-only capabilities bound to one study (a viewer launched on that study).
-- Stored like every capability (sha256 of the secret only), so they outlive a restart and work on every
-- replica, and can be revoked.
ALTER TABLE capabilities ADD COLUMN study_uid text;
ALTER TABLE capabilities ADD CONSTRAINT capabilities_study_scope
    CHECK (study_uid IS NULL OR (scope_type = 'user' AND NOT write_permission AND NOT appropriate_permission));
CREATE INDEX capabilities_viewer_expiry_idx ON capabilities (expiration_time) WHERE study_uid IS NOT NULL;
