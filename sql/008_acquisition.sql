-- 008_acquisition: friend-acquisition sources (流入経路), their daily costs,
-- tracked add-friend URLs (touches), the attribution of every follow, and
-- the acquisition report.
--
-- A source has a URL /f/{code}.  Each visit is a touch; with a LINE Login
-- channel configured the visitor logs in (bot_prompt=aggressive) and the
-- touch learns the LINE userId.  Every follow event is copied from the
-- timeline (interactions) into acquisition_follows by a statement trigger,
-- inside musubi_line_apply()'s transaction, and matched there; a login
-- callback matches in its own transaction.  Both sides take the same
-- advisory lock per (channel, user) before they read, so whichever commits
-- second sees the other: callback-before-follow and follow-before-callback
-- give the same result.
--
-- Matching (exact): a touch can only explain one follow of its user: the
-- first one after the touch inside the source's attribution window, or,
-- when there is none, the last one less than a minute before the touch
-- (clock skew between LINE and us); a follow takes the latest of the
-- touches that point at it.  The rule is recomputed per user from the
-- stored rows, so arrival order never changes the outcome.
--
-- Estimation (in-app CPF ads): per channel-local day, the new-friend follows
-- left without a touch are shared among the in-app cpf_ad sources active
-- that day, in proportion to each source's LINE-reported adds (minus the
-- adds already matched exactly to it), by largest remainder; see
-- musubi_acq_estimate_day().  Estimated rows say so (estimated = true).
--
-- The friend's source: the earliest attributed follow ("keep", default) or
-- the latest one ("latest", acquisition_settings.refollow), mirrored on
-- friends.source_id / source_estimated / source_at / source_touch_id for
-- segments.
--
-- The report never joins orders: the follow that carries a friend's source
-- also carries its customer-link flag and order windows, kept current by
-- statement triggers on friend_stats (the EC rollup) and
-- friend_customer_links (identity), in their writers' transactions.
--
-- Triggers on other modules' tables (interactions, friend_stats,
-- friend_customer_links) catch every error but transient ones (which retry
-- the writer's transaction) and log a warning: acquisition never stops LINE
-- or order intake.  Every table carries channel_id; acquisition_sources is
-- looked up by its globally unique code (a reference table under Citus).

CREATE TABLE acquisition_settings (
	channel_id	bigint PRIMARY KEY REFERENCES channels (id)
			ON DELETE CASCADE,
	-- https://line.me/R/ti/p/@xxx or a lin.ee link: where /f/ sends
	-- visitors when LINE Login is not configured or was cancelled
	add_friend_url	text CHECK (add_friend_url ~ '^https?://'
			AND length(add_friend_url) <= 2000),
	-- the page shown after a successful login callback
	landing_url	text CHECK (landing_url ~ '^https?://'
			AND length(landing_url) <= 2000),
	-- spend and revenue in reports; costs must use it
	currency	text NOT NULL DEFAULT 'JPY' CHECK (currency ~ '^[A-Z]{3}$'),
	-- keep: a re-follow keeps the friend's first attributed source;
	-- latest: the latest attributed follow wins
	refollow	text NOT NULL DEFAULT 'keep'
			CHECK (refollow IN ('keep', 'latest')),
	updated_at	timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE acquisition_sources (
	channel_id	bigint NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
	id		bigint GENERATED ALWAYS AS IDENTITY,
	code		text NOT NULL UNIQUE
			CHECK (code ~ '^[a-z0-9][a-z0-9_-]{2,63}$'
			AND code <> 'callback'),
	name		text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
	kind		text NOT NULL CHECK (kind IN ('cpf_ad', 'web', 'qr',
			'store', 'influencer', 'other')),
	-- an ad inside LINE: its friends never pass through /f/
	in_app		boolean NOT NULL DEFAULT false,
	active_from	date NOT NULL,
	active_until	date,
	attribution_window_days integer NOT NULL DEFAULT 7
			CHECK (attribution_window_days BETWEEN 1 AND 90),
	-- overrides of the channel settings
	add_friend_url	text CHECK (add_friend_url ~ '^https?://'
			AND length(add_friend_url) <= 2000),
	landing_url	text CHECK (landing_url ~ '^https?://'
			AND length(landing_url) <= 2000),
	archived_at	timestamptz,
	created_at	timestamptz NOT NULL DEFAULT now(),
	updated_at	timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (channel_id, id),
	CHECK (NOT in_app OR kind = 'cpf_ad'),
	CHECK (active_until IS NULL OR active_until >= active_from)
);

CREATE TABLE acquisition_costs (
	channel_id	bigint NOT NULL,
	source_id	bigint NOT NULL,
	day		date NOT NULL,
	spend		numeric(19,4) NOT NULL CHECK (spend >= 0),
	currency	text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
	impressions	bigint CHECK (impressions >= 0),
	clicks		bigint CHECK (clicks >= 0),
	-- friends added according to LINE (OA Manager / LINE Ads)
	reported_adds	integer CHECK (reported_adds >= 0),
	origin		text NOT NULL DEFAULT 'api'
			CHECK (origin IN ('api', 'csv')),
	updated_at	timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (channel_id, source_id, day),
	FOREIGN KEY (channel_id, source_id) REFERENCES acquisition_sources
		(channel_id, id) ON DELETE CASCADE
);
CREATE INDEX acquisition_costs_day ON acquisition_costs (channel_id, day)
	WHERE reported_adds > 0;

-- One visit of /f/{code}.  login_state: none (no LINE Login configured:
-- sent to the add-friend URL, can never be matched), pending (sent to
-- LINE Login), exchanging (callback seen, talking to LINE), done (userId
-- known), failed, cancelled (the user declined the login).
CREATE TABLE acquisition_touches (
	channel_id	bigint NOT NULL,
	id		bigint GENERATED ALWAYS AS IDENTITY,
	source_id	bigint NOT NULL,
	created_at	timestamptz NOT NULL DEFAULT now(),
	user_agent	text,
	referrer	text,
	utm_source	text,
	utm_medium	text,
	utm_campaign	text,
	utm_content	text,
	utm_term	text,
	-- keyed hash of the client address, not reversible
	ip_hash		text,
	login_state	text NOT NULL CHECK (login_state IN ('none', 'pending',
			'exchanging', 'done', 'failed', 'cancelled')),
	-- SHA-256 of the OAuth state; the state itself is never stored
	state_hash	bytea UNIQUE,
	login_error	text,
	logged_in_at	timestamptz,
	user_id		text CHECK (user_id ~ '^U[0-9a-f]{32}$'),
	friendship_status_changed boolean,
	friend_id	bigint,
	-- the follow (interactions.event_id) this touch explains
	follow_event_id	text,
	matched_at	timestamptz,
	PRIMARY KEY (channel_id, id),
	FOREIGN KEY (channel_id, source_id) REFERENCES acquisition_sources
		(channel_id, id) ON DELETE CASCADE
);
CREATE INDEX acquisition_touches_user ON acquisition_touches (channel_id,
	user_id) WHERE user_id IS NOT NULL;
CREATE INDEX acquisition_touches_source ON acquisition_touches (channel_id,
	source_id, created_at);

-- Every follow event, and what brought it.  role: 'source' marks the
-- follow that gives the friend its source; 'organic' the first follow of
-- a friend that has no source.  Reports count friends by these rows.
CREATE TABLE acquisition_follows (
	-- (fixed-width columns first: the report reads every row)
	channel_id	bigint NOT NULL,
	friend_id	bigint NOT NULL,
	followed_at	timestamptz NOT NULL,
	-- the first unfollow after this follow (and before the next one)
	blocked_at	timestamptz,
	matched_at	timestamptz,
	source_id	bigint,
	touch_id	bigint,
	-- followed_at as a date in the channel's time zone
	day		date NOT NULL,
	-- On role rows: the friend's counted orders (see
	-- musubi_acq_orders_refresh) placed in [followed_at, followed_at + N
	-- days); orders count when their net is above zero.
	orders_all	integer NOT NULL DEFAULT 0,
	orders_30d	integer NOT NULL DEFAULT 0,
	orders_60d	integer NOT NULL DEFAULT 0,
	orders_90d	integer NOT NULL DEFAULT 0,
	-- follow.isUnblocked as LINE sent it
	unblocked	boolean,
	-- the friend's earliest follow that musubi knows
	first_follow	boolean NOT NULL DEFAULT false,
	estimated	boolean NOT NULL DEFAULT false,
	-- on role rows: the friend has a current customer link
	linked		boolean NOT NULL DEFAULT false,
	role		text CHECK (role IN ('source', 'organic')),
	-- on role rows: the net of those orders
	revenue_30d	numeric(19,6) NOT NULL DEFAULT 0,
	revenue_60d	numeric(19,6) NOT NULL DEFAULT 0,
	revenue_90d	numeric(19,6) NOT NULL DEFAULT 0,
	-- interactions.event_id of the follow
	event_id	text NOT NULL,
	PRIMARY KEY (channel_id, event_id),
	FOREIGN KEY (channel_id, friend_id) REFERENCES friends (channel_id, id)
		ON DELETE CASCADE,
	FOREIGN KEY (channel_id, source_id) REFERENCES acquisition_sources
		(channel_id, id) ON DELETE SET NULL (source_id),
	CHECK (NOT estimated OR (touch_id IS NULL AND source_id IS NOT NULL))
);
CREATE INDEX acquisition_follows_friend ON acquisition_follows (channel_id,
	friend_id, followed_at);
CREATE INDEX acquisition_follows_day ON acquisition_follows (channel_id, day)
	WHERE touch_id IS NULL;
CREATE INDEX acquisition_follows_report ON acquisition_follows (channel_id,
	day) WHERE role IS NOT NULL;

-- Days whose estimate must be recomputed (follows or exact matches changed
-- after the costs were known).
CREATE TABLE acquisition_estimate_queue (
	channel_id	bigint NOT NULL,
	day		date NOT NULL,
	queued_at	timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (channel_id, day)
);

-- The friend's source, for segments (read-only outside this module).
ALTER TABLE friends ADD COLUMN source_id bigint;
ALTER TABLE friends ADD COLUMN source_estimated boolean;
ALTER TABLE friends ADD COLUMN source_at timestamptz;
ALTER TABLE friends ADD COLUMN source_touch_id bigint;
CREATE INDEX friends_source ON friends (channel_id, source_id)
	WHERE source_id IS NOT NULL;

-- Take the per-(channel, user) matching lock for this transaction.
CREATE FUNCTION musubi_acq_lock(p_channel bigint, p_user text) RETURNS void
LANGUAGE sql AS $$
	SELECT pg_advisory_xact_lock(hashtext('musubi_acq_match'),
	    hashtext(p_channel::text || ':' || p_user));
$$;

-- Queue the (channel, day) pairs for re-estimation, but only days on which
-- some in-app CPF source has LINE-reported adds (elsewhere there is nothing
-- to estimate).
CREATE FUNCTION musubi_acq_queue_days(p_channels bigint[], p_days date[])
RETURNS void
LANGUAGE sql AS $$
	INSERT INTO acquisition_estimate_queue (channel_id, day)
	SELECT DISTINCT d.ch, d.dy
	FROM unnest(p_channels, p_days) AS d(ch, dy)
	WHERE d.ch IS NOT NULL AND d.dy IS NOT NULL AND EXISTS (
		SELECT 1 FROM acquisition_costs c
		JOIN acquisition_sources s ON s.channel_id = c.channel_id
		    AND s.id = c.source_id
		WHERE c.channel_id = d.ch AND c.day = d.dy
		    AND c.reported_adds > 0 AND s.in_app)
	ON CONFLICT (channel_id, day) DO NOTHING;
$$;

-- Recompute the order windows on the role rows of the given friends
-- (paired arrays): the counted orders (orders.revenue_state) in the
-- channel's acquisition currency of the customers currently linked to the
-- friend, placed at or after the follow.  Called when a friend's role row
-- changes and, through the friend_stats triggers below, whenever the EC
-- rollup changes a friend's purchase totals (orders, net revenue, first or
-- last purchase): the report reads these columns instead of joining
-- orders.
CREATE FUNCTION musubi_acq_orders_refresh(p_channels bigint[],
	p_friends bigint[])
RETURNS void
LANGUAGE sql AS $$
	WITH r AS (
		SELECT DISTINCT af.channel_id, af.event_id, af.friend_id,
		    af.followed_at, coalesce(st.currency, 'JPY') AS cur
		FROM unnest(p_channels, p_friends) AS t(ch, fr)
		JOIN acquisition_follows af ON af.channel_id = t.ch
		    AND af.friend_id = t.fr AND af.role IS NOT NULL
		LEFT JOIN acquisition_settings st ON st.channel_id = t.ch
	), v AS (
		-- One index-driven aggregate per role row: linear in the
		-- number of friends, whatever the planner thinks of unnest().
		SELECT r.channel_id, r.event_id, EXISTS (SELECT 1
		    FROM friend_customer_links k
		    WHERE k.channel_id = r.channel_id
			AND k.friend_id = r.friend_id
			AND k.unlinked_at IS NULL) AS linked, x.*
		FROM r CROSS JOIN LATERAL (SELECT
		    count(*) FILTER (WHERE o.net > 0) AS oall,
		    count(*) FILTER (WHERE o.net > 0 AND o.placed_at <
			r.followed_at + interval '30 days') AS o30,
		    count(*) FILTER (WHERE o.net > 0 AND o.placed_at <
			r.followed_at + interval '60 days') AS o60,
		    count(*) FILTER (WHERE o.net > 0 AND o.placed_at <
			r.followed_at + interval '90 days') AS o90,
		    coalesce(sum(o.net) FILTER (WHERE o.placed_at <
			r.followed_at + interval '30 days'), 0) AS r30,
		    coalesce(sum(o.net) FILTER (WHERE o.placed_at <
			r.followed_at + interval '60 days'), 0) AS r60,
		    coalesce(sum(o.net) FILTER (WHERE o.placed_at <
			r.followed_at + interval '90 days'), 0) AS r90
		    FROM friend_customer_links k
		    JOIN orders o ON o.channel_id = k.channel_id
			AND o.customer_id = k.customer_id
			AND o.revenue_state = 'counted' AND o.currency = r.cur
			AND o.placed_at >= r.followed_at
		    WHERE k.channel_id = r.channel_id
			AND k.friend_id = r.friend_id
			AND k.unlinked_at IS NULL) x
	)
	UPDATE acquisition_follows af
	SET linked = v.linked, orders_all = v.oall, orders_30d = v.o30,
	    orders_60d = v.o60, orders_90d = v.o90, revenue_30d = v.r30,
	    revenue_60d = v.r60, revenue_90d = v.r90
	FROM v
	WHERE af.channel_id = v.channel_id AND af.event_id = v.event_id
	    AND (af.linked, af.orders_all, af.orders_30d, af.orders_60d,
		af.orders_90d, af.revenue_30d, af.revenue_60d,
		af.revenue_90d) IS DISTINCT FROM (v.linked, v.oall::integer,
		v.o30::integer, v.o60::integer, v.o90::integer, v.r30, v.r60,
		v.r90);
$$;

-- Recompute the order windows of every friend of a channel in one set
-- (after its acquisition currency changed; benchmarks).
CREATE FUNCTION musubi_acq_orders_refresh_channel(p_channel bigint)
RETURNS void
LANGUAGE sql AS $$
	WITH agg AS (
		SELECT af.event_id,
		    count(*) FILTER (WHERE o.net > 0) AS oall,
		    count(*) FILTER (WHERE o.net > 0 AND o.placed_at <
			af.followed_at + interval '30 days') AS o30,
		    count(*) FILTER (WHERE o.net > 0 AND o.placed_at <
			af.followed_at + interval '60 days') AS o60,
		    count(*) FILTER (WHERE o.net > 0 AND o.placed_at <
			af.followed_at + interval '90 days') AS o90,
		    coalesce(sum(o.net) FILTER (WHERE o.placed_at <
			af.followed_at + interval '30 days'), 0) AS r30,
		    coalesce(sum(o.net) FILTER (WHERE o.placed_at <
			af.followed_at + interval '60 days'), 0) AS r60,
		    coalesce(sum(o.net) FILTER (WHERE o.placed_at <
			af.followed_at + interval '90 days'), 0) AS r90
		FROM acquisition_follows af
		JOIN friend_customer_links k ON k.channel_id = af.channel_id
		    AND k.friend_id = af.friend_id AND k.unlinked_at IS NULL
		JOIN orders o ON o.channel_id = k.channel_id
		    AND o.customer_id = k.customer_id
		    AND o.revenue_state = 'counted'
		    AND o.currency = coalesce((SELECT currency
			FROM acquisition_settings
			WHERE channel_id = p_channel), 'JPY')
		    AND o.placed_at >= af.followed_at
		WHERE af.channel_id = p_channel AND af.role IS NOT NULL
		GROUP BY af.event_id
	), lk AS (
		SELECT DISTINCT k.friend_id FROM friend_customer_links k
		WHERE k.channel_id = p_channel AND k.unlinked_at IS NULL
	), v AS (
		SELECT af.event_id, lk.friend_id IS NOT NULL AS linked,
		    coalesce(a.oall, 0) AS oall,
		    coalesce(a.o30, 0) AS o30, coalesce(a.o60, 0) AS o60,
		    coalesce(a.o90, 0) AS o90, coalesce(a.r30, 0) AS r30,
		    coalesce(a.r60, 0) AS r60, coalesce(a.r90, 0) AS r90
		FROM acquisition_follows af
		LEFT JOIN agg a ON a.event_id = af.event_id
		LEFT JOIN lk ON lk.friend_id = af.friend_id
		WHERE af.channel_id = p_channel AND af.role IS NOT NULL
	)
	UPDATE acquisition_follows af
	SET linked = v.linked, orders_all = v.oall, orders_30d = v.o30,
	    orders_60d = v.o60, orders_90d = v.o90, revenue_30d = v.r30,
	    revenue_60d = v.r60, revenue_90d = v.r90
	FROM v
	WHERE af.channel_id = p_channel AND af.event_id = v.event_id
	    AND (af.linked, af.orders_all, af.orders_30d, af.orders_60d,
		af.orders_90d, af.revenue_30d, af.revenue_60d,
		af.revenue_90d) IS DISTINCT FROM (v.linked, v.oall::integer,
		v.o30::integer, v.o60::integer, v.o90::integer, v.r30, v.r60,
		v.r90);
$$;

-- Triggers on friend_stats (the EC rollup changed friends' purchase
-- totals: orders, net revenue, first or last purchase) and on
-- friend_customer_links (a link was made or closed), in the writer's
-- transaction.  Errors other than transient ones are logged, never raised:
-- a report column must not stop order intake or linking.
CREATE FUNCTION musubi_acq_friend_stats_trg() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
	v_ch	bigint[];
	v_fr	bigint[];
BEGIN
	IF TG_TABLE_NAME = 'friend_customer_links' THEN
		SELECT array_agg(n.channel_id), array_agg(n.friend_id)
		INTO v_ch, v_fr
		FROM musubi_acq_fs_new n;
	ELSIF TG_OP = 'INSERT' THEN
		SELECT array_agg(n.channel_id), array_agg(n.friend_id)
		INTO v_ch, v_fr
		FROM musubi_acq_fs_new n;
	ELSE
		SELECT array_agg(n.channel_id), array_agg(n.friend_id)
		INTO v_ch, v_fr
		FROM musubi_acq_fs_new n
		JOIN musubi_acq_fs_old o ON o.channel_id = n.channel_id
		    AND o.friend_id = n.friend_id
		WHERE (n.orders_count, n.net_revenue, n.first_purchase_at,
		    n.last_purchase_at) IS DISTINCT FROM (o.orders_count,
		    o.net_revenue, o.first_purchase_at, o.last_purchase_at);
	END IF;
	IF v_ch IS NULL THEN
		RETURN NULL;
	END IF;
	BEGIN
		PERFORM musubi_acq_orders_refresh(v_ch, v_fr);
	EXCEPTION
	WHEN deadlock_detected OR serialization_failure OR
	    lock_not_available OR query_canceled OR admin_shutdown OR
	    crash_shutdown OR cannot_connect_now OR out_of_memory OR
	    disk_full OR insufficient_resources THEN
		RAISE;
	WHEN OTHERS THEN
		RAISE WARNING 'musubi acquisition: order windows failed: %',
		    SQLERRM;
	END;
	RETURN NULL;
END;
$$;

CREATE TRIGGER acquisition_orders_ins AFTER INSERT ON friend_stats
	REFERENCING NEW TABLE AS musubi_acq_fs_new
	FOR EACH STATEMENT EXECUTE FUNCTION musubi_acq_friend_stats_trg();
CREATE TRIGGER acquisition_orders_upd AFTER UPDATE ON friend_stats
	REFERENCING OLD TABLE AS musubi_acq_fs_old
	NEW TABLE AS musubi_acq_fs_new
	FOR EACH STATEMENT EXECUTE FUNCTION musubi_acq_friend_stats_trg();
CREATE TRIGGER acquisition_links_ins AFTER INSERT ON friend_customer_links
	REFERENCING NEW TABLE AS musubi_acq_fs_new
	FOR EACH STATEMENT EXECUTE FUNCTION musubi_acq_friend_stats_trg();
CREATE TRIGGER acquisition_links_upd AFTER UPDATE ON friend_customer_links
	REFERENCING NEW TABLE AS musubi_acq_fs_new
	FOR EACH STATEMENT EXECUTE FUNCTION musubi_acq_friend_stats_trg();

-- Recompute, for the given friends (paired arrays), each follow's
-- first_follow and blocked_at, the follow that carries the friend's source
-- (role), and the friend's source columns.
CREATE FUNCTION musubi_acq_friends_refresh(p_channels bigint[],
	p_friends bigint[])
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
	v_n	bigint;
BEGIN
	CREATE TEMP TABLE IF NOT EXISTS musubi_acq_fr (channel_id bigint,
	    friend_id bigint) ON COMMIT DROP;
	CREATE TEMP TABLE IF NOT EXISTS musubi_acq_fpick (channel_id bigint,
	    friend_id bigint, event_id text, source_id bigint,
	    estimated boolean, touch_id bigint, followed_at timestamptz)
	    ON COMMIT DROP;
	TRUNCATE musubi_acq_fr, musubi_acq_fpick;
	INSERT INTO musubi_acq_fr
	SELECT DISTINCT t.ch, t.fr
	FROM unnest(p_channels, p_friends) AS t(ch, fr)
	WHERE t.ch IS NOT NULL AND t.fr IS NOT NULL;
	GET DIAGNOSTICS v_n = ROW_COUNT;
	IF v_n > 500 THEN
		-- Without statistics the planner loops over temp tables.
		ANALYZE musubi_acq_fr;
	END IF;

	WITH fl AS (
		SELECT af.channel_id, af.friend_id, af.event_id, af.followed_at,
		    row_number() OVER w = 1 AS is_first,
		    lead(af.followed_at) OVER w AS next_at
		FROM musubi_acq_fr r
		JOIN acquisition_follows af ON af.channel_id = r.channel_id
		    AND af.friend_id = r.friend_id
		WINDOW w AS (PARTITION BY af.channel_id, af.friend_id
		    ORDER BY af.followed_at, af.event_id)
	), calc AS (
		SELECT fl.*, (SELECT min(i.event_ts) FROM interactions i
		    WHERE i.channel_id = fl.channel_id
			AND i.friend_id = fl.friend_id AND i.type = 'unfollow'
			AND i.event_ts >= fl.followed_at
			AND (fl.next_at IS NULL OR i.event_ts < fl.next_at))
		    AS blk
		FROM fl
	)
	UPDATE acquisition_follows af
	SET first_follow = c.is_first, blocked_at = c.blk
	FROM calc c
	WHERE af.channel_id = c.channel_id AND af.event_id = c.event_id
	    AND (af.first_follow, af.blocked_at) IS DISTINCT FROM
		(c.is_first, c.blk);

	INSERT INTO musubi_acq_fpick
	SELECT DISTINCT ON (af.channel_id, af.friend_id) af.channel_id,
	    af.friend_id, af.event_id, af.source_id, af.estimated, af.touch_id,
	    af.followed_at
	FROM musubi_acq_fr r
	JOIN acquisition_follows af ON af.channel_id = r.channel_id
	    AND af.friend_id = r.friend_id
	LEFT JOIN acquisition_settings st ON st.channel_id = af.channel_id
	WHERE af.source_id IS NOT NULL
	ORDER BY af.channel_id, af.friend_id,
	    CASE WHEN st.refollow = 'latest' THEN af.followed_at END
		DESC NULLS LAST,
	    af.followed_at, af.event_id;
	IF v_n > 500 THEN
		ANALYZE musubi_acq_fpick;
	END IF;

	WITH want AS (
		SELECT af.channel_id, af.event_id,
		    CASE WHEN p.event_id = af.event_id THEN 'source'
		    WHEN p.event_id IS NULL AND af.first_follow THEN 'organic'
		    END AS role
		FROM musubi_acq_fr r
		JOIN acquisition_follows af ON af.channel_id = r.channel_id
		    AND af.friend_id = r.friend_id
		LEFT JOIN musubi_acq_fpick p ON p.channel_id = af.channel_id
		    AND p.friend_id = af.friend_id
	)
	UPDATE acquisition_follows af SET role = w.role
	FROM want w
	WHERE af.channel_id = w.channel_id AND af.event_id = w.event_id
	    AND af.role IS DISTINCT FROM w.role;

	UPDATE friends f
	SET source_id = p.source_id, source_estimated = p.estimated,
	    source_at = p.followed_at, source_touch_id = p.touch_id
	FROM musubi_acq_fr r
	LEFT JOIN musubi_acq_fpick p ON p.channel_id = r.channel_id
	    AND p.friend_id = r.friend_id
	WHERE f.channel_id = r.channel_id AND f.id = r.friend_id
	    AND (f.source_id, f.source_estimated, f.source_at,
		f.source_touch_id) IS DISTINCT FROM
		(p.source_id, p.estimated, p.followed_at, p.touch_id);

	-- A role row may have moved: its order windows follow it.
	PERFORM musubi_acq_orders_refresh(array_agg(r.channel_id),
	    array_agg(r.friend_id))
	FROM musubi_acq_fr r
	WHERE EXISTS (SELECT 1 FROM friend_customer_links k
	    WHERE k.channel_id = r.channel_id AND k.friend_id = r.friend_id);
END;
$$;

-- Match the follows and logged-in touches of the given users (paired
-- arrays), then refresh their friends.  The caller holds (or this takes)
-- the users' matching locks.  Days whose exact matches changed are queued
-- for re-estimation.
CREATE FUNCTION musubi_acq_rematch(p_channels bigint[], p_users text[])
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
	v_ch	bigint[];
	v_fr	bigint[];
	v_dch	bigint[];
	v_day	date[];
	v_n	bigint;
BEGIN
	CREATE TEMP TABLE IF NOT EXISTS musubi_acq_u (channel_id bigint,
	    user_id text, friend_id bigint) ON COMMIT DROP;
	CREATE TEMP TABLE IF NOT EXISTS musubi_acq_pick (channel_id bigint,
	    event_id text, touch_id bigint, source_id bigint) ON COMMIT DROP;
	TRUNCATE musubi_acq_u, musubi_acq_pick;

	-- Lock first (fixed order), so what follows sees whatever the other
	-- side committed while we waited.
	PERFORM musubi_acq_lock(x.ch, x.us)
	FROM (SELECT DISTINCT t.ch, t.us
	    FROM unnest(p_channels, p_users) AS t(ch, us)
	    WHERE t.ch IS NOT NULL AND t.us IS NOT NULL
	    ORDER BY 1, 2) x;

	INSERT INTO musubi_acq_u
	SELECT DISTINCT t.ch, t.us, f.id
	FROM unnest(p_channels, p_users) AS t(ch, us)
	LEFT JOIN friends f ON f.channel_id = t.ch AND f.user_id = t.us
	WHERE t.ch IS NOT NULL AND t.us IS NOT NULL;
	GET DIAGNOSTICS v_n = ROW_COUNT;
	IF v_n > 500 THEN
		ANALYZE musubi_acq_u;
	END IF;

	-- Each logged-in touch points at its user's first follow after it
	-- inside the window or, failing that, the last follow up to a minute
	-- before it (clock skew between LINE and us); a follow takes the
	-- latest touch pointing at it.
	INSERT INTO musubi_acq_pick
	SELECT DISTINCT ON (t.channel_id, nf.event_id) t.channel_id,
	    nf.event_id, t.id, t.source_id
	FROM musubi_acq_u u
	JOIN acquisition_touches t ON t.channel_id = u.channel_id
	    AND t.user_id = u.user_id AND t.login_state = 'done'
	JOIN acquisition_sources s ON s.channel_id = t.channel_id
	    AND s.id = t.source_id
	JOIN LATERAL ((SELECT af.event_id, af.followed_at
		FROM acquisition_follows af
		WHERE af.channel_id = u.channel_id
		    AND af.friend_id = u.friend_id
		    AND af.followed_at >= t.created_at
		    AND af.followed_at <= t.created_at +
			make_interval(days => s.attribution_window_days)
		ORDER BY af.followed_at, af.event_id LIMIT 1)
	    UNION ALL
	    (SELECT af.event_id, af.followed_at
		FROM acquisition_follows af
		WHERE af.channel_id = u.channel_id
		    AND af.friend_id = u.friend_id
		    AND af.followed_at >= t.created_at - interval '1 minute'
		    AND af.followed_at < t.created_at
		ORDER BY af.followed_at DESC, af.event_id DESC LIMIT 1)
	    LIMIT 1) nf ON true
	ORDER BY t.channel_id, nf.event_id, t.created_at DESC, t.id DESC;
	IF v_n > 500 THEN
		ANALYZE musubi_acq_pick;
	END IF;

	WITH want AS (
		SELECT af.channel_id, af.event_id, p.touch_id, p.source_id
		FROM musubi_acq_u u
		JOIN acquisition_follows af ON af.channel_id = u.channel_id
		    AND af.friend_id = u.friend_id
		LEFT JOIN musubi_acq_pick p ON p.channel_id = af.channel_id
		    AND p.event_id = af.event_id
		WHERE af.touch_id IS DISTINCT FROM p.touch_id
		    OR (p.touch_id IS NOT NULL AND
			af.source_id IS DISTINCT FROM p.source_id)
	), upd AS (
		UPDATE acquisition_follows af
		SET touch_id = w.touch_id, source_id = w.source_id,
		    estimated = false,
		    matched_at = CASE WHEN w.touch_id IS NOT NULL
			THEN now() END
		FROM want w
		WHERE af.channel_id = w.channel_id
		    AND af.event_id = w.event_id
		RETURNING af.channel_id, af.day
	)
	SELECT array_agg(channel_id), array_agg(day) INTO v_dch, v_day
	FROM upd;

	WITH want AS (
		SELECT t.channel_id, t.id, u.friend_id, p.event_id
		FROM musubi_acq_u u
		JOIN acquisition_touches t ON t.channel_id = u.channel_id
		    AND t.user_id = u.user_id
		LEFT JOIN musubi_acq_pick p ON p.channel_id = t.channel_id
		    AND p.touch_id = t.id
	)
	UPDATE acquisition_touches t
	SET friend_id = w.friend_id, follow_event_id = w.event_id,
	    matched_at = CASE WHEN w.event_id IS NULL THEN NULL
		WHEN t.follow_event_id = w.event_id THEN t.matched_at
		ELSE now() END
	FROM want w
	WHERE t.channel_id = w.channel_id AND t.id = w.id
	    AND (t.friend_id, t.follow_event_id) IS DISTINCT FROM
		(w.friend_id, w.event_id);

	IF v_dch IS NOT NULL THEN
		PERFORM musubi_acq_queue_days(v_dch, v_day);
	END IF;
	SELECT array_agg(channel_id), array_agg(friend_id) INTO v_ch, v_fr
	FROM musubi_acq_u WHERE friend_id IS NOT NULL;
	IF v_ch IS NOT NULL THEN
		PERFORM musubi_acq_friends_refresh(v_ch, v_fr);
	END IF;
END;
$$;

-- Statement trigger on interactions: copy new follows, match them, and
-- refresh the friends that followed or blocked.  Runs inside
-- musubi_line_apply()'s transaction.  Transient errors (deadlock, ...)
-- are raised so the batch is retried; anything else is logged and must
-- not stop LINE intake.
CREATE FUNCTION musubi_acq_interactions_trg() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
	v_ch	bigint[];
	v_us	text[];
	v_fch	bigint[];
	v_fr	bigint[];
	v_days	date[];
BEGIN
	IF NOT EXISTS (SELECT 1 FROM musubi_acq_new n
	    WHERE n.type IN ('follow', 'unfollow')
		AND n.friend_id IS NOT NULL AND n.event_ts IS NOT NULL) THEN
		RETURN NULL;
	END IF;
	BEGIN
		INSERT INTO acquisition_follows (channel_id, event_id,
		    friend_id, followed_at, day, unblocked)
		SELECT n.channel_id, n.event_id, n.friend_id, n.event_ts,
		    (n.event_ts AT TIME ZONE c.timezone)::date,
		    CASE n.payload #>> '{follow,isUnblocked}'
		    WHEN 'true' THEN true WHEN 'false' THEN false END
		FROM musubi_acq_new n
		JOIN channels c ON c.id = n.channel_id
		WHERE n.type = 'follow' AND n.friend_id IS NOT NULL
		    AND n.event_ts IS NOT NULL
		ON CONFLICT (channel_id, event_id) DO NOTHING;

		SELECT array_agg(x.channel_id), array_agg(x.user_id)
		INTO v_ch, v_us
		FROM (SELECT DISTINCT n.channel_id, n.user_id
		    FROM musubi_acq_new n
		    WHERE n.type = 'follow' AND n.friend_id IS NOT NULL
			AND n.event_ts IS NOT NULL) x;
		IF v_ch IS NOT NULL THEN
			PERFORM musubi_acq_rematch(v_ch, v_us);
		END IF;

		-- Blocks only change blocked_at.
		SELECT array_agg(x.channel_id), array_agg(x.friend_id)
		INTO v_fch, v_fr
		FROM (SELECT DISTINCT n.channel_id, n.friend_id
		    FROM musubi_acq_new n
		    WHERE n.type = 'unfollow' AND n.friend_id IS NOT NULL
			AND n.event_ts IS NOT NULL) x;
		IF v_fch IS NOT NULL THEN
			PERFORM musubi_acq_friends_refresh(v_fch, v_fr);
		END IF;

		-- New follows nobody explains may belong to an in-app ad.
		SELECT array_agg(af.channel_id), array_agg(af.day)
		INTO v_fch, v_days
		FROM (SELECT DISTINCT af.channel_id, af.day
		    FROM musubi_acq_new n
		    JOIN acquisition_follows af ON af.channel_id = n.channel_id
			AND af.event_id = n.event_id
		    WHERE n.type = 'follow' AND af.touch_id IS NULL
			AND af.first_follow) af;
		IF v_fch IS NOT NULL THEN
			PERFORM musubi_acq_queue_days(v_fch, v_days);
		END IF;
	EXCEPTION
	WHEN deadlock_detected OR serialization_failure OR
	    lock_not_available OR query_canceled OR admin_shutdown OR
	    crash_shutdown OR cannot_connect_now OR out_of_memory OR
	    disk_full OR insufficient_resources THEN
		RAISE;
	WHEN OTHERS THEN
		RAISE WARNING 'musubi acquisition: follow matching failed: %',
		    SQLERRM;
	END;
	RETURN NULL;
END;
$$;

CREATE TRIGGER acquisition_follows_in AFTER INSERT ON interactions
	REFERENCING NEW TABLE AS musubi_acq_new
	FOR EACH STATEMENT EXECUTE FUNCTION musubi_acq_interactions_trg();

-- A login callback verified the ID token: record the userId on the touch
-- (state exchanging -> done) and match.  Returns 'ok', or 'gone' when the
-- touch is not waiting for this (replayed or finished meanwhile).
CREATE FUNCTION musubi_acq_login(p_channel bigint, p_touch bigint,
	p_user text, p_fsc boolean) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
	PERFORM musubi_acq_lock(p_channel, p_user);
	UPDATE acquisition_touches
	SET login_state = 'done', user_id = p_user, logged_in_at = now(),
	    friendship_status_changed = p_fsc
	WHERE channel_id = p_channel AND id = p_touch
	    AND login_state = 'exchanging';
	IF NOT FOUND THEN
		RETURN 'gone';
	END IF;
	PERFORM musubi_acq_rematch(ARRAY[p_channel], ARRAY[p_user]);
	RETURN 'ok';
END;
$$;

-- Estimate one channel-local day: the day's new-friend follows (first
-- follow, not an unblock) without a touch are the candidates, U of them.
-- Each in-app cpf_ad source active that day has r = max(0, reported adds -
-- new friends already matched to it exactly that day); R = sum of r.  N =
-- min(U, R) follows are attributed: source s gets floor(N * r_s / R), and
-- the N - sum(floors) left over go one each to the largest remainders
-- (N * r_s mod R), ties to the lower source id.  Which follows: candidates
-- ordered by md5(channel_id || ':' || event_id), then event_id; the first
-- N, in consecutive blocks by source id.  So with U >= R every source
-- gets exactly its r.  Returns N.
CREATE FUNCTION musubi_acq_estimate_day(p_channel bigint, p_day date)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
	v_total	bigint;
	v_cand	bigint;
	v_n	bigint;
	v_ch	bigint[];
	v_fr	bigint[];
BEGIN
	PERFORM pg_advisory_xact_lock(hashtext('musubi_acq_estimate'),
	    hashtext(p_channel::text));
	CREATE TEMP TABLE IF NOT EXISTS musubi_acq_est (source_id bigint,
	    r bigint, q bigint, lo bigint, hi bigint) ON COMMIT DROP;
	TRUNCATE musubi_acq_est;

	INSERT INTO musubi_acq_est (source_id, r)
	SELECT s.id, greatest(coalesce(c.reported_adds, 0) - (
		SELECT count(*) FROM acquisition_follows af
		WHERE af.channel_id = p_channel AND af.day = p_day
		    AND af.source_id = s.id AND NOT af.estimated
		    AND af.first_follow
		    AND af.unblocked IS NOT TRUE), 0)
	FROM acquisition_sources s
	LEFT JOIN acquisition_costs c ON c.channel_id = s.channel_id
	    AND c.source_id = s.id AND c.day = p_day
	WHERE s.channel_id = p_channel AND s.kind = 'cpf_ad' AND s.in_app
	    AND s.active_from <= p_day
	    AND (s.active_until IS NULL OR p_day <= s.active_until);
	SELECT coalesce(sum(r), 0) INTO v_total FROM musubi_acq_est;

	SELECT count(*) INTO v_cand FROM acquisition_follows af
	WHERE af.channel_id = p_channel AND af.day = p_day
	    AND af.touch_id IS NULL AND af.first_follow
	    AND af.unblocked IS NOT TRUE;
	v_n := least(v_cand, v_total);

	IF v_n > 0 THEN
		WITH base AS (
			SELECT source_id, (v_n * r) / v_total AS q,
			    (v_n * r) % v_total AS rem
			FROM musubi_acq_est
		), ranked AS (
			SELECT source_id, q + CASE WHEN row_number() OVER (
			    ORDER BY rem DESC, source_id) <=
			    v_n - sum(q) OVER () THEN 1 ELSE 0 END AS quota
			FROM base
		), ranges AS (
			SELECT source_id, quota,
			    sum(quota) OVER (ORDER BY source_id) AS hi
			FROM ranked
		)
		UPDATE musubi_acq_est e SET q = r.quota, hi = r.hi,
		    lo = r.hi - r.quota
		FROM ranges r WHERE e.source_id = r.source_id;
	END IF;

	WITH cand AS (
		SELECT af.event_id, row_number() OVER (ORDER BY
		    md5(p_channel::text || ':' || af.event_id),
		    af.event_id) AS rn
		FROM acquisition_follows af
		WHERE af.channel_id = p_channel AND af.day = p_day
		    AND af.touch_id IS NULL AND af.first_follow
		    AND af.unblocked IS NOT TRUE
	), want AS (
		SELECT af.event_id, e.source_id
		FROM acquisition_follows af
		LEFT JOIN cand c ON c.event_id = af.event_id
		LEFT JOIN musubi_acq_est e ON v_n > 0 AND c.rn > e.lo
		    AND c.rn <= e.hi
		WHERE af.channel_id = p_channel AND af.day = p_day
		    AND af.touch_id IS NULL
	), upd AS (
		UPDATE acquisition_follows af
		SET source_id = w.source_id,
		    estimated = w.source_id IS NOT NULL
		FROM want w
		WHERE af.channel_id = p_channel AND af.event_id = w.event_id
		    AND (af.source_id, af.estimated) IS DISTINCT FROM
			(w.source_id, w.source_id IS NOT NULL)
		RETURNING af.friend_id
	)
	SELECT array_agg(p_channel), array_agg(friend_id) INTO v_ch, v_fr
	FROM upd;
	IF v_ch IS NOT NULL THEN
		PERFORM musubi_acq_friends_refresh(v_ch, v_fr);
	END IF;
	DELETE FROM acquisition_estimate_queue
	WHERE channel_id = p_channel AND day = p_day;
	RETURN v_n;
END;
$$;

-- Estimate up to lim queued days (any channel, oldest first; several
-- musubid processes share the queue).  Returns the days done.
CREATE FUNCTION musubi_acq_estimate_queued(lim integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
	r	record;
	n	integer := 0;
BEGIN
	FOR r IN
		SELECT q.channel_id, q.day FROM acquisition_estimate_queue q
		ORDER BY q.queued_at, q.channel_id, q.day
		LIMIT lim FOR UPDATE SKIP LOCKED
	LOOP
		PERFORM musubi_acq_estimate_day(r.channel_id, r.day);
		n := n + 1;
	END LOOP;
	RETURN n;
END;
$$;

-- Estimate every queued day of one channel now (before a report).
CREATE FUNCTION musubi_acq_estimate_channel(p_channel bigint) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
	r	record;
	n	integer := 0;
BEGIN
	FOR r IN
		SELECT q.day FROM acquisition_estimate_queue q
		WHERE q.channel_id = p_channel ORDER BY q.day
		FOR UPDATE SKIP LOCKED
	LOOP
		PERFORM musubi_acq_estimate_day(p_channel, r.day);
		n := n + 1;
	END LOOP;
	RETURN n;
END;
$$;

-- After a source changed (kind, in_app, active period, window): rematch
-- the users who logged in through it and re-estimate every day its costs
-- or its estimates touch.  Returns the days re-estimated.
CREATE FUNCTION musubi_acq_source_refresh(p_channel bigint, p_source bigint)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
	v_us	text[];
	r	record;
	n	integer := 0;
BEGIN
	SELECT array_agg(DISTINCT user_id) INTO v_us
	FROM acquisition_touches
	WHERE channel_id = p_channel AND source_id = p_source
	    AND user_id IS NOT NULL;
	IF v_us IS NOT NULL THEN
		PERFORM musubi_acq_rematch(array_fill(p_channel,
		    ARRAY[cardinality(v_us)]), v_us);
	END IF;
	FOR r IN
		SELECT day FROM acquisition_costs
		WHERE channel_id = p_channel AND source_id = p_source
		    AND reported_adds > 0
		UNION
		SELECT day FROM acquisition_follows
		WHERE channel_id = p_channel AND source_id = p_source
		    AND estimated
		UNION
		SELECT day FROM acquisition_estimate_queue
		WHERE channel_id = p_channel
		ORDER BY 1
	LOOP
		PERFORM musubi_acq_estimate_day(p_channel, r.day);
		n := n + 1;
	END LOOP;
	RETURN n;
END;
$$;

-- After the channel's refollow policy changed: recompute every friend with
-- an attributed follow.
CREATE FUNCTION musubi_acq_policy_refresh(p_channel bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
	v_fr	bigint[];
BEGIN
	SELECT array_agg(DISTINCT friend_id) INTO v_fr
	FROM acquisition_follows
	WHERE channel_id = p_channel AND source_id IS NOT NULL;
	IF v_fr IS NOT NULL THEN
		PERFORM musubi_acq_friends_refresh(array_fill(p_channel,
		    ARRAY[cardinality(v_fr)]), v_fr);
	END IF;
END;
$$;

-- Import cost rows, all or nothing.  p_rows: JSON array of {row, source
-- (code), date, spend, currency?, impressions?, clicks?, adds?}; a key that
-- is absent keeps the stored value (a new day stores NULL), spend is
-- always given.  Rows are checked first: unknown or archived source,
-- currency other than the channel's, a (source, date) given twice.  Any
-- error: nothing is written and errors lists them ({row, field, message},
-- by row).  p_dry_run only checks.  Affected days are re-estimated.
CREATE FUNCTION musubi_acq_costs_import(p_channel bigint, p_rows jsonb,
	p_origin text, p_dry_run boolean,
	OUT imported integer, OUT errors jsonb)
LANGUAGE plpgsql AS $$
DECLARE
	v_cur	text;
	r	record;
BEGIN
	imported := 0;
	SELECT coalesce((SELECT currency FROM acquisition_settings
	    WHERE channel_id = p_channel), 'JPY') INTO v_cur;
	CREATE TEMP TABLE IF NOT EXISTS musubi_acq_cost_in (rowno integer,
	    code text, day date, spend numeric, currency text,
	    impressions bigint, clicks bigint, adds integer, has_imp boolean,
	    has_clicks boolean, has_adds boolean, source_id bigint,
	    archived boolean, first_row integer) ON COMMIT DROP;
	TRUNCATE musubi_acq_cost_in;
	INSERT INTO musubi_acq_cost_in
	SELECT x.rowno, x.code, x.day, x.spend, x.currency, x.impressions,
	    x.clicks, x.adds, x.has_imp, x.has_clicks, x.has_adds, s.id,
	    s.archived_at IS NOT NULL,
	    min(x.rowno) OVER (PARTITION BY x.code, x.day)
	FROM (SELECT (e->>'row')::integer AS rowno, e->>'source' AS code,
		(e->>'date')::date AS day, (e->>'spend')::numeric AS spend,
		coalesce(e->>'currency', v_cur) AS currency,
		(e->>'impressions')::bigint AS impressions,
		(e->>'clicks')::bigint AS clicks,
		(e->>'adds')::integer AS adds,
		e ? 'impressions' AS has_imp, e ? 'clicks' AS has_clicks,
		e ? 'adds' AS has_adds
	    FROM jsonb_array_elements(p_rows) e) x
	LEFT JOIN acquisition_sources s ON s.channel_id = p_channel
	    AND s.code = x.code;

	SELECT coalesce(jsonb_agg(jsonb_build_object('row', e.rowno,
	    'field', e.field, 'message', e.message)
	    ORDER BY e.rowno, e.field), '[]') INTO errors
	FROM (SELECT rowno, 'source' AS field,
		'no source with code "' || code || '" in this channel'
		AS message
	    FROM musubi_acq_cost_in WHERE source_id IS NULL
	    UNION ALL
	    SELECT rowno, 'source', 'source "' || code || '" is archived'
	    FROM musubi_acq_cost_in WHERE archived
	    UNION ALL
	    SELECT rowno, 'currency', 'currency ' || currency ||
		' differs from the channel''s acquisition currency ' || v_cur
	    FROM musubi_acq_cost_in WHERE currency <> v_cur
	    UNION ALL
	    SELECT rowno, 'date', 'source "' || code || '" and date ' ||
		day || ' already appear in row ' || first_row
	    FROM musubi_acq_cost_in WHERE rowno <> first_row) e;
	IF jsonb_array_length(errors) > 0 OR p_dry_run THEN
		RETURN;
	END IF;

	PERFORM pg_advisory_xact_lock(hashtext('musubi_acq_costs'),
	    hashtext(p_channel::text));
	UPDATE acquisition_costs c
	SET spend = i.spend, currency = i.currency,
	    impressions = CASE WHEN i.has_imp THEN i.impressions
		ELSE c.impressions END,
	    clicks = CASE WHEN i.has_clicks THEN i.clicks ELSE c.clicks END,
	    reported_adds = CASE WHEN i.has_adds THEN i.adds
		ELSE c.reported_adds END,
	    origin = p_origin, updated_at = now()
	FROM musubi_acq_cost_in i
	WHERE c.channel_id = p_channel AND c.source_id = i.source_id
	    AND c.day = i.day;
	INSERT INTO acquisition_costs (channel_id, source_id, day, spend,
	    currency, impressions, clicks, reported_adds, origin)
	SELECT p_channel, i.source_id, i.day, i.spend, i.currency,
	    i.impressions, i.clicks, i.adds, p_origin
	FROM musubi_acq_cost_in i
	WHERE NOT EXISTS (SELECT 1 FROM acquisition_costs c
	    WHERE c.channel_id = p_channel AND c.source_id = i.source_id
		AND c.day = i.day);
	SELECT count(*) INTO imported FROM musubi_acq_cost_in;

	FOR r IN SELECT DISTINCT day FROM musubi_acq_cost_in ORDER BY 1 LOOP
		PERFORM musubi_acq_estimate_day(p_channel, r.day);
	END LOOP;
END;
$$;

-- Delete one day's cost of a source and re-estimate that day.  Returns
-- false when there was no such row.
CREATE FUNCTION musubi_acq_cost_delete(p_channel bigint, p_code text,
	p_day date) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
	DELETE FROM acquisition_costs c
	USING acquisition_sources s
	WHERE s.channel_id = p_channel AND s.code = p_code
	    AND c.channel_id = s.channel_id AND c.source_id = s.id
	    AND c.day = p_day;
	IF NOT FOUND THEN
		RETURN false;
	END IF;
	PERFORM musubi_acq_estimate_day(p_channel, p_day);
	RETURN true;
END;
$$;

-- Quote a CSV field (RFC 4180) when it needs it.
CREATE FUNCTION musubi_csv(v text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
	SELECT CASE WHEN v IS NULL THEN ''
	    WHEN v ~ '[",\r\n]' OR v ~ '^[=+@-]' OR v <> btrim(v)
	    THEN '"' || replace(CASE WHEN v ~ '^[=+@-]' AND v !~ '^-?[0-9]'
		THEN '''' || v ELSE v END, '"', '""') || '"'
	    ELSE v END;
$$;

-- The role rows of a period grouped by (source, day): the heavy half of
-- the report, one pass over acquisition_follows.  RETURN QUERY lets
-- PostgreSQL run it with parallel workers (an INSERT ... SELECT could not).
CREATE FUNCTION musubi_acq_report_days(p_channel bigint, p_from date,
	p_to date, p_source bigint)
RETURNS TABLE (source_id bigint, day date, friends bigint, matched bigint,
	estimated bigint, blocked_7d bigint, blocked_30d bigint, linked bigint,
	purchasers bigint, purchasers_30d bigint, purchasers_60d bigint,
	purchasers_90d bigint, orders bigint, orders_30d bigint,
	orders_60d bigint, orders_90d bigint, revenue_30d numeric,
	revenue_60d numeric, revenue_90d numeric, from_touch bigint,
	from_touch_purchasers bigint)
LANGUAGE plpgsql STABLE
SET work_mem = '64MB'
SET jit = off
AS $$
BEGIN
	RETURN QUERY
	SELECT af.source_id, af.day, count(*),
	    count(*) FILTER (WHERE af.source_id IS NOT NULL
		AND NOT af.estimated),
	    count(*) FILTER (WHERE af.estimated),
	    count(*) FILTER (WHERE af.blocked_at <
		af.followed_at + interval '7 days'),
	    count(*) FILTER (WHERE af.blocked_at <
		af.followed_at + interval '30 days'),
	    count(*) FILTER (WHERE af.linked),
	    count(*) FILTER (WHERE af.orders_all > 0),
	    count(*) FILTER (WHERE af.orders_30d > 0),
	    count(*) FILTER (WHERE af.orders_60d > 0),
	    count(*) FILTER (WHERE af.orders_90d > 0),
	    -- the sums only where there is something to add
	    sum(af.orders_all) FILTER (WHERE af.orders_all > 0),
	    sum(af.orders_30d) FILTER (WHERE af.orders_all > 0),
	    sum(af.orders_60d) FILTER (WHERE af.orders_all > 0),
	    sum(af.orders_90d) FILTER (WHERE af.orders_all > 0),
	    sum(af.revenue_30d) FILTER (WHERE af.linked),
	    sum(af.revenue_60d) FILTER (WHERE af.linked),
	    sum(af.revenue_90d) FILTER (WHERE af.linked),
	    count(*) FILTER (WHERE af.touch_id IS NOT NULL),
	    count(*) FILTER (WHERE af.touch_id IS NOT NULL
		AND af.orders_all > 0)
	FROM acquisition_follows af
	WHERE af.channel_id = p_channel AND af.role IS NOT NULL
	    AND af.day BETWEEN p_from AND p_to
	    AND (p_source IS NULL OR af.source_id = p_source)
	GROUP BY af.source_id, af.day;
END;
$$;

-- The touches and costs of a period per source: the other half.
CREATE FUNCTION musubi_acq_report_touches(p_channel bigint, p_from date,
	p_to date, p_source bigint)
RETURNS TABLE (source_id bigint, touches bigint, unique_visitors bigint,
	logged_in bigint, matched bigint, without_login bigint,
	spend numeric, impressions bigint, clicks bigint,
	reported_adds bigint)
LANGUAGE plpgsql STABLE
SET work_mem = '64MB'
SET jit = off
AS $$
DECLARE
	v_tz	text;
	v_lo	timestamptz;
	v_hi	timestamptz;
	v_web	bigint[];
BEGIN
	SELECT timezone INTO v_tz FROM channels WHERE id = p_channel;
	v_lo := p_from::timestamp AT TIME ZONE v_tz;
	v_hi := (p_to + 1)::timestamp AT TIME ZONE v_tz;
	SELECT coalesce(array_agg(id), '{}') INTO v_web
	FROM acquisition_sources
	WHERE channel_id = p_channel AND kind = 'web'
	    AND (p_source IS NULL OR id = p_source);
	RETURN QUERY
	WITH t AS (
		SELECT t.source_id, count(*) AS touches,
		    count(*) FILTER (WHERE t.login_state = 'done')
			AS logged_in,
		    count(*) FILTER (WHERE t.follow_event_id IS NOT NULL)
			AS matched,
		    count(*) FILTER (WHERE t.login_state = 'none')
			AS without_login
		FROM acquisition_touches t
		WHERE t.channel_id = p_channel AND t.created_at >= v_lo
		    AND t.created_at < v_hi
		    AND (p_source IS NULL OR t.source_id = p_source)
		GROUP BY t.source_id
	), v AS (
		-- Unique visitors, for the site -> LINE funnel only (web
		-- sources): distinct (address hash, user agent), hashed.
		SELECT d.source_id, count(*) AS visitors
		FROM (SELECT DISTINCT t.source_id,
			hashtextextended(coalesce(t.ip_hash, '') || '|' ||
			coalesce(t.user_agent, ''), 0) AS h
		    FROM acquisition_touches t
		    WHERE t.channel_id = p_channel
			AND t.source_id = ANY (v_web)
			AND t.created_at >= v_lo AND t.created_at < v_hi) d
		GROUP BY d.source_id
	), c AS (
		SELECT c.source_id, sum(c.spend) AS spend,
		    sum(c.impressions) AS impressions,
		    sum(c.clicks) AS clicks, sum(c.reported_adds) AS adds
		FROM acquisition_costs c
		WHERE c.channel_id = p_channel
		    AND c.day BETWEEN p_from AND p_to
		GROUP BY c.source_id
	)
	SELECT s.id, coalesce(t.touches, 0), coalesce(v.visitors, 0),
	    coalesce(t.logged_in, 0), coalesce(t.matched, 0),
	    coalesce(t.without_login, 0), c.spend, c.impressions::bigint,
	    c.clicks::bigint, c.adds::bigint
	FROM acquisition_sources s
	LEFT JOIN t ON t.source_id = s.id
	LEFT JOIN v ON v.source_id = s.id
	LEFT JOIN c ON c.source_id = s.id
	WHERE s.channel_id = p_channel
	    AND (p_source IS NULL OR s.id = p_source);
END;
$$;

-- Compute the acquisition report of one channel into temp tables
-- (musubi_acq_rep: one row per line; see musubi_acq_report()).  Follows
-- and costs count by channel-local day in [p_from, p_to]; a source's
-- friends are the friends whose source follow (role 'source') falls in
-- the period; 'unattributed' is the first follows of friends without a
-- source.  Linked, orders and revenue come from the role rows' columns
-- (musubi_acq_orders_refresh, kept current by triggers).  Weeks and totals
-- are sums of the (source, day) groups.
CREATE FUNCTION musubi_acq_report_compute(p_channel bigint, p_from date,
	p_to date, p_source bigint)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
	CREATE TEMP TABLE IF NOT EXISTS musubi_acq_rd (source_id bigint,
	    day date, friends bigint, matched bigint, estimated bigint,
	    blocked_7d bigint, blocked_30d bigint, linked bigint,
	    purchasers bigint, purchasers_30d bigint, purchasers_60d bigint,
	    purchasers_90d bigint, orders bigint, orders_30d bigint,
	    orders_60d bigint, orders_90d bigint, revenue_30d numeric,
	    revenue_60d numeric, revenue_90d numeric, from_touch bigint,
	    from_touch_purchasers bigint) ON COMMIT DROP;
	CREATE TEMP TABLE IF NOT EXISTS musubi_acq_rep (section text,
	    source_id bigint, week date, friends bigint, matched bigint,
	    estimated bigint, blocked_7d bigint, blocked_30d bigint,
	    linked bigint, purchasers bigint, purchasers_30d bigint,
	    purchasers_60d bigint, purchasers_90d bigint, orders bigint,
	    orders_30d bigint, orders_60d bigint, orders_90d bigint,
	    revenue_30d numeric, revenue_60d numeric, revenue_90d numeric,
	    from_touch bigint, from_touch_purchasers bigint) ON COMMIT DROP;
	CREATE TEMP TABLE IF NOT EXISTS musubi_acq_rt (source_id bigint,
	    touches bigint, unique_visitors bigint, logged_in bigint,
	    matched bigint, without_login bigint, spend numeric,
	    impressions bigint, clicks bigint, reported_adds bigint)
	    ON COMMIT DROP;
	TRUNCATE musubi_acq_rd, musubi_acq_rep, musubi_acq_rt;

	INSERT INTO musubi_acq_rd
	SELECT * FROM musubi_acq_report_days(p_channel, p_from, p_to,
	    p_source);

	INSERT INTO musubi_acq_rep
	SELECT CASE WHEN grouping(d.source_id) = 1 THEN 'total'
		WHEN grouping(d.week) = 1 THEN 'source' ELSE 'cohort' END,
	    d.source_id, d.week, sum(d.friends), sum(d.matched),
	    sum(d.estimated), sum(d.blocked_7d), sum(d.blocked_30d),
	    sum(d.linked), sum(d.purchasers), sum(d.purchasers_30d),
	    sum(d.purchasers_60d), sum(d.purchasers_90d), sum(d.orders),
	    sum(d.orders_30d), sum(d.orders_60d), sum(d.orders_90d),
	    sum(d.revenue_30d), sum(d.revenue_60d), sum(d.revenue_90d),
	    sum(d.from_touch), sum(d.from_touch_purchasers)
	FROM (SELECT *, date_trunc('week', r.day)::date AS week
	    FROM musubi_acq_rd r) d
	GROUP BY GROUPING SETS ((d.source_id), (d.source_id, d.week), ());

	INSERT INTO musubi_acq_rt
	SELECT * FROM musubi_acq_report_touches(p_channel, p_from, p_to,
	    p_source);
END;
$$;

-- The metrics of one report line as JSON, from a musubi_acq_rep row (r)
-- and a musubi_acq_rt row (t), both as jsonb: money rounded to 2 places,
-- ratios to 4; a ratio over zero is null.
CREATE FUNCTION musubi_acq_metrics(r jsonb, t jsonb)
RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
	SELECT jsonb_build_object(
	    'friends', coalesce((r->>'friends')::bigint, 0),
	    'friends_matched', coalesce((r->>'matched')::bigint, 0),
	    'friends_estimated', coalesce((r->>'estimated')::bigint, 0),
	    'blocked_7d', coalesce((r->>'blocked_7d')::bigint, 0),
	    'blocked_30d', coalesce((r->>'blocked_30d')::bigint, 0),
	    'linked', coalesce((r->>'linked')::bigint, 0),
	    'purchasers', coalesce((r->>'purchasers')::bigint, 0),
	    'purchasers_30d', coalesce((r->>'purchasers_30d')::bigint, 0),
	    'purchasers_60d', coalesce((r->>'purchasers_60d')::bigint, 0),
	    'purchasers_90d', coalesce((r->>'purchasers_90d')::bigint, 0),
	    'orders', coalesce((r->>'orders')::bigint, 0),
	    'orders_30d', coalesce((r->>'orders_30d')::bigint, 0),
	    'orders_60d', coalesce((r->>'orders_60d')::bigint, 0),
	    'orders_90d', coalesce((r->>'orders_90d')::bigint, 0),
	    'revenue_30d', trim_scale(round(coalesce(
		(r->>'revenue_30d')::numeric, 0), 2)),
	    'revenue_60d', trim_scale(round(coalesce(
		(r->>'revenue_60d')::numeric, 0), 2)),
	    'revenue_90d', trim_scale(round(coalesce(
		(r->>'revenue_90d')::numeric, 0), 2)),
	    'touches', coalesce((t->>'touches')::bigint, 0),
	    'touches_logged_in', coalesce((t->>'logged_in')::bigint, 0),
	    'touches_matched', coalesce((t->>'matched')::bigint, 0),
	    'touches_without_login', coalesce((t->>'without_login')::bigint,
		0),
	    'spend', trim_scale(round((t->>'spend')::numeric, 2)),
	    'impressions', (t->>'impressions')::bigint,
	    'clicks', (t->>'clicks')::bigint,
	    'reported_adds', (t->>'reported_adds')::bigint,
	    'cpf', trim_scale(round((t->>'spend')::numeric /
		nullif((r->>'friends')::bigint, 0), 2)),
	    'cac', trim_scale(round((t->>'spend')::numeric /
		nullif((r->>'purchasers')::bigint, 0), 2)),
	    'roas_30d', trim_scale(round((r->>'revenue_30d')::numeric /
		nullif((t->>'spend')::numeric, 0), 4)),
	    'roas_60d', trim_scale(round((r->>'revenue_60d')::numeric /
		nullif((t->>'spend')::numeric, 0), 4)),
	    'roas_90d', trim_scale(round((r->>'revenue_90d')::numeric /
		nullif((t->>'spend')::numeric, 0), 4)),
	    'revenue_per_friend_90d', trim_scale(round(
		(r->>'revenue_90d')::numeric /
		nullif((r->>'friends')::bigint, 0), 2)));
$$;

-- The acquisition report as JSON: queued estimates of the channel are
-- brought up to date first.
CREATE FUNCTION musubi_acq_report(p_channel bigint, p_from date, p_to date,
	p_source bigint)
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
	v_out	jsonb;
	v_tz	text;
	v_cur	text;
	v_login	boolean;
BEGIN
	PERFORM musubi_acq_estimate_channel(p_channel);
	PERFORM musubi_acq_report_compute(p_channel, p_from, p_to, p_source);
	SELECT c.timezone, coalesce(st.currency, 'JPY'),
	    c.login_channel_id IS NOT NULL AND
	    coalesce(c.login_channel_secret, '') <> ''
	INTO v_tz, v_cur, v_login
	FROM channels c LEFT JOIN acquisition_settings st
	    ON st.channel_id = c.id
	WHERE c.id = p_channel;

	SELECT jsonb_build_object(
	    'from', p_from, 'to', p_to, 'timezone', v_tz, 'currency', v_cur,
	    'line_login', v_login,
	    'generated_at', to_char(now() AT TIME ZONE 'UTC',
		'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
	    'sources', coalesce((SELECT jsonb_agg(jsonb_build_object(
		'code', s.code, 'name', s.name, 'kind', s.kind,
		'in_app', s.in_app, 'active_from', s.active_from,
		'active_until', s.active_until,
		'attribution', CASE
		    WHEN coalesce(r.friends, 0) = 0 THEN 'none'
		    WHEN r.estimated = 0 THEN 'exact'
		    WHEN r.matched = 0 THEN 'estimated'
		    ELSE 'mixed' END,
		'notes', to_jsonb(array_remove(ARRAY[
		    CASE WHEN t.without_login > 0 THEN t.without_login ||
			' touches had no LINE Login and cannot be matched' END,
		    CASE WHEN coalesce(r.estimated, 0) > 0 THEN
			r.estimated || ' friends are estimated from ' ||
			'LINE-reported adds, not matched' END], NULL)))
		|| musubi_acq_metrics(to_jsonb(r), to_jsonb(t))
		ORDER BY s.id)
		FROM musubi_acq_rt t
		JOIN acquisition_sources s ON s.channel_id = p_channel
		    AND s.id = t.source_id
		LEFT JOIN musubi_acq_rep r ON r.section = 'source'
		    AND r.source_id = t.source_id), '[]'),
	    'unattributed', musubi_acq_metrics((SELECT to_jsonb(r)
		FROM musubi_acq_rep r
		WHERE r.section = 'source' AND r.source_id IS NULL), NULL)
		- ARRAY['spend', 'cpf', 'cac', 'roas_30d', 'roas_60d',
		'roas_90d', 'impressions', 'clicks', 'reported_adds',
		'touches', 'touches_logged_in',
		'touches_matched', 'touches_without_login'],
	    'total', musubi_acq_metrics((SELECT to_jsonb(r)
		FROM musubi_acq_rep r WHERE r.section = 'total'),
		(SELECT jsonb_build_object('touches', sum(t.touches),
		    'logged_in', sum(t.logged_in), 'matched', sum(t.matched),
		    'without_login', sum(t.without_login),
		    'spend', sum(t.spend),
		    'impressions', sum(t.impressions),
		    'clicks', sum(t.clicks),
		    'reported_adds', sum(t.reported_adds))
		FROM musubi_acq_rt t)),
	    'cohorts', coalesce((SELECT jsonb_agg(jsonb_build_object(
		'week', r.week, 'source', s.code,
		'estimated', r.estimated > 0,
		'friends', r.friends, 'friends_matched', r.matched,
		'friends_estimated', r.estimated,
		'blocked_7d', r.blocked_7d, 'blocked_30d', r.blocked_30d,
		'linked', r.linked, 'purchasers', r.purchasers,
		'orders_30d', r.orders_30d, 'orders_60d', r.orders_60d,
		'orders_90d', r.orders_90d,
		'revenue_30d', trim_scale(round(r.revenue_30d, 2)),
		'revenue_60d', trim_scale(round(r.revenue_60d, 2)),
		'revenue_90d', trim_scale(round(r.revenue_90d, 2)))
		ORDER BY r.week, s.id NULLS LAST)
		FROM musubi_acq_rep r
		LEFT JOIN acquisition_sources s ON s.channel_id = p_channel
		    AND s.id = r.source_id
		WHERE r.section = 'cohort'), '[]'),
	    'funnel', coalesce((SELECT jsonb_agg(jsonb_build_object(
		'source', s.code, 'kind', s.kind,
		'touches', t.touches, 'unique_visitors', t.unique_visitors,
		'logged_in', t.logged_in, 'followed', t.matched,
		'new_friends', coalesce(r.from_touch, 0),
		'purchasers', coalesce(r.from_touch_purchasers, 0))
		ORDER BY s.id)
		FROM musubi_acq_rt t
		JOIN acquisition_sources s ON s.channel_id = p_channel
		    AND s.id = t.source_id
		LEFT JOIN musubi_acq_rep r ON r.section = 'source'
		    AND r.source_id = t.source_id
		WHERE s.kind = 'web'), '[]'))
	INTO v_out;
	RETURN v_out;
END;
$$;

-- The acquisition report as CSV: p_table 'sources' (one line per source,
-- then unattributed and total), 'cohorts' or 'funnel'.
CREATE FUNCTION musubi_acq_report_csv(p_channel bigint, p_from date,
	p_to date, p_source bigint, p_table text)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
	v_rep	jsonb;
	v_cols	text[];
	v_rows	jsonb;
	v_out	text;
BEGIN
	v_rep := musubi_acq_report(p_channel, p_from, p_to, p_source);
	IF p_table = 'cohorts' THEN
		v_cols := ARRAY['week', 'source', 'estimated', 'friends',
		    'friends_matched', 'friends_estimated', 'blocked_7d',
		    'blocked_30d', 'linked', 'purchasers', 'orders_30d',
		    'orders_60d', 'orders_90d', 'revenue_30d', 'revenue_60d',
		    'revenue_90d'];
		v_rows := v_rep->'cohorts';
	ELSIF p_table = 'funnel' THEN
		v_cols := ARRAY['source', 'kind', 'touches',
		    'unique_visitors', 'logged_in', 'followed', 'new_friends',
		    'purchasers'];
		v_rows := v_rep->'funnel';
	ELSE
		v_cols := ARRAY['code', 'name', 'kind', 'in_app',
		    'attribution', 'touches', 'touches_logged_in',
		    'touches_matched',
		    'touches_without_login', 'friends', 'friends_matched',
		    'friends_estimated', 'blocked_7d', 'blocked_30d',
		    'linked', 'purchasers', 'purchasers_30d',
		    'purchasers_60d', 'purchasers_90d', 'orders',
		    'orders_30d', 'orders_60d', 'orders_90d', 'revenue_30d',
		    'revenue_60d', 'revenue_90d', 'spend', 'currency',
		    'impressions', 'clicks', 'reported_adds', 'cpf', 'cac',
		    'roas_30d', 'roas_60d', 'roas_90d',
		    'revenue_per_friend_90d'];
		v_rows := (SELECT coalesce(jsonb_agg(e || jsonb_build_object(
		    'currency', v_rep->'currency')), '[]')
		    FROM jsonb_array_elements(v_rep->'sources') e)
		    || jsonb_build_array(v_rep->'unattributed' ||
			jsonb_build_object('code', '(unattributed)',
			'attribution', 'none'))
		    || jsonb_build_array(v_rep->'total' ||
			jsonb_build_object('code', '(total)',
			'currency', v_rep->'currency'));
	END IF;
	SELECT array_to_string(v_cols, ',') || E'\r\n' ||
	    coalesce(string_agg((SELECT string_agg(musubi_csv(
		CASE jsonb_typeof(e.j->c.col) WHEN 'null' THEN NULL
		ELSE e.j->>c.col END), ',' ORDER BY c.n)
		FROM unnest(v_cols) WITH ORDINALITY AS c(col, n)) || E'\r\n',
		'' ORDER BY e.n), '')
	INTO v_out
	FROM jsonb_array_elements(v_rows) WITH ORDINALITY AS e(j, n);
	RETURN v_out;
END;
$$;
