-- DKIM signing keys. The private key is kept in the database (not only in one node's data
-- directory) so that every node sharing the database signs with it. account_id NULL = the key
-- signs the mail of every account whose From domain matches; else only that account's mail.
CREATE TABLE dkim_keys (
    domain       TEXT    NOT NULL,
    selector     TEXT    NOT NULL,
    algorithm    TEXT    NOT NULL,
    private_key  TEXT    NOT NULL,
    public_key   TEXT    NOT NULL,
    account_id   BIGINT  REFERENCES accounts (id),
    created_at   BIGINT  NOT NULL,
    PRIMARY KEY (domain, selector)
);
