-- Album webhooks: an HMAC-signed POST to the album's configured URLs on new_series, new_user, remove_series and
-- delete_album. Deliveries are written in the same transaction as the change they report (an outbox), then sent
-- by every gateway replica's deliverer (FOR UPDATE SKIP LOCKED), with retries.

CREATE TABLE webhooks (
    id           text PRIMARY KEY,
    album_id     text NOT NULL REFERENCES albums (id) ON DELETE CASCADE,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 255),
    url          text NOT NULL CHECK (length(url) <= 2048),
    secret       text NOT NULL,             -- the HMAC key the admin chose: needed to sign, never returned
    events       text[] NOT NULL,
    enabled      boolean NOT NULL DEFAULT true,
    created_by   bigint REFERENCES users (id) ON DELETE SET NULL,
    created_time timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhooks_album_idx ON webhooks (album_id);

CREATE TABLE webhook_deliveries (
    id                bigserial PRIMARY KEY,
    webhook_id        text REFERENCES webhooks (id) ON DELETE SET NULL,
    album_id          text NOT NULL,        -- no foreign key: delete_album is delivered after the album is gone
    url               text NOT NULL,
    secret            text NOT NULL,
    event             text NOT NULL,
    payload           jsonb NOT NULL,
    attempts          integer NOT NULL DEFAULT 0,
    next_attempt_time timestamptz NOT NULL DEFAULT now(),
    status            text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    last_status       integer,
    last_error        text,
    created_time      timestamptz NOT NULL DEFAULT now(),
    done_time         timestamptz
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_time) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_hook_idx ON webhook_deliveries (webhook_id, id DESC);
