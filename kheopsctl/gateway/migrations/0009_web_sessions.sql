-- The web application's server-side sessions (kheopsctl/gateway/web). The browser holds only a random cookie;
-- this row holds its SHA-256 (a database dump yields no usable cookie) and the user's OIDC tokens sealed with
-- AES-GCM under a key derived from the web client's secret (a dump yields no usable token either).
CREATE TABLE web_sessions (
    id_hash bytea PRIMARY KEY,
    user_sub text NOT NULL,
    -- the synchronizer token every unsafe request of this session must echo in X-CSRF-Token
    csrf text NOT NULL,
    tokens bytea NOT NULL,
    access_expires timestamptz NOT NULL,
    -- when the refresh token (and so the session) ends; expired rows are deleted on the next login
    expires timestamptz NOT NULL,
    created timestamptz NOT NULL DEFAULT now(),
    refreshed timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX web_sessions_expires_idx ON web_sessions (expires);
CREATE INDEX web_sessions_user_idx ON web_sessions (user_sub);
