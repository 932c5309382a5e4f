-- 003_shops: shops, their purchase webhooks, and the order ledger.
--
-- A channel has shops (Shopify, WooCommerce, or musubi's generic format).
-- ec_webhook_events is their inbox: a verified delivery is committed there
-- (deduplicated on the platform's delivery id) before the shop gets its 200.
-- musubid parses each delivery into a normalized document (doc) before it
-- is stored, so nothing below knows a platform's payload; the verbatim
-- body is kept beside it (payload, type json, exact bytes) for audits and
-- reprocessing.  musubi_ec_apply() claims pending rows with FOR UPDATE SKIP
-- LOCKED and, in one transaction, upserts customers, orders, items and
-- refunds, rewrites the ledger of every order it touched and recomputes the
-- rollups of every customer and friend those orders belong to.
--
-- The ledger is a function of what is known about an order, not a log of
-- arrivals: for each order it holds a sale (+gross, dated when the order
-- was placed), one refund per refund (-amount, dated on the refund), an
-- adjust (the platform's current net minus what sale and the refunds it
-- reports explain: order edits), and a cancel (-what is left, dated when
-- cancelled).  Rows are keyed (order, kind, ref) and rewritten in place, so
-- replays and shuffled deliveries converge on the same rows.  An order
-- counts only once paid, and never when it is a test, deleted, or in a
-- currency other than its shop's; see orders.revenue_state.
--
-- Every table carries channel_id (Citus: distribute by it).  shops is small
-- and looked up by slug from webhook URLs: a reference table.

CREATE TABLE shops (
	channel_id		bigint NOT NULL REFERENCES channels (id)
				ON DELETE CASCADE,
	id			bigint GENERATED ALWAYS AS IDENTITY,
	-- globally unique: webhook URLs name the shop, not the channel
	slug			text NOT NULL UNIQUE
				CHECK (slug ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
	name			text NOT NULL
				CHECK (length(name) BETWEEN 1 AND 200),
	platform		text NOT NULL CHECK (platform IN ('shopify',
				'woocommerce', 'generic')),
	-- write-only through the API; both verify during a rotation
	webhook_secret		text NOT NULL,
	previous_webhook_secret	text,
	secret_rotated_at	timestamptz,
	-- every amount of the shop is in this currency (ISO 4217)
	currency		text NOT NULL DEFAULT 'JPY'
				CHECK (currency ~ '^[A-Z]{3}$'),
	-- Shopify: deliveries must name it in X-Shopify-Shop-Domain
	shop_domain		text,
	created_at		timestamptz NOT NULL DEFAULT now(),
	updated_at		timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (channel_id, id)
);
CREATE INDEX shops_channel ON shops (channel_id, slug);

CREATE TABLE ec_webhook_events (
	channel_id	bigint NOT NULL,
	id		bigint GENERATED ALWAYS AS IDENTITY,
	shop_id		bigint NOT NULL,
	platform	text NOT NULL,
	topic		text NOT NULL,
	-- X-Shopify-Webhook-Id, X-WC-Webhook-Delivery-ID, the generic
	-- event_id; "h:" + SHA-256 of topic and body when there is none
	delivery_id	text NOT NULL,
	-- X-Shopify-Event-Id (one event, several subscriptions)
	event_id	text,
	-- X-Shopify-Triggered-At
	triggered_at	timestamptz,
	request_id	text,
	received_at	timestamptz NOT NULL DEFAULT now(),
	-- order | refund | delete | ignored | invalid
	kind		text NOT NULL,
	-- external id of the order, refund or deleted order
	entity_id	text,
	-- the body exactly as received (lz4: half the insert cost of pglz)
	payload		json COMPRESSION lz4 NOT NULL,
	-- the normalized event (NULL when rejected or ignored)
	doc		jsonb COMPRESSION lz4,
	-- 0 pending, 1 applied, 2 rejected (see problem), 3 ignored
	state		smallint NOT NULL DEFAULT 0,
	problem		text,
	applied_at	timestamptz,
	PRIMARY KEY (channel_id, id),
	UNIQUE (channel_id, shop_id, delivery_id),
	FOREIGN KEY (channel_id, shop_id) REFERENCES shops (channel_id, id)
		ON DELETE CASCADE
);
CREATE INDEX ec_webhook_events_pending ON ec_webhook_events (id)
	WHERE state = 0;
CREATE INDEX ec_webhook_events_shop ON ec_webhook_events (channel_id,
	shop_id, id);

-- A shop's customer.  external_id is the platform's customer id, or
-- "guest:" + the email hash for guest checkouts that give an email.
-- Contact data is kept only as hashes (see ec.h, ec_email_hash()).
CREATE TABLE customers (
	channel_id	bigint NOT NULL,
	id		bigint GENERATED ALWAYS AS IDENTITY,
	shop_id		bigint NOT NULL,
	external_id	text NOT NULL,
	guest		boolean NOT NULL DEFAULT false,
	email_hash	text,
	phone_hash	text,
	first_name	text,
	last_name	text,
	-- the order snapshot the fields came from (newest wins)
	src_updated_at	timestamptz,
	src_hash	text,
	created_at	timestamptz NOT NULL DEFAULT now(),
	updated_at	timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (channel_id, id),
	UNIQUE (channel_id, shop_id, external_id),
	FOREIGN KEY (channel_id, shop_id) REFERENCES shops (channel_id, id)
		ON DELETE CASCADE
);
CREATE INDEX customers_email ON customers (channel_id, email_hash)
	WHERE email_hash IS NOT NULL;
CREATE INDEX customers_phone ON customers (channel_id, phone_hash)
	WHERE phone_hash IS NOT NULL;

CREATE TABLE orders (
	channel_id		bigint NOT NULL,
	id			bigint GENERATED ALWAYS AS IDENTITY,
	shop_id			bigint NOT NULL,
	-- exact: Shopify ids exceed 2^53 and never pass through a double
	external_id		text NOT NULL,
	order_number		text,
	customer_id		bigint,
	currency		text,
	presentment_currency	text,
	-- the platform's words: Shopify open/closed/cancelled, WooCommerce
	-- processing/completed/..., generic as sent
	status			text,
	financial_status	text,
	cancel_reason		text,
	source_name		text,
	test			boolean NOT NULL DEFAULT false,
	placed_at		timestamptz,
	-- first time any snapshot showed it paid; NULL = never paid
	paid_at			timestamptz,
	cancelled_at		timestamptz,
	deleted_at		timestamptz,
	-- total at creation, and the platform's current net total
	gross			numeric(19,6),
	current_total		numeric(19,6),
	landing_site		text,
	referring_site		text,
	-- musubi_t from note_attributes or landing_site, verbatim;
	-- verified by the tracking module
	attribution_token	text,
	note_attributes		jsonb,
	-- refund ids the snapshot's current_total already reflects
	embedded_refunds	text[] NOT NULL DEFAULT '{}',
	flags			text[] NOT NULL DEFAULT '{}',
	-- counted | unpaid | cancelled_unpaid | test | deleted |
	-- currency_mismatch | no_order (a deletion seen before the order)
	revenue_state		text NOT NULL DEFAULT 'no_order',
	-- sum of the order's ledger rows
	net			numeric(19,6) NOT NULL DEFAULT 0,
	-- the snapshot the fields came from: newest updated_at wins, then
	-- the more advanced (cancelled 2 + paid 1), then the larger hash
	src_updated_at		timestamptz,
	src_progress		smallint,
	src_hash		text,
	created_at		timestamptz NOT NULL DEFAULT now(),
	updated_at		timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (channel_id, id),
	UNIQUE (channel_id, shop_id, external_id),
	FOREIGN KEY (channel_id, shop_id) REFERENCES shops (channel_id, id)
		ON DELETE CASCADE,
	FOREIGN KEY (channel_id, customer_id) REFERENCES customers
		(channel_id, id) ON DELETE SET NULL (customer_id)
);
CREATE INDEX orders_customer ON orders (channel_id, customer_id, placed_at);
CREATE INDEX orders_placed ON orders (channel_id, placed_at);
CREATE INDEX orders_token ON orders (channel_id, attribution_token)
	WHERE attribution_token IS NOT NULL;

CREATE TABLE order_items (
	channel_id	bigint NOT NULL,
	order_id	bigint NOT NULL,
	position	integer NOT NULL,
	line_id		text,
	product_id	text,
	variant_id	text,
	sku		text,
	title		text,
	vendor		text,
	quantity	integer NOT NULL,
	-- unit price, and the line total after its discounts
	price		numeric(19,6) NOT NULL,
	total		numeric(19,6) NOT NULL,
	PRIMARY KEY (channel_id, order_id, position),
	FOREIGN KEY (channel_id, order_id) REFERENCES orders (channel_id, id)
		ON DELETE CASCADE
);
CREATE INDEX order_items_product ON order_items (channel_id, product_id);

-- A refund is stored when it arrives, even before its order: order_id
-- stays NULL until the order is known, then the refund joins its ledger.
CREATE TABLE refunds (
	channel_id		bigint NOT NULL,
	id			bigint GENERATED ALWAYS AS IDENTITY,
	shop_id			bigint NOT NULL,
	external_id		text NOT NULL,
	order_external_id	text NOT NULL,
	order_id		bigint,
	-- money returned, >= 0, in the shop currency
	amount			numeric(19,6) NOT NULL,
	created_at		timestamptz NOT NULL,
	-- created_at is a stand-in (WooCommerce refunds carry no date: the
	-- earliest date_modified of an order snapshot listing the refund)
	at_estimated		boolean NOT NULL DEFAULT false,
	-- webhook (a refund delivery) or embedded (listed in an order);
	-- a webhook's figures win
	source			text NOT NULL,
	note			text,
	items			jsonb NOT NULL DEFAULT '[]',
	flags			text[] NOT NULL DEFAULT '{}',
	stored_at		timestamptz NOT NULL DEFAULT now(),
	updated_at		timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (channel_id, id),
	UNIQUE (channel_id, shop_id, external_id),
	FOREIGN KEY (channel_id, shop_id) REFERENCES shops (channel_id, id)
		ON DELETE CASCADE,
	FOREIGN KEY (channel_id, order_id) REFERENCES orders (channel_id, id)
		ON DELETE CASCADE
);
CREATE INDEX refunds_order ON refunds (channel_id, order_id);
CREATE INDEX refunds_waiting ON refunds (channel_id, shop_id,
	order_external_id) WHERE order_id IS NULL;

-- Signed adjustments.  The sum over an order is its net value; over a
-- customer, the customer's net revenue.
CREATE TABLE ledger (
	channel_id	bigint NOT NULL,
	id		bigint GENERATED ALWAYS AS IDENTITY,
	shop_id		bigint NOT NULL,
	order_id	bigint NOT NULL,
	customer_id	bigint,
	kind		text NOT NULL CHECK (kind IN ('sale', 'refund',
			'cancel', 'adjust')),
	-- the refund's external id for refunds, '' otherwise
	ref		text NOT NULL DEFAULT '',
	amount		numeric(19,6) NOT NULL,
	at		timestamptz NOT NULL,
	created_at	timestamptz NOT NULL DEFAULT now(),
	updated_at	timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (channel_id, id),
	UNIQUE (channel_id, order_id, kind, ref),
	FOREIGN KEY (channel_id, order_id) REFERENCES orders (channel_id, id)
		ON DELETE CASCADE
);
CREATE INDEX ledger_customer ON ledger (channel_id, customer_id);
CREATE INDEX ledger_at ON ledger (channel_id, at);

-- Which LINE friend a customer is.  Filled by the identity module (method:
-- account_link, line_login, tracking_token, api); kept with history.  A
-- customer links to one friend per channel at a time; a friend may have
-- several customers (shops, accounts).  After changing links, call
-- musubi_ec_refresh() in the same transaction.
CREATE TABLE friend_customer_links (
	channel_id	bigint NOT NULL,
	id		bigint GENERATED ALWAYS AS IDENTITY,
	friend_id	bigint NOT NULL,
	customer_id	bigint NOT NULL,
	method		text NOT NULL CHECK (length(method) BETWEEN 1 AND 32),
	linked_at	timestamptz NOT NULL DEFAULT now(),
	unlinked_at	timestamptz,
	PRIMARY KEY (channel_id, id),
	FOREIGN KEY (channel_id, friend_id) REFERENCES friends (channel_id, id)
		ON DELETE CASCADE,
	FOREIGN KEY (channel_id, customer_id) REFERENCES customers
		(channel_id, id) ON DELETE CASCADE
);
CREATE UNIQUE INDEX friend_customer_links_current ON friend_customer_links
	(channel_id, customer_id) WHERE unlinked_at IS NULL;
CREATE INDEX friend_customer_links_friend ON friend_customer_links
	(channel_id, friend_id) WHERE unlinked_at IS NULL;

-- Rollups, recomputed from the ledger in the transaction that changes it.
-- orders_count counts orders still worth more than zero; first/last
-- purchase are the placed_at of those orders; net_revenue is the sum of
-- every counted order's ledger; aov = net_revenue / orders_count.  rfm_*
-- are 1-5 quintiles per channel, set by musubi_ec_rfm() (NULL without
-- purchases or before its first run).
CREATE TABLE customer_stats (
	channel_id		bigint NOT NULL,
	customer_id		bigint NOT NULL,
	orders_count		integer NOT NULL DEFAULT 0,
	net_revenue		numeric(19,6) NOT NULL DEFAULT 0,
	first_purchase_at	timestamptz,
	last_purchase_at	timestamptz,
	aov			numeric(19,2),
	rfm_r			smallint,
	rfm_f			smallint,
	rfm_m			smallint,
	rfm_at			timestamptz,
	updated_at		timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (channel_id, customer_id),
	FOREIGN KEY (channel_id, customer_id) REFERENCES customers
		(channel_id, id) ON DELETE CASCADE
);

-- The same over every customer currently linked to the friend.  clicks,
-- visits and their times belong to the tracking module; the rollup never
-- writes them.
CREATE TABLE friend_stats (
	channel_id		bigint NOT NULL,
	friend_id		bigint NOT NULL,
	orders_count		integer NOT NULL DEFAULT 0,
	net_revenue		numeric(19,6) NOT NULL DEFAULT 0,
	first_purchase_at	timestamptz,
	last_purchase_at	timestamptz,
	aov			numeric(19,2),
	rfm_r			smallint,
	rfm_f			smallint,
	rfm_m			smallint,
	rfm_at			timestamptz,
	clicks			bigint NOT NULL DEFAULT 0,
	visits			bigint NOT NULL DEFAULT 0,
	last_click_at		timestamptz,
	last_visit_at		timestamptz,
	updated_at		timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (channel_id, friend_id),
	FOREIGN KEY (channel_id, friend_id) REFERENCES friends (channel_id, id)
		ON DELETE CASCADE
);

-- Recompute the purchase rollups of the given customers and friends, and
-- of the friends those customers are linked to now.  The arrays pair up:
-- (channels[i], customers[i]) and (fchannels[i], friends[i]); NULL ids are
-- skipped.  The identity module calls it after linking or unlinking (pass
-- the friend that lost a customer, since the link no longer leads there).
CREATE FUNCTION musubi_ec_rollup(p_channels bigint[],
	p_customers bigint[], p_fchannels bigint[], p_friends bigint[])
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
	WITH c AS (
		SELECT DISTINCT t.ch, t.cu
		FROM unnest(p_channels, p_customers) AS t(ch, cu)
		WHERE t.cu IS NOT NULL
	), po AS (
		SELECT l.channel_id, l.customer_id, l.order_id,
		    sum(l.amount) AS net,
		    min(l.at) FILTER (WHERE l.kind = 'sale') AS placed
		FROM c JOIN ledger l ON l.channel_id = c.ch
		    AND l.customer_id = c.cu
		GROUP BY 1, 2, 3
	), agg AS (
		SELECT c.ch, c.cu,
		    count(po.order_id) FILTER (WHERE po.net > 0) AS n,
		    coalesce(sum(po.net), 0) AS net,
		    min(po.placed) FILTER (WHERE po.net > 0) AS first_at,
		    max(po.placed) FILTER (WHERE po.net > 0) AS last_at
		FROM c LEFT JOIN po ON po.channel_id = c.ch
		    AND po.customer_id = c.cu
		GROUP BY 1, 2
	)
	INSERT INTO customer_stats AS s (channel_id, customer_id,
	    orders_count, net_revenue, first_purchase_at, last_purchase_at,
	    aov)
	SELECT a.ch, a.cu, a.n, a.net, a.first_at, a.last_at,
	    CASE WHEN a.n > 0 THEN round(a.net / a.n, 2) END
	FROM agg a
	WHERE EXISTS (SELECT 1 FROM customers x
	    WHERE x.channel_id = a.ch AND x.id = a.cu)
	ON CONFLICT (channel_id, customer_id) DO UPDATE
	SET orders_count = excluded.orders_count,
	    net_revenue = excluded.net_revenue,
	    first_purchase_at = excluded.first_purchase_at,
	    last_purchase_at = excluded.last_purchase_at,
	    aov = excluded.aov,
	    rfm_r = CASE WHEN excluded.orders_count = 0 THEN NULL
		ELSE s.rfm_r END,
	    rfm_f = CASE WHEN excluded.orders_count = 0 THEN NULL
		ELSE s.rfm_f END,
	    rfm_m = CASE WHEN excluded.orders_count = 0 THEN NULL
		ELSE s.rfm_m END,
	    updated_at = now()
	WHERE (s.orders_count, s.net_revenue, s.first_purchase_at,
	    s.last_purchase_at, s.aov) IS DISTINCT FROM
	    (excluded.orders_count, excluded.net_revenue,
	    excluded.first_purchase_at, excluded.last_purchase_at,
	    excluded.aov);

	WITH f AS (
		SELECT DISTINCT t.ch, t.fr
		FROM unnest(p_fchannels, p_friends) AS t(ch, fr)
		WHERE t.fr IS NOT NULL
		UNION
		SELECT k.channel_id, k.friend_id
		FROM unnest(p_channels, p_customers) AS t(ch, cu)
		JOIN friend_customer_links k ON k.channel_id = t.ch
		    AND k.customer_id = t.cu AND k.unlinked_at IS NULL
	), po AS (
		SELECT f.ch, f.fr, l.order_id, sum(l.amount) AS net,
		    min(l.at) FILTER (WHERE l.kind = 'sale') AS placed
		FROM f
		JOIN friend_customer_links k ON k.channel_id = f.ch
		    AND k.friend_id = f.fr AND k.unlinked_at IS NULL
		JOIN ledger l ON l.channel_id = k.channel_id
		    AND l.customer_id = k.customer_id
		GROUP BY 1, 2, 3
	), agg AS (
		SELECT f.ch, f.fr,
		    count(po.order_id) FILTER (WHERE po.net > 0) AS n,
		    coalesce(sum(po.net), 0) AS net,
		    min(po.placed) FILTER (WHERE po.net > 0) AS first_at,
		    max(po.placed) FILTER (WHERE po.net > 0) AS last_at
		FROM f LEFT JOIN po ON po.ch = f.ch AND po.fr = f.fr
		GROUP BY 1, 2
	)
	INSERT INTO friend_stats AS s (channel_id, friend_id, orders_count,
	    net_revenue, first_purchase_at, last_purchase_at, aov)
	SELECT a.ch, a.fr, a.n, a.net, a.first_at, a.last_at,
	    CASE WHEN a.n > 0 THEN round(a.net / a.n, 2) END
	FROM agg a
	WHERE EXISTS (SELECT 1 FROM friends x
	    WHERE x.channel_id = a.ch AND x.id = a.fr)
	ON CONFLICT (channel_id, friend_id) DO UPDATE
	SET orders_count = excluded.orders_count,
	    net_revenue = excluded.net_revenue,
	    first_purchase_at = excluded.first_purchase_at,
	    last_purchase_at = excluded.last_purchase_at,
	    aov = excluded.aov,
	    rfm_r = CASE WHEN excluded.orders_count = 0 THEN NULL
		ELSE s.rfm_r END,
	    rfm_f = CASE WHEN excluded.orders_count = 0 THEN NULL
		ELSE s.rfm_f END,
	    rfm_m = CASE WHEN excluded.orders_count = 0 THEN NULL
		ELSE s.rfm_m END,
	    updated_at = now()
	WHERE (s.orders_count, s.net_revenue, s.first_purchase_at,
	    s.last_purchase_at, s.aov) IS DISTINCT FROM
	    (excluded.orders_count, excluded.net_revenue,
	    excluded.first_purchase_at, excluded.last_purchase_at,
	    excluded.aov);
END;
$$;

-- The identity module's entry point: recompute after a link change.  Takes
-- the apply lock (waiting for a running musubi_ec_apply to finish), so the
-- rollups it writes never race the applier's.
CREATE FUNCTION musubi_ec_refresh(p_channel bigint, p_customers bigint[],
	p_friends bigint[])
RETURNS void
LANGUAGE plpgsql
SET jit = off
SET plan_cache_mode = force_custom_plan
AS $$
BEGIN
	PERFORM pg_advisory_xact_lock(109117115101099);
	PERFORM musubi_ec_rollup(
	    array_fill(p_channel, ARRAY[coalesce(cardinality(p_customers),
		0)]),
	    coalesce(p_customers, '{}'),
	    array_fill(p_channel, ARRAY[coalesce(cardinality(p_friends),
		0)]),
	    coalesce(p_friends, '{}'));
END;
$$;

-- Rewrite the ledger of the given orders (paired arrays) from what is known
-- about them, set their revenue_state and net, and recompute the rollups of
-- every customer whose ledger changed (the old and the new owner when an
-- order changes hands).  Internal to musubi_ec_apply, which creates the
-- work tables.
CREATE FUNCTION musubi_ec_ledger(p_channels bigint[], p_orders bigint[])
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
	cch	bigint[];
	ccu	bigint[];
BEGIN
	TRUNCATE musubi_ec_lo, musubi_ec_lr;

	INSERT INTO musubi_ec_lo
	SELECT o.channel_id, o.id, o.shop_id, o.customer_id,
	    CASE
	    WHEN o.src_hash IS NULL THEN 'no_order'
	    WHEN o.deleted_at IS NOT NULL THEN 'deleted'
	    WHEN o.test THEN 'test'
	    WHEN o.currency IS DISTINCT FROM s.currency
	      THEN 'currency_mismatch'
	    WHEN o.paid_at IS NULL AND o.cancelled_at IS NOT NULL
	      THEN 'cancelled_unpaid'
	    WHEN o.paid_at IS NULL THEN 'unpaid'
	    ELSE 'counted'
	    END,
	    o.placed_at, o.cancelled_at, coalesce(o.src_updated_at,
	    o.placed_at), o.gross, o.current_total, o.embedded_refunds
	FROM (SELECT DISTINCT t.ch, t.oid
	    FROM unnest(p_channels, p_orders) AS t(ch, oid)) t
	JOIN orders o ON o.channel_id = t.ch AND o.id = t.oid
	JOIN shops s ON s.channel_id = o.channel_id AND s.id = o.shop_id;
	ANALYZE musubi_ec_lo;

	-- sale, refunds, adjust, cancel of every order that counts.  A
	-- refund known only from an order's list, and missing from a newer
	-- snapshot of that order, was deleted (WooCommerce allows it).
	WITH r AS (
		SELECT lo.channel_id, lo.order_id, r.external_id, r.amount,
		    r.created_at, r.external_id = ANY (lo.embedded) AS emb
		FROM musubi_ec_lo lo
		JOIN refunds r ON r.channel_id = lo.channel_id
		    AND r.order_id = lo.order_id
		WHERE lo.state = 'counted'
		    AND (r.source = 'webhook' OR r.external_id = ANY (lo.embedded)
			OR r.created_at >= lo.snap_at)
	), rs AS (
		SELECT lo.channel_id, lo.order_id,
		    coalesce(sum(r.amount), 0) AS refunded,
		    coalesce(sum(r.amount) FILTER (WHERE r.emb), 0) AS embedded
		FROM musubi_ec_lo lo
		LEFT JOIN r ON r.channel_id = lo.channel_id
		    AND r.order_id = lo.order_id
		WHERE lo.state = 'counted'
		GROUP BY 1, 2
	), x AS (
		SELECT lo.*, rs.refunded,
		    lo.current_total - lo.gross + rs.embedded AS adjust
		FROM musubi_ec_lo lo
		JOIN rs ON rs.channel_id = lo.channel_id
		    AND rs.order_id = lo.order_id
	)
	INSERT INTO musubi_ec_lr
	SELECT x.channel_id, x.order_id, x.shop_id, x.customer_id, 'sale', '',
	    x.gross, x.placed_at
	FROM x
	UNION ALL
	SELECT x.channel_id, x.order_id, x.shop_id, x.customer_id, 'adjust',
	    '', x.adjust, x.snap_at
	FROM x WHERE x.adjust <> 0
	UNION ALL
	SELECT x.channel_id, x.order_id, x.shop_id, x.customer_id, 'cancel',
	    '', -(x.gross + x.adjust - x.refunded), x.cancelled_at
	FROM x WHERE x.cancelled_at IS NOT NULL
	    AND x.gross + x.adjust - x.refunded > 0
	UNION ALL
	SELECT lo.channel_id, lo.order_id, lo.shop_id, lo.customer_id,
	    'refund', r.external_id, -r.amount, r.created_at
	FROM r JOIN musubi_ec_lo lo ON lo.channel_id = r.channel_id
	    AND lo.order_id = r.order_id;
	ANALYZE musubi_ec_lr;

	-- customers whose ledger changes: the owners before and after
	SELECT array_agg(ch), array_agg(cu) INTO cch, ccu FROM (
		SELECT DISTINCT l.channel_id AS ch, l.customer_id AS cu
		FROM musubi_ec_lo lo
		JOIN ledger l ON l.channel_id = lo.channel_id
		    AND l.order_id = lo.order_id
		WHERE l.customer_id IS NOT NULL
		UNION
		SELECT lo.channel_id, lo.customer_id
		FROM musubi_ec_lo lo
		WHERE lo.customer_id IS NOT NULL) c;

	DELETE FROM ledger l
	USING musubi_ec_lo lo
	WHERE l.channel_id = lo.channel_id AND l.order_id = lo.order_id
	    AND NOT EXISTS (SELECT 1 FROM musubi_ec_lr d
		WHERE d.channel_id = l.channel_id AND d.order_id = l.order_id
		AND d.kind = l.kind AND d.ref = l.ref);

	INSERT INTO ledger AS l (channel_id, shop_id, order_id, customer_id,
	    kind, ref, amount, at)
	SELECT d.channel_id, d.shop_id, d.order_id, d.customer_id, d.kind,
	    d.ref, d.amount, d.at
	FROM musubi_ec_lr d
	ON CONFLICT (channel_id, order_id, kind, ref) DO UPDATE
	SET amount = excluded.amount, at = excluded.at,
	    customer_id = excluded.customer_id, updated_at = now()
	WHERE (l.amount, l.at, l.customer_id) IS DISTINCT FROM
	    (excluded.amount, excluded.at, excluded.customer_id);

	WITH n AS (
		SELECT d.channel_id, d.order_id, sum(d.amount) AS net
		FROM musubi_ec_lr d GROUP BY 1, 2
	)
	UPDATE orders o
	SET revenue_state = lo.state, net = coalesce(n.net, 0),
	    updated_at = now()
	FROM musubi_ec_lo lo
	LEFT JOIN n ON n.channel_id = lo.channel_id
	    AND n.order_id = lo.order_id
	WHERE o.channel_id = lo.channel_id AND o.id = lo.order_id
	    AND (o.revenue_state, o.net) IS DISTINCT FROM
		(lo.state, coalesce(n.net, 0));

	PERFORM musubi_ec_rollup(coalesce(cch, '{}'), coalesce(ccu, '{}'),
	    '{}', '{}');
END;
$$;

-- Apply the normalized events in musubi_ec_work (internal to
-- musubi_ec_apply, which fills it and creates the work tables).  Set-based:
-- every statement handles the whole batch.
CREATE FUNCTION musubi_ec_apply_work()
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
	v_ch	bigint[];
	v_ord	bigint[];
BEGIN
	TRUNCATE musubi_ec_snap, musubi_ec_best, musubi_ec_touched;

	-- Order snapshots of the batch, with their ranking key.
	INSERT INTO musubi_ec_snap
	SELECT w.channel_id, w.shop_id, w.ord,
	    (w.doc->'order'->>'updated_at')::timestamptz,
	    (CASE WHEN w.doc->'order'->>'cancelled_at' IS NOT NULL
		THEN 2 ELSE 0 END +
	     CASE WHEN w.doc->'order'->>'paid_at' IS NOT NULL
		THEN 1 ELSE 0 END)::smallint,
	    md5(w.doc::text),
	    (w.doc->'order'->>'paid_at')::timestamptz,
	    w.doc->'order', w.doc->'order'->'customer'->>'key'
	FROM musubi_ec_work w
	WHERE w.kind = 'order';
	ANALYZE musubi_ec_snap;

	-- Customers: the newest snapshot naming each one sets its fields.
	INSERT INTO customers AS c (channel_id, shop_id, external_id, guest,
	    email_hash, phone_hash, first_name, last_name, src_updated_at,
	    src_hash)
	SELECT DISTINCT ON (s.channel_id, s.shop_id, s.ckey)
	    s.channel_id, s.shop_id, s.ckey,
	    s.o->'customer'->>'id' IS NULL,
	    s.o->'customer'->>'email_hash', s.o->'customer'->>'phone_hash',
	    s.o->'customer'->>'first_name', s.o->'customer'->>'last_name',
	    s.updated_at, s.hash
	FROM musubi_ec_snap s
	WHERE s.ckey IS NOT NULL
	ORDER BY s.channel_id, s.shop_id, s.ckey,
	    s.updated_at DESC NULLS LAST, s.hash DESC
	ON CONFLICT (channel_id, shop_id, external_id) DO UPDATE
	SET guest = excluded.guest, email_hash = excluded.email_hash,
	    phone_hash = excluded.phone_hash,
	    first_name = excluded.first_name, last_name = excluded.last_name,
	    src_updated_at = excluded.src_updated_at,
	    src_hash = excluded.src_hash, updated_at = now()
	WHERE (coalesce(excluded.src_updated_at, '-infinity'),
	    excluded.src_hash) > (coalesce(c.src_updated_at, '-infinity'),
	    coalesce(c.src_hash, ''));

	-- The batch's newest snapshot of each order, and the first time
	-- any of them said it was paid.
	INSERT INTO musubi_ec_best
	SELECT DISTINCT ON (s.channel_id, s.shop_id, s.ext) s.*,
	    min(s.paid_at) OVER (PARTITION BY s.channel_id, s.shop_id, s.ext)
	FROM musubi_ec_snap s
	ORDER BY s.channel_id, s.shop_id, s.ext,
	    s.updated_at DESC NULLS LAST, s.progress DESC, s.hash DESC;
	ANALYZE musubi_ec_best;

	-- Orders: new ones are inserted; a stored one takes the batch's
	-- newest snapshot only if it is newer than the one it holds.  Both
	-- get the revenue_state and net the ledger will give them when no
	-- other refund is waiting, so that musubi_ec_ledger() rarely has to
	-- write the row a second time.
	WITH v AS (
		SELECT b.channel_id, b.shop_id, b.ext, b.updated_at,
		    b.progress, b.hash, b.paid_min, x.*,
		    ARRAY(SELECT e->>'id' FROM jsonb_array_elements(x.refunds)
			e) AS embedded,
		    ARRAY(SELECT jsonb_array_elements_text(x.flags))
			AS flag_list,
		    cu.id AS customer_id,
		    CASE
		    WHEN x.test THEN 'test'
		    WHEN x.currency IS DISTINCT FROM sh.currency
		      THEN 'currency_mismatch'
		    WHEN b.paid_min IS NULL AND x.cancelled_at IS NOT NULL
		      THEN 'cancelled_unpaid'
		    WHEN b.paid_min IS NULL THEN 'unpaid'
		    ELSE 'counted'
		    END AS state
		FROM musubi_ec_best b
		CROSS JOIN LATERAL jsonb_to_record(b.o) AS x("number" text,
		    currency text, presentment_currency text, status text,
		    financial_status text, cancel_reason text,
		    source_name text, test boolean, restored boolean,
		    placed_at timestamptz, cancelled_at timestamptz,
		    gross numeric, current_total numeric, landing_site text,
		    referring_site text, attribution_token text,
		    note_attributes jsonb, refunds jsonb, flags jsonb)
		JOIN shops sh ON sh.channel_id = b.channel_id
		    AND sh.id = b.shop_id
		LEFT JOIN customers cu ON cu.channel_id = b.channel_id
		    AND cu.shop_id = b.shop_id AND cu.external_id = b.ckey
	), ins AS (
		INSERT INTO orders AS o (channel_id, shop_id, external_id,
		    order_number, customer_id, currency, presentment_currency,
		    status, financial_status, cancel_reason, source_name, test,
		    placed_at, paid_at, cancelled_at, gross, current_total,
		    landing_site, referring_site, attribution_token,
		    note_attributes, embedded_refunds, flags, src_updated_at,
		    src_progress, src_hash, revenue_state, net)
		SELECT v.channel_id, v.shop_id, v.ext, v."number",
		    v.customer_id, v.currency, v.presentment_currency,
		    v.status, v.financial_status, v.cancel_reason,
		    v.source_name, v.test, v.placed_at, v.paid_min,
		    v.cancelled_at, v.gross, v.current_total, v.landing_site,
		    v.referring_site, v.attribution_token, v.note_attributes,
		    v.embedded, v.flag_list, v.updated_at, v.progress, v.hash,
		    v.state, CASE WHEN v.state = 'counted' AND
			v.cancelled_at IS NULL THEN v.current_total ELSE 0 END
		FROM v
		ON CONFLICT (channel_id, shop_id, external_id) DO NOTHING
		RETURNING o.channel_id, o.id, o.shop_id, o.external_id
	), upd AS (
		UPDATE orders o
		SET order_number = v."number", customer_id = v.customer_id,
		    currency = v.currency,
		    presentment_currency = v.presentment_currency,
		    status = v.status, financial_status = v.financial_status,
		    cancel_reason = v.cancel_reason,
		    source_name = v.source_name, test = v.test,
		    placed_at = v.placed_at, cancelled_at = v.cancelled_at,
		    deleted_at = CASE WHEN v.restored THEN NULL
			ELSE o.deleted_at END,
		    gross = v.gross, current_total = v.current_total,
		    landing_site = v.landing_site,
		    referring_site = v.referring_site,
		    attribution_token = v.attribution_token,
		    note_attributes = v.note_attributes,
		    embedded_refunds = v.embedded, flags = v.flag_list,
		    src_updated_at = v.updated_at, src_progress = v.progress,
		    src_hash = v.hash, updated_at = now()
		FROM v
		WHERE o.channel_id = v.channel_id AND o.shop_id = v.shop_id
		    AND o.external_id = v.ext
		    AND (o.src_hash IS NULL OR
			(coalesce(v.updated_at, '-infinity'), v.progress,
			v.hash) > (coalesce(o.src_updated_at, '-infinity'),
			o.src_progress, o.src_hash))
		RETURNING o.channel_id, o.id, o.shop_id, o.external_id
	)
	INSERT INTO musubi_ec_touched
	SELECT channel_id, id, shop_id, external_id FROM ins
	UNION ALL
	SELECT channel_id, id, shop_id, external_id FROM upd;
	ANALYZE musubi_ec_touched;

	-- A paid order stays paid, from the first time any snapshot said so.
	WITH paid AS (
		SELECT s.channel_id, s.shop_id, s.ext,
		    min(s.paid_at) AS paid_at
		FROM musubi_ec_snap s
		WHERE s.paid_at IS NOT NULL GROUP BY 1, 2, 3
	)
	UPDATE orders o SET paid_at = p.paid_at, updated_at = now()
	FROM paid p
	WHERE o.channel_id = p.channel_id AND o.shop_id = p.shop_id
	    AND o.external_id = p.ext
	    AND (o.paid_at IS NULL OR p.paid_at < o.paid_at);

	-- Line items follow the snapshot the order took.
	DELETE FROM order_items i
	USING musubi_ec_touched t
	WHERE i.channel_id = t.channel_id AND i.order_id = t.order_id;
	INSERT INTO order_items (channel_id, order_id, position, line_id,
	    product_id, variant_id, sku, title, vendor, quantity, price,
	    total)
	SELECT t.channel_id, t.order_id, e.n::integer, e.line_id,
	    e.product_id, e.variant_id, e.sku, e.title, e.vendor, e.quantity,
	    e.price, e.total
	FROM musubi_ec_touched t
	JOIN musubi_ec_best b ON b.channel_id = t.channel_id
	    AND b.shop_id = t.shop_id AND b.ext = t.ext
	CROSS JOIN LATERAL ROWS FROM (jsonb_to_recordset(b.o->'items')
	    AS (line_id text, product_id text, variant_id text, sku text,
		title text, vendor text, quantity integer, price numeric,
		total numeric)) WITH ORDINALITY AS e(line_id, product_id,
		variant_id, sku, title, vendor, quantity, price, total, n);

	-- Deletions; an order not seen yet is kept as a deleted stub.
	INSERT INTO orders AS o (channel_id, shop_id, external_id, deleted_at)
	SELECT DISTINCT ON (w.channel_id, w.shop_id, w.ord)
	    w.channel_id, w.shop_id, w.ord, w.received_at
	FROM musubi_ec_work w
	WHERE w.kind = 'delete'
	ORDER BY w.channel_id, w.shop_id, w.ord, w.received_at
	ON CONFLICT (channel_id, shop_id, external_id) DO UPDATE
	SET deleted_at = coalesce(o.deleted_at, excluded.deleted_at),
	    updated_at = now();

	-- Refunds: from refund deliveries and from the refunds orders list.
	-- A delivery's figures beat an order's list; between lists, the
	-- larger amount and the earliest stand-in date.
	WITH r AS (
		SELECT w.channel_id, w.shop_id, w.doc->'refund' AS r,
		    'webhook' AS source, w.ord
		FROM musubi_ec_work w WHERE w.kind = 'refund'
		UNION ALL
		SELECT s.channel_id, s.shop_id, e, 'embedded', s.ext
		FROM musubi_ec_snap s,
		    jsonb_array_elements(s.o->'refunds') e
	)
	INSERT INTO refunds AS f (channel_id, shop_id, external_id,
	    order_external_id, amount, created_at, at_estimated, source,
	    note, items, flags)
	SELECT DISTINCT ON (r.channel_id, r.shop_id, r.r->>'id')
	    r.channel_id, r.shop_id, r.r->>'id', r.ord,
	    (r.r->>'amount')::numeric, (r.r->>'created_at')::timestamptz,
	    coalesce((r.r->>'estimated')::boolean, false), r.source,
	    r.r->>'note', coalesce(r.r->'items', '[]'),
	    ARRAY(SELECT jsonb_array_elements_text(coalesce(r.r->'flags',
		'[]')))
	FROM r
	ORDER BY r.channel_id, r.shop_id, r.r->>'id', r.source DESC,
	    (r.r->>'amount')::numeric DESC,
	    coalesce((r.r->>'estimated')::boolean, false),
	    (r.r->>'created_at')::timestamptz
	ON CONFLICT (channel_id, shop_id, external_id) DO UPDATE
	SET amount = CASE
		WHEN f.source = 'embedded' AND excluded.source = 'webhook'
		  THEN excluded.amount
		WHEN f.source = excluded.source
		  THEN greatest(f.amount, excluded.amount)
		ELSE f.amount END,
	    created_at = CASE
		WHEN f.at_estimated AND NOT excluded.at_estimated
		  THEN excluded.created_at
		WHEN f.at_estimated = excluded.at_estimated
		  THEN least(f.created_at, excluded.created_at)
		ELSE f.created_at END,
	    at_estimated = f.at_estimated AND excluded.at_estimated,
	    source = CASE WHEN excluded.source = 'webhook' THEN 'webhook'
		ELSE f.source END,
	    note = CASE WHEN excluded.source = 'webhook' OR
		f.source = 'embedded' THEN coalesce(excluded.note, f.note)
		ELSE f.note END,
	    items = CASE WHEN excluded.source = 'webhook'
		THEN excluded.items ELSE f.items END,
	    flags = CASE WHEN excluded.source = 'webhook'
		THEN excluded.flags ELSE f.flags END,
	    updated_at = now()
	WHERE (f.amount, f.created_at, f.at_estimated, f.source)
	    IS DISTINCT FROM (CASE
		WHEN f.source = 'embedded' AND excluded.source = 'webhook'
		  THEN excluded.amount
		WHEN f.source = excluded.source
		  THEN greatest(f.amount, excluded.amount)
		ELSE f.amount END, CASE
		WHEN f.at_estimated AND NOT excluded.at_estimated
		  THEN excluded.created_at
		WHEN f.at_estimated = excluded.at_estimated
		  THEN least(f.created_at, excluded.created_at)
		ELSE f.created_at END,
		f.at_estimated AND excluded.at_estimated,
		CASE WHEN excluded.source = 'webhook' THEN 'webhook'
		ELSE f.source END);

	-- Refunds that were waiting for their order (or just arrived) join it.
	UPDATE refunds f SET order_id = o.id, updated_at = now()
	FROM orders o
	WHERE f.order_id IS NULL AND o.channel_id = f.channel_id
	    AND o.shop_id = f.shop_id AND o.external_id = f.order_external_id;

	-- Every order the batch names gets its ledger rewritten.
	SELECT array_agg(channel_id), array_agg(id) INTO v_ch, v_ord FROM (
		SELECT o.channel_id, o.id
		FROM musubi_ec_snap s
		JOIN orders o ON o.channel_id = s.channel_id
		    AND o.shop_id = s.shop_id AND o.external_id = s.ext
		UNION
		SELECT o.channel_id, o.id
		FROM musubi_ec_work w
		JOIN orders o ON o.channel_id = w.channel_id
		    AND o.shop_id = w.shop_id AND o.external_id = w.ord
		WHERE w.kind IN ('delete', 'refund')) a;
	PERFORM musubi_ec_ledger(coalesce(v_ch, '{}'), coalesce(v_ord, '{}'));
END;
$$;

-- Apply up to lim pending inbox rows in one transaction.  Only one
-- transaction applies at a time (an advisory lock; another caller returns
-- busy at once), so appliers in several musubid processes never race over
-- an order.  If the batch fails on its data (SQLSTATE classes 22 and 23),
-- its rows are applied one by one and a row that still fails is marked
-- rejected with the error, so one bad row cannot block the queue.  Any
-- other error (deadlock, timeout, shutdown, a bug) is raised: the rows stay
-- pending and are retried.  Rows rejected by a bug can be queued again
-- once it is fixed: UPDATE ec_webhook_events SET state = 0, problem = NULL
-- WHERE problem LIKE 'apply failed:%'.  A refund whose order is unknown is
-- applied (stored) and waits in refunds for the order.
CREATE FUNCTION musubi_ec_apply(lim integer,
	OUT applied integer, OUT rejected integer, OUT busy boolean)
LANGUAGE plpgsql
-- The work tables have no statistics: their estimates would make JIT
-- compile every statement, costing more than running it.  Custom plans:
-- a generic plan guesses 10 rows for unnest() of an array parameter and
-- may then walk a whole shop's orders for each of a thousand.
SET jit = off
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
	r	record;
BEGIN
	applied := 0;
	rejected := 0;
	busy := NOT pg_try_advisory_xact_lock(109117115101099);
	IF busy THEN
		RETURN;
	END IF;
	CREATE TEMP TABLE IF NOT EXISTS musubi_ec_claim (channel_id bigint,
	    id bigint, shop_id bigint, kind text, doc jsonb,
	    received_at timestamptz, ord text) ON COMMIT DROP;
	CREATE TEMP TABLE IF NOT EXISTS musubi_ec_work (channel_id bigint,
	    id bigint, shop_id bigint, kind text, doc jsonb,
	    received_at timestamptz, ord text) ON COMMIT DROP;
	-- Join keys are plain columns here, never JSON expressions: an
	-- expression would keep the planner from using a whole index.
	CREATE TEMP TABLE IF NOT EXISTS musubi_ec_snap (channel_id bigint,
	    shop_id bigint, ext text, updated_at timestamptz,
	    progress smallint, hash text, paid_at timestamptz, o jsonb,
	    ckey text) ON COMMIT DROP;
	CREATE TEMP TABLE IF NOT EXISTS musubi_ec_best (channel_id bigint,
	    shop_id bigint, ext text, updated_at timestamptz,
	    progress smallint, hash text, paid_at timestamptz, o jsonb,
	    ckey text, paid_min timestamptz) ON COMMIT DROP;
	CREATE TEMP TABLE IF NOT EXISTS musubi_ec_touched (channel_id bigint,
	    order_id bigint, shop_id bigint, ext text) ON COMMIT DROP;
	CREATE TEMP TABLE IF NOT EXISTS musubi_ec_lo (channel_id bigint,
	    order_id bigint, shop_id bigint, customer_id bigint,
	    state text, placed_at timestamptz, cancelled_at timestamptz,
	    snap_at timestamptz, gross numeric, current_total numeric,
	    embedded text[]) ON COMMIT DROP;
	CREATE TEMP TABLE IF NOT EXISTS musubi_ec_lr (channel_id bigint,
	    order_id bigint, shop_id bigint, customer_id bigint, kind text,
	    ref text, amount numeric, at timestamptz) ON COMMIT DROP;
	TRUNCATE musubi_ec_claim, musubi_ec_work;

	INSERT INTO musubi_ec_claim
	SELECT w.channel_id, w.id, w.shop_id, w.kind, w.doc, w.received_at,
	    coalesce(w.doc->'order'->>'id', w.doc->>'order_id',
	    w.doc->'refund'->>'order_id')
	FROM ec_webhook_events w
	WHERE w.state = 0
	ORDER BY w.id
	LIMIT lim
	FOR UPDATE SKIP LOCKED;

	ANALYZE musubi_ec_claim;
	BEGIN
		INSERT INTO musubi_ec_work SELECT * FROM musubi_ec_claim;
		ANALYZE musubi_ec_work;
		PERFORM musubi_ec_apply_work();
		UPDATE ec_webhook_events w SET state = 1, applied_at = now()
		FROM musubi_ec_claim c
		WHERE w.channel_id = c.channel_id AND w.id = c.id;
		GET DIAGNOSTICS applied = ROW_COUNT;
		RETURN;
	EXCEPTION
	WHEN data_exception OR integrity_constraint_violation THEN
		RAISE WARNING 'musubi_ec_apply: batch failed (%), applying '
		    'its rows one by one', SQLERRM;
	END;

	FOR r IN SELECT * FROM musubi_ec_claim ORDER BY id LOOP
		BEGIN
			TRUNCATE musubi_ec_work;
			INSERT INTO musubi_ec_work VALUES (r.channel_id, r.id,
			    r.shop_id, r.kind, r.doc, r.received_at, r.ord);
			PERFORM musubi_ec_apply_work();
			UPDATE ec_webhook_events SET state = 1,
			    applied_at = now()
			WHERE channel_id = r.channel_id AND id = r.id;
			applied := applied + 1;
		EXCEPTION
		WHEN data_exception OR integrity_constraint_violation THEN
			UPDATE ec_webhook_events SET state = 2,
			    problem = 'apply failed: ' || SQLERRM,
			    applied_at = now()
			WHERE channel_id = r.channel_id AND id = r.id;
			rejected := rejected + 1;
		END;
	END LOOP;
END;
$$;

-- RFM scores, 1-5 per channel, over the customers and the friends with at
-- least one order still worth more than zero: R by last purchase (recent
-- is 5), F by orders_count, M by net_revenue.  Quintiles by rank, so equal
-- values share a score (the lower one); with distinct values this is
-- ntile(5).  One statement; an advisory lock lets only one musubid run it
-- at a time.  Returns how many rows changed.
CREATE FUNCTION musubi_ec_rfm(OUT customers integer, OUT friends integer)
LANGUAGE sql AS $$
	WITH lock AS (
		SELECT pg_try_advisory_xact_lock(109117115114102) AS ok
	), cs AS (
		SELECT s.channel_id, s.customer_id,
		    1 + 5 * (rank() OVER (PARTITION BY s.channel_id
			ORDER BY s.last_purchase_at) - 1) /
			count(*) OVER (PARTITION BY s.channel_id) AS r,
		    1 + 5 * (rank() OVER (PARTITION BY s.channel_id
			ORDER BY s.orders_count) - 1) /
			count(*) OVER (PARTITION BY s.channel_id) AS f,
		    1 + 5 * (rank() OVER (PARTITION BY s.channel_id
			ORDER BY s.net_revenue) - 1) /
			count(*) OVER (PARTITION BY s.channel_id) AS m
		FROM customer_stats s
		WHERE s.orders_count > 0 AND (SELECT ok FROM lock)
	), cu AS (
		UPDATE customer_stats s
		SET rfm_r = cs.r, rfm_f = cs.f, rfm_m = cs.m, rfm_at = now()
		FROM cs
		WHERE s.channel_id = cs.channel_id
		    AND s.customer_id = cs.customer_id
		    AND (s.rfm_r, s.rfm_f, s.rfm_m) IS DISTINCT FROM
			(cs.r::smallint, cs.f::smallint, cs.m::smallint)
		RETURNING 1
	), fs AS (
		SELECT s.channel_id, s.friend_id,
		    1 + 5 * (rank() OVER (PARTITION BY s.channel_id
			ORDER BY s.last_purchase_at) - 1) /
			count(*) OVER (PARTITION BY s.channel_id) AS r,
		    1 + 5 * (rank() OVER (PARTITION BY s.channel_id
			ORDER BY s.orders_count) - 1) /
			count(*) OVER (PARTITION BY s.channel_id) AS f,
		    1 + 5 * (rank() OVER (PARTITION BY s.channel_id
			ORDER BY s.net_revenue) - 1) /
			count(*) OVER (PARTITION BY s.channel_id) AS m
		FROM friend_stats s
		WHERE s.orders_count > 0 AND (SELECT ok FROM lock)
	), fu AS (
		UPDATE friend_stats s
		SET rfm_r = fs.r, rfm_f = fs.f, rfm_m = fs.m, rfm_at = now()
		FROM fs
		WHERE s.channel_id = fs.channel_id
		    AND s.friend_id = fs.friend_id
		    AND (s.rfm_r, s.rfm_f, s.rfm_m) IS DISTINCT FROM
			(fs.r::smallint, fs.f::smallint, fs.m::smallint)
		RETURNING 1
	)
	SELECT (SELECT count(*) FROM cu)::integer,
	    (SELECT count(*) FROM fu)::integer;
$$;
