-- 001_init: tenancy and access.  A channel is one LINE Official Account;
-- every later table carries channel_id so the schema can be distributed by
-- it (Citus) without rewriting queries.

CREATE TABLE channels (
	id		bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	slug		text NOT NULL UNIQUE
			CHECK (slug ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
	name		text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
	channel_secret	text NOT NULL,
	access_token	text NOT NULL DEFAULT '',
	bot_user_id	text,
	timezone	text NOT NULL DEFAULT 'Asia/Tokyo',
	created_at	timestamptz NOT NULL DEFAULT now(),
	updated_at	timestamptz NOT NULL DEFAULT now()
);

-- API keys are stored as SHA-256 of the key; the key itself is shown once.
-- scope 'admin' reaches everything; scope 'channel' reaches one channel.
CREATE TABLE api_keys (
	id		bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	name		text NOT NULL,
	prefix		text NOT NULL,
	key_hash	bytea NOT NULL UNIQUE,
	scope		text NOT NULL CHECK (scope IN ('admin', 'channel')),
	channel_id	bigint REFERENCES channels (id) ON DELETE CASCADE,
	created_at	timestamptz NOT NULL DEFAULT now(),
	revoked_at	timestamptz,
	CHECK ((scope = 'admin') = (channel_id IS NULL))
);
CREATE INDEX api_keys_channel ON api_keys (channel_id);
