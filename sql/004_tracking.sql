-- 004_tracking: tracked links, clicks, page views and per-friend engagement.
--
-- A click on /c/{token} and a page-view beacon are buffered in musubid and
-- written in batches; each batch also bumps friend_engagement in the same
-- statement, so the rollup never disagrees with the raw rows.

-- Keys shared by every musubid process (the tracking token HMAC key).
CREATE TABLE instance_keys (
	name		text PRIMARY KEY,
	key		bytea NOT NULL CHECK (length(key) = 32),
	created_at	timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE links (
	channel_id	bigint NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
	id		bigint GENERATED ALWAYS AS IDENTITY,
	name		text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
	destination	text NOT NULL CHECK (destination ~ '^https?://'
			AND length(destination) <= 2000),
	utm_campaign	text,
	-- set when a campaign rewrote one of its URLs into this link
	campaign_id	bigint,
	created_at	timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (channel_id, id)
);

CREATE TABLE clicks (
	channel_id	bigint NOT NULL,
	id		bigint GENERATED ALWAYS AS IDENTITY,
	link_id		bigint NOT NULL,
	friend_id	bigint,
	run_id		bigint,
	clicked_at	timestamptz NOT NULL,
	user_agent	text,
	ip_hash		text,
	PRIMARY KEY (channel_id, id),
	FOREIGN KEY (channel_id, link_id) REFERENCES links (channel_id, id)
		ON DELETE CASCADE
);
CREATE INDEX clicks_friend ON clicks (channel_id, friend_id, clicked_at)
	WHERE friend_id IS NOT NULL;
CREATE INDEX clicks_link ON clicks (channel_id, link_id, clicked_at);
CREATE INDEX clicks_run ON clicks (channel_id, run_id)
	WHERE run_id IS NOT NULL;

CREATE TABLE page_views (
	channel_id	bigint NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
	id		bigint GENERATED ALWAYS AS IDENTITY,
	friend_id	bigint,
	link_id		bigint,
	run_id		bigint,
	url		text NOT NULL,
	referrer	text,
	viewed_at	timestamptz NOT NULL,
	PRIMARY KEY (channel_id, id)
);
CREATE INDEX page_views_friend ON page_views (channel_id, friend_id,
	viewed_at) WHERE friend_id IS NOT NULL;

CREATE TABLE friend_engagement (
	channel_id	bigint NOT NULL,
	friend_id	bigint NOT NULL,
	clicks		integer NOT NULL DEFAULT 0,
	first_click_at	timestamptz,
	last_click_at	timestamptz,
	page_views	integer NOT NULL DEFAULT 0,
	last_view_at	timestamptz,
	PRIMARY KEY (channel_id, friend_id),
	FOREIGN KEY (channel_id, friend_id) REFERENCES friends (channel_id, id)
		ON DELETE CASCADE
);

-- Record a batch of clicks ($1: JSON array of {c,l,f,r,t,ua,ip}) and
-- roll them up.  Rows naming a link or friend that no longer exists are
-- dropped rather than failing the whole batch.
CREATE FUNCTION musubi_record_clicks(batch jsonb) RETURNS integer
LANGUAGE sql AS $$
	WITH rows AS (
		SELECT r.c, r.l, r.f, r.r, to_timestamp(r.t / 1000.0) AS t,
		    r.ua, r.ip
		FROM jsonb_to_recordset(batch) AS r(c bigint, l bigint,
		    f bigint, r bigint, t bigint, ua text, ip text)
		JOIN links k ON k.channel_id = r.c AND k.id = r.l
	), ins AS (
		INSERT INTO clicks (channel_id, link_id, friend_id, run_id,
		    clicked_at, user_agent, ip_hash)
		SELECT r.c, r.l, f.id, nullif(r.r, 0), r.t, r.ua, r.ip
		FROM rows r
		LEFT JOIN friends f ON f.channel_id = r.c AND f.id = r.f
		RETURNING channel_id, friend_id, clicked_at
	), up AS (
		INSERT INTO friend_engagement AS e (channel_id, friend_id,
		    clicks, first_click_at, last_click_at)
		SELECT channel_id, friend_id, count(*), min(clicked_at),
		    max(clicked_at)
		FROM ins WHERE friend_id IS NOT NULL
		GROUP BY channel_id, friend_id
		-- one lock order for every process: no deadlocks between them
		ORDER BY channel_id, friend_id
		ON CONFLICT (channel_id, friend_id) DO UPDATE SET
		    clicks = e.clicks + excluded.clicks,
		    first_click_at = least(e.first_click_at,
			excluded.first_click_at),
		    last_click_at = greatest(e.last_click_at,
			excluded.last_click_at)
		RETURNING 1
	)
	SELECT count(*)::integer FROM ins;
$$;

-- Record a batch of page views ($1: JSON array of {c,f,l,r,u,ref,t}).
CREATE FUNCTION musubi_record_page_views(batch jsonb) RETURNS integer
LANGUAGE sql AS $$
	WITH ins AS (
		INSERT INTO page_views (channel_id, friend_id, link_id, run_id,
		    url, referrer, viewed_at)
		SELECT r.c, f.id, nullif(r.l, 0), nullif(r.r, 0), r.u, r.ref,
		    to_timestamp(r.t / 1000.0)
		FROM jsonb_to_recordset(batch) AS r(c bigint, f bigint,
		    l bigint, r bigint, u text, ref text, t bigint)
		JOIN channels ch ON ch.id = r.c
		LEFT JOIN friends f ON f.channel_id = r.c AND f.id = r.f
		RETURNING channel_id, friend_id, viewed_at
	), up AS (
		INSERT INTO friend_engagement AS e (channel_id, friend_id,
		    page_views, last_view_at)
		SELECT channel_id, friend_id, count(*), max(viewed_at)
		FROM ins WHERE friend_id IS NOT NULL
		GROUP BY channel_id, friend_id
		ORDER BY channel_id, friend_id
		ON CONFLICT (channel_id, friend_id) DO UPDATE SET
		    page_views = e.page_views + excluded.page_views,
		    last_view_at = greatest(e.last_view_at,
			excluded.last_view_at)
		RETURNING 1
	)
	SELECT count(*)::integer FROM ins;
$$;
