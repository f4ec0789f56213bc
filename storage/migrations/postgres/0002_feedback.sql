-- Feedback matching and de-duplication: the Message-ID of submitted messages (bounces whose return
-- path was rewritten are matched by it) and the keys of feedback already applied.
ALTER TABLE messages ADD COLUMN message_id TEXT;
CREATE INDEX messages_message_id ON messages (message_id);

CREATE TABLE feedback_seen (
    key      TEXT   PRIMARY KEY,
    seen_at  BIGINT NOT NULL
);
