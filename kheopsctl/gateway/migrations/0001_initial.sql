-- The gateway's state: users, albums (inboxes are albums), the study/series index, access through
-- album_series, capability tokens (hashes only) and the per-album event log (the audit trail).

CREATE TABLE users (
    id          bigserial PRIMARY KEY,
    sub         text NOT NULL UNIQUE,
    email       text,
    name        text,
    inbox_id    text NOT NULL,               -- albums.id of the user's inbox (albums.is_inbox)
    created_time timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_idx ON users (lower(email)) WHERE email IS NOT NULL;

CREATE TABLE albums (
    id              text PRIMARY KEY,        -- short random id (secrets.token_urlsafe)
    name            text NOT NULL CHECK (length(name) <= 255),
    description     text NOT NULL DEFAULT '' CHECK (length(description) <= 2048),
    is_inbox        boolean NOT NULL DEFAULT false,
    add_user        boolean NOT NULL DEFAULT false,
    download_series boolean NOT NULL DEFAULT true,
    send_series     boolean NOT NULL DEFAULT true,
    delete_series   boolean NOT NULL DEFAULT false,
    add_series      boolean NOT NULL DEFAULT true,
    write_comments  boolean NOT NULL DEFAULT true,
    created_time    timestamptz NOT NULL DEFAULT now(),
    last_event_time timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE users ADD CONSTRAINT users_inbox_fk FOREIGN KEY (inbox_id) REFERENCES albums (id) DEFERRABLE INITIALLY DEFERRED;

CREATE TABLE album_users (
    album_id   text   NOT NULL REFERENCES albums (id) ON DELETE CASCADE,
    user_id    bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    is_admin   boolean NOT NULL DEFAULT false,
    favorite   boolean NOT NULL DEFAULT false,
    notify_new_series   boolean NOT NULL DEFAULT true,
    notify_new_comments boolean NOT NULL DEFAULT true,
    joined_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (album_id, user_id)
);
CREATE INDEX album_users_user_idx ON album_users (user_id);

-- The index: what the gateway knows of the PACS content. QIDO at study level is answered from here.
CREATE TABLE studies (
    study_uid                text PRIMARY KEY,
    study_date               text,            -- DICOM DA, YYYYMMDD
    study_time               text,            -- DICOM TM
    study_description        text,
    accession_number         text,
    referring_physician_name text,
    patient_name             text,
    patient_id               text,
    patient_birth_date       text,
    patient_sex              text,
    study_id                 text,
    updated_time             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX studies_date_idx ON studies (study_date);
CREATE INDEX studies_patient_id_idx ON studies (patient_id);

CREATE TABLE series (
    series_uid          text PRIMARY KEY,
    study_uid           text NOT NULL REFERENCES studies (study_uid) ON DELETE CASCADE,
    modality            text,
    series_description  text,
    series_number       integer,
    body_part_examined  text,
    number_of_instances integer NOT NULL DEFAULT 0,
    -- false while a STOW is storing it and attributes were not read back from the PACS yet
    populated           boolean NOT NULL DEFAULT false,
    updated_time        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX series_study_idx ON series (study_uid);

-- Access is per series, through album membership (the inbox included).
CREATE TABLE album_series (
    album_id   text NOT NULL REFERENCES albums (id) ON DELETE CASCADE,
    series_uid text NOT NULL REFERENCES series (series_uid) ON DELETE CASCADE,
    added_time timestamptz NOT NULL DEFAULT now(),
    favorite   boolean NOT NULL DEFAULT false,
    PRIMARY KEY (album_id, series_uid)
);
CREATE INDEX album_series_series_idx ON album_series (series_uid);

CREATE TABLE capabilities (
    id              text PRIMARY KEY,        -- public id, shown in lists
    secret_hash     bytea NOT NULL UNIQUE,   -- sha256 of the secret; the secret itself is never stored
    title           text NOT NULL CHECK (length(title) <= 255),
    scope_type      text NOT NULL CHECK (scope_type IN ('user', 'album')),
    album_id        text REFERENCES albums (id) ON DELETE CASCADE,
    user_id         bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,  -- creator / owner
    created_time    timestamptz NOT NULL DEFAULT now(),
    expiration_time timestamptz NOT NULL,
    not_before_time timestamptz NOT NULL DEFAULT now(),
    revoked_time    timestamptz,
    revoked_by      bigint REFERENCES users (id) ON DELETE SET NULL,
    read_permission        boolean NOT NULL DEFAULT false,
    write_permission       boolean NOT NULL DEFAULT false,
    appropriate_permission boolean NOT NULL DEFAULT false,
    download_permission    boolean NOT NULL DEFAULT false,
    CHECK ((scope_type = 'album') = (album_id IS NOT NULL))
);
CREATE INDEX capabilities_user_idx ON capabilities (user_id);

-- Comments and mutations per album: the audit trail.
CREATE TABLE events (
    id             bigserial PRIMARY KEY,
    album_id       text REFERENCES albums (id) ON DELETE CASCADE,
    user_id        bigint REFERENCES users (id) ON DELETE SET NULL,   -- who did it
    actor_sub      text,                    -- act.sub of an impersonating admin, when present
    capability_id  text,                    -- token used, when a capability token did it
    event_type     text NOT NULL CHECK (event_type IN ('comment', 'mutation')),
    mutation_type  text,                    -- ADD_USER, IMPORT_SERIES, ... (mutations only)
    comment        text CHECK (length(comment) <= 1024),
    study_uid      text,
    series_uid     text,
    target_user_id bigint REFERENCES users (id) ON DELETE SET NULL,
    time           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_album_idx ON events (album_id, time DESC);
