-- Recipient-facing features (README "Unsubscribe links, open and click tracking").
-- One row per account that changed a default (list-unsubscribe on, tracking off); 1 = on.
CREATE TABLE account_settings (
    account_id        BIGINT  PRIMARY KEY REFERENCES accounts (id),
    list_unsubscribe  INTEGER NOT NULL DEFAULT 1,
    track_opens       INTEGER NOT NULL DEFAULT 0,
    track_clicks      INTEGER NOT NULL DEFAULT 0,
    updated_at        BIGINT  NOT NULL
);
-- An unsubscribe, open or click on a recipient's send log ('feedback' line): JSON
-- {"type", "ip", "user_agent", "link", "reason_type", "machine"}; NULL on every other line.
ALTER TABLE send_log ADD COLUMN event TEXT;
