-- request_id of POST /v1/mail/send and /v1/mail/send_mime: a retry with the same request_id from
-- the same API_USER within the retention answers the stored first answer instead of sending again.
-- response is NULL while the first request is being processed (a claim).
CREATE TABLE send_requests (
    api_user    TEXT    NOT NULL,
    request_id  TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    response    TEXT,
    PRIMARY KEY (api_user, request_id)
);
CREATE INDEX send_requests_created ON send_requests (created_at);
