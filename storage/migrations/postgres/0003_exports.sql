-- Offline exports of status data: one row per task. The file itself lives on the node that ran
-- the task (<data dir>/exports/<id>.csv.gz); the row outlives the file (expired_at set when the
-- file is deleted after its retention period).
CREATE TABLE exports (
    id           TEXT    PRIMARY KEY,
    account_id   BIGINT  NOT NULL,
    kind         TEXT    NOT NULL,
    filter       TEXT    NOT NULL,
    status       TEXT    NOT NULL,
    created_at   BIGINT  NOT NULL,
    started_at   BIGINT,
    finished_at  BIGINT,
    rows_done    BIGINT  NOT NULL DEFAULT 0,
    rows_total   BIGINT,
    file_size    BIGINT,
    attempts     INTEGER NOT NULL DEFAULT 0,
    node         TEXT    NOT NULL DEFAULT '',
    error        TEXT    NOT NULL DEFAULT '',
    expired_at   BIGINT
);
CREATE INDEX exports_account ON exports (account_id, created_at DESC, id DESC);
CREATE INDEX exports_queue ON exports (status, created_at, id);
