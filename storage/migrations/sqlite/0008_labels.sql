-- Labels of an account (EngageLab's /v1/labels): a numeric label_id for a name. Mail carries the
-- name (X-Label header), so deleting or renaming a label never rewrites status records.
CREATE TABLE labels (
    label_id    INTEGER PRIMARY KEY,
    account_id  INTEGER NOT NULL,
    name        TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    UNIQUE (account_id, name)
);
