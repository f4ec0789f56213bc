-- The review loop (README "Classification review"): replies and bounce diagnostics that no phrase
-- rule recognised (they fell to a fallback rule), grouped by their normalised text. Written in
-- batches by relay/rules/review.py (upserts: the count grows, last_seen moves), read by
-- `mailrelay rules unclassified` and GET /v1/rules/unclassified.
CREATE TABLE unclassified (
    source      TEXT    NOT NULL,  -- delivery | feedback
    text        TEXT    NOT NULL,  -- normalised: addresses, numbers and ids replaced (bounded)
    sample      TEXT    NOT NULL,  -- one reply as it was received (capped)
    rule        TEXT    NOT NULL,  -- the fallback rule that decided it last
    code        INTEGER,           -- reply code of the sample
    enhanced    TEXT,              -- enhanced status code of the sample
    count       INTEGER NOT NULL,
    first_seen  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL,
    PRIMARY KEY (source, text)
) WITHOUT ROWID;
CREATE INDEX unclassified_seen ON unclassified (last_seen);

-- A few example messages per text (capped by the insert: the first ones seen are kept).
CREATE TABLE unclassified_examples (
    source     TEXT NOT NULL,
    text       TEXT NOT NULL,
    email_id   TEXT NOT NULL,
    recipient  TEXT NOT NULL,
    PRIMARY KEY (source, text, email_id, recipient)
) WITHOUT ROWID;
