-- KHEOPS-compatible webhooks and series QIDO.
--
-- Webhooks: the secret is optional, as in KHEOPS (a webhook without one is delivered unsigned); every attempt
-- of a delivery is kept (its HTTP status, -1 when no answer came, and its time) so an album admin sees each
-- trigger's attempts as the KHEOPS UI shows them. Attempts go with their delivery (30 days, see webhooks.py).
ALTER TABLE webhooks ALTER COLUMN secret DROP NOT NULL;
ALTER TABLE webhook_deliveries ALTER COLUMN secret DROP NOT NULL;

CREATE TABLE webhook_attempts (
    delivery_id bigint  NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt     integer NOT NULL CHECK (attempt >= 1),
    status      integer NOT NULL,           -- the receiver's HTTP status; -1: no answer (refused, timeout, ...)
    time        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (delivery_id, attempt)
);

-- Series QIDO is answered from the index, never from the PACS, so the index carries what the KHEOPS UI reads
-- there (SeriesDate, SeriesTime). Filled from STOW headers and from the PACS's answer read back after a STOW
-- (dicomweb/index.py); series indexed before this migration get them at their study's next STOW.
ALTER TABLE series ADD COLUMN series_date text, ADD COLUMN series_time text;
