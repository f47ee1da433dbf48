-- Identity state shared by every issuer instance. Only two column types (BIGINT, TEXT) so the
-- same schema serves SQLite and PostgreSQL. Times are unix seconds unless a name says `_ms`.
-- Opaque values (codes, refresh tokens, session and pending ids) are stored as their SHA-256
-- (hex), never as themselves.

CREATE TABLE meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE codes (
    digest TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    -- Set once redeemed (single use is this column's compare-and-set).
    redeemed_family TEXT,
    -- A redeemed code is kept while its family may hold a live token, so a late replay still
    -- revokes them.
    keep_until BIGINT NOT NULL
);
CREATE INDEX codes_keep_until ON codes (keep_until);

-- One authorization grant: its refresh tokens and the access tokens it issued.
CREATE TABLE families (
    family TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    revoked BIGINT NOT NULL DEFAULT 0,
    expires_at BIGINT NOT NULL
);
CREATE INDEX families_username ON families (username);
CREATE INDEX families_expires_at ON families (expires_at);

CREATE TABLE refresh_tokens (
    digest TEXT PRIMARY KEY,
    family TEXT NOT NULL,
    body TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    used BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family);
CREATE INDEX refresh_tokens_expires_at ON refresh_tokens (expires_at);

CREATE TABLE family_access (
    jti TEXT PRIMARY KEY,
    family TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX family_access_family ON family_access (family);
CREATE INDEX family_access_expires_at ON family_access (expires_at);

CREATE TABLE sessions (
    digest TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    auth_time BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_username ON sessions (username);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

CREATE TABLE pending (
    digest TEXT PRIMARY KEY,
    -- SHA-256 of the login-binding cookie of the browser that started the request.
    browser TEXT NOT NULL,
    body TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX pending_expires_at ON pending (expires_at);

-- The revocation feed. `seq` is taken from feed_head in the writing transaction, whose row
-- lock orders writers: a reader polling `seq > cursor` never skips a row committed later.
CREATE TABLE feed_head (
    id BIGINT PRIMARY KEY,
    seq BIGINT NOT NULL
);
INSERT INTO feed_head (id, seq) VALUES (1, 0);

CREATE TABLE revocations (
    seq BIGINT PRIMARY KEY,
    -- 'jti': `subject` is a token id. 'subject': every token of `sub` = `subject` issued at or
    -- before `issued_before`.
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    issued_before BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX revocations_subject ON revocations (kind, subject);
CREATE INDEX revocations_expires_at ON revocations (expires_at);

CREATE TABLE disabled_users (
    username TEXT PRIMARY KEY,
    since BIGINT NOT NULL
);

-- Account locks (usernames and client ids, as SHA-256 prefixes).
CREATE TABLE lockout (
    account TEXT PRIMARY KEY,
    failures BIGINT NOT NULL,
    locks BIGINT NOT NULL,
    locked_until_ms BIGINT NOT NULL,
    last_seen BIGINT NOT NULL
);

-- Signing keys; the private half sealed with the key-encryption key (AES-256-GCM).
CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY,
    alg TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    signs_from BIGINT,
    retired_at BIGINT,
    sealed_key TEXT NOT NULL
);
