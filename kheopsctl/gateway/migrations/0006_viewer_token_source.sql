-- Viewer tokens from the RFC 8693 token exchange (POST /api/token) may be bound to a source: an album or the
-- inbox. Such a token is stored with scope_type 'album' and album_id = that source, so the ordinary album-token
-- narrowing (permissions.rights) keeps it to the series of its study that sit in that source. It stays
-- read-only either way.
ALTER TABLE capabilities DROP CONSTRAINT capabilities_study_scope;
ALTER TABLE capabilities ADD CONSTRAINT capabilities_study_scope
    CHECK (study_uid IS NULL OR (NOT write_permission AND NOT appropriate_permission));
