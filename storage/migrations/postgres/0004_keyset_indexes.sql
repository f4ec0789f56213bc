-- Keyset paging for the status search and exports: every search index ends in the full sort key
-- (request_time, email_id, recipient), all ascending, so "newest first after this row" is one
-- backward range scan: ORDER BY ... DESC and the row comparison (request_time, email_id,
-- recipient) < (...) both run on the index instead of sorting the whole window.
DROP INDEX recipients_search;
DROP INDEX recipients_domain;
DROP INDEX recipients_status;
DROP INDEX recipients_time;
CREATE INDEX recipients_keyset ON recipients (account_id, request_time, email_id, recipient);
CREATE INDEX recipients_domain ON recipients (account_id, domain, request_time, email_id, recipient);
CREATE INDEX recipients_status ON recipients (account_id, status, request_time, email_id, recipient);
CREATE INDEX recipients_api_user ON recipients (account_id, api_user, request_time, email_id, recipient);
CREATE INDEX recipients_time ON recipients (request_time, email_id, recipient);
