-- Whether the OIDC provider vouched for the user's email (the token's email_verified claim). An unverified
-- address is kept but never used to find, show or notify anyone: otherwise anyone able to claim an address at
-- the provider would receive what is shared "to" it. Rows from before this migration start unverified; the
-- owner's next request with a verified token marks them verified.
ALTER TABLE users ADD COLUMN email_verified boolean NOT NULL DEFAULT false;

-- Uniqueness matters only for the addresses lookups use: an unverified claim must not be able to squat on
-- (and so block) the real owner's verified address.
DROP INDEX users_email_idx;
CREATE UNIQUE INDEX users_verified_email_idx ON users (lower(email)) WHERE email IS NOT NULL AND email_verified;
