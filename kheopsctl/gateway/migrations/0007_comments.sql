-- Private comments, comments on studies and the series an event touched (KHEOPS's event shape).
--
-- A private comment is seen only by its author and its target. If the target account goes, the comment goes
-- with it (CASCADE): setting it NULL would turn a private comment public.
ALTER TABLE events ADD COLUMN private_target_id bigint REFERENCES users (id) ON DELETE CASCADE;

-- A study comment has no album: it is attached to the study and read by whoever sees the study.
CREATE INDEX events_study_comments_idx ON events (study_uid, time DESC) WHERE album_id IS NULL;

-- The series an IMPORT_STUDY / REMOVE_STUDY event moved (IMPORT_SERIES / REMOVE_SERIES keep events.series_uid).
CREATE TABLE event_series (
    event_id   bigint NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    series_uid text   NOT NULL,
    PRIMARY KEY (event_id, series_uid)
);
