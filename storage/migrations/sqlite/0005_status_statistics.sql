-- Filters the status search needs without scanning the whole window: sub_status and label are
-- NULL for most records, so partial indexes over the others stay small. (PostgreSQL also gets
-- extended statistics on status/sub_status; SQLite's planner has no equivalent.)
CREATE INDEX recipients_sub_status ON recipients (account_id, sub_status, request_time, email_id, recipient)
    WHERE sub_status IS NOT NULL;
CREATE INDEX recipients_label ON recipients (account_id, label, request_time, email_id, recipient)
    WHERE label IS NOT NULL;
