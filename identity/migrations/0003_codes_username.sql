-- Whose code a row is, so "logout everywhere" and "disable" can spend the user's codes not yet
-- redeemed (state/feed.rs): `redeemed_family` = '' marks a code spent so, with no family. NULL in
-- rows written before this column existed: their redemption still checks the user's
-- revocations against the code's body (state/grants.rs), as every redemption does.
ALTER TABLE codes ADD COLUMN username TEXT;
CREATE INDEX codes_username ON codes (username);
