-- Per-API_USER overrides of the account's recipient-facing settings (README "Unsubscribe links,
-- open and click tracking"). NULL = inherit the account's value; 1 = on, 0 = off. One row per
-- API_USER that overrides something (API users are revoked, never deleted).
CREATE TABLE api_user_settings (
    api_user          TEXT    PRIMARY KEY REFERENCES api_users (name),
    list_unsubscribe  INTEGER,
    track_opens       INTEGER,
    track_clicks      INTEGER,
    updated_at        BIGINT  NOT NULL
);
