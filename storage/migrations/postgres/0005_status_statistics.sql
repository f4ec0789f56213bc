-- Filters the status search needs without scanning the whole window:
-- * sub_status and label are NULL for most records (every delivered or sending one, every mail
--   without a label), so partial indexes over the others stay small; with the keyset order after
--   the filter column, a page and the capped count are range scans like the other filters.
-- * sub_status depends on status (every 406 is a 4): without these statistics the planner
--   multiplies their selectivities and underestimates "status = 4 AND sub_status = 406" a hundredfold.
CREATE INDEX recipients_sub_status ON recipients (account_id, sub_status, request_time, email_id, recipient)
    WHERE sub_status IS NOT NULL;
CREATE INDEX recipients_label ON recipients (account_id, label, request_time, email_id, recipient)
    WHERE label IS NOT NULL;
CREATE STATISTICS recipients_status_dependency (dependencies, mcv) ON status, sub_status FROM recipients;
