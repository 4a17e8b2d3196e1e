-- The instance-level index: every SOP Instance UID the gateway stored (or read back from the PACS for a series
-- it indexes), with the study and series the PACS filed it in. A SOP Instance UID names one instance in the
-- whole PACS: STOW refuses one already known in another series or study (see dicomweb/stow.py).
-- Existing series are backfilled lazily from the PACS (index.backfill_instances, once per series, the first
-- time a STOW touches the series); until then a STOW asks the PACS itself for the UIDs it does not find here.
CREATE TABLE instances (
    sop_uid       text PRIMARY KEY,
    series_uid    text NOT NULL REFERENCES series (series_uid) ON DELETE CASCADE,
    study_uid     text NOT NULL,
    sop_class_uid text,
    created_time  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX instances_series_idx ON instances (series_uid);

-- true once every instance the PACS holds for the series is in ``instances``
ALTER TABLE series ADD COLUMN instances_indexed boolean NOT NULL DEFAULT false;
