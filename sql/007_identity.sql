-- 007_identity: linking LINE friends to shop customers.
--
-- Links live in friend_customer_links (003): many customers per friend, one
-- current friend per customer, with the unlink history kept.  Every link
-- or unlink recomputes the purchase rollups of the customer and of both
-- friends involved in the same transaction (musubi_ec_refresh), so orders
-- placed before the link appear on the friend at once.
--
-- Methods: 'api' (explicit), 'account_link' (LINE account link: link token
-- + nonce, completed by the accountLink webhook event), 'line_login' (an
-- ID token the shop submits, verified at LINE), 'tracking_token' (a signed
-- musubi_t token that travelled from a musubi link into the order).

-- The LINE Login channel used to verify ID tokens (and, later, for
-- tracked add-friend URLs).  The secret is write-only through the API.
ALTER TABLE channels ADD COLUMN login_channel_id text;
ALTER TABLE channels ADD COLUMN login_channel_secret text;

CREATE TABLE account_link_nonces (
	channel_id	bigint NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
	nonce		text NOT NULL CHECK (length(nonce) BETWEEN 10 AND 255),
	customer_id	bigint NOT NULL,
	created_at	timestamptz NOT NULL DEFAULT now(),
	expires_at	timestamptz NOT NULL,
	consumed_at	timestamptz,
	friend_id	bigint,
	PRIMARY KEY (channel_id, nonce),
	FOREIGN KEY (channel_id, customer_id) REFERENCES customers
		(channel_id, id) ON DELETE CASCADE
);

CREATE INDEX interactions_account_link ON interactions (created_at)
	WHERE type = 'accountLink';

-- What a verified tracking token in an order said.
ALTER TABLE orders ADD COLUMN attribution_state text;
ALTER TABLE orders ADD COLUMN attributed_friend_id bigint;
ALTER TABLE orders ADD COLUMN attributed_link_id bigint;
ALTER TABLE orders ADD COLUMN attributed_run_id bigint;
ALTER TABLE orders ADD COLUMN attributed_click_at timestamptz;
CREATE INDEX orders_attribution_pending ON orders (id)
	WHERE attribution_token IS NOT NULL AND attribution_state IS NULL;
CREATE INDEX orders_attributed_friend ON orders (channel_id,
	attributed_friend_id) WHERE attributed_friend_id IS NOT NULL;

-- The customer (shop slug, external id) of a channel, created if this is
-- the first musubi hears of it; NULL if the channel has no such shop.
CREATE FUNCTION musubi_identity_customer(p_channel bigint, p_shop text,
	p_external text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
	v_shop	bigint;
	v_id	bigint;
BEGIN
	SELECT id INTO v_shop FROM shops
	WHERE channel_id = p_channel AND slug = p_shop;
	IF v_shop IS NULL THEN
		RETURN NULL;
	END IF;
	INSERT INTO customers (channel_id, shop_id, external_id)
	VALUES (p_channel, v_shop, p_external)
	ON CONFLICT (channel_id, shop_id, external_id) DO NOTHING;
	SELECT id INTO v_id FROM customers
	WHERE channel_id = p_channel AND shop_id = v_shop
	    AND external_id = p_external;
	RETURN v_id;
END;
$$;

-- The functions below end in musubi_ec_refresh(), which takes the EC apply
-- lock (109117115101099).  Those that lock rows the applier also locks
-- (orders, links) take it first, so that they and musubi_ec_apply() always
-- lock in the same order and cannot deadlock.

-- Link a customer to a friend.  Returns 'linked', 'already' (the same
-- link exists) or 'conflict' (linked to another friend and p_replace is
-- false).  With p_replace the old link is closed first.
CREATE FUNCTION musubi_identity_link(p_channel bigint, p_friend bigint,
	p_customer bigint, p_method text, p_replace boolean) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
	v_cur	friend_customer_links%ROWTYPE;
	v_old	bigint;
BEGIN
	PERFORM pg_advisory_xact_lock(109117115101099);
	SELECT * INTO v_cur FROM friend_customer_links
	WHERE channel_id = p_channel AND customer_id = p_customer
	    AND unlinked_at IS NULL
	FOR UPDATE;
	IF FOUND THEN
		IF v_cur.friend_id = p_friend THEN
			RETURN 'already';
		END IF;
		IF NOT p_replace THEN
			RETURN 'conflict';
		END IF;
		UPDATE friend_customer_links SET unlinked_at = now()
		WHERE channel_id = p_channel AND id = v_cur.id;
		v_old := v_cur.friend_id;
	END IF;
	BEGIN
		INSERT INTO friend_customer_links (channel_id, friend_id,
		    customer_id, method)
		VALUES (p_channel, p_friend, p_customer, p_method);
	EXCEPTION WHEN unique_violation THEN
		-- a concurrent link of the same customer won
		RETURN 'conflict';
	END;
	PERFORM musubi_ec_refresh(p_channel, ARRAY[p_customer],
	    CASE WHEN v_old IS NULL THEN ARRAY[p_friend]
	    ELSE ARRAY[p_friend, v_old] END);
	RETURN 'linked';
END;
$$;

-- Close a link.  Returns false if there was none.
CREATE FUNCTION musubi_identity_unlink(p_channel bigint, p_friend bigint,
	p_customer bigint) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pg_advisory_xact_lock(109117115101099);
	UPDATE friend_customer_links SET unlinked_at = now()
	WHERE channel_id = p_channel AND friend_id = p_friend
	    AND customer_id = p_customer AND unlinked_at IS NULL;
	IF NOT FOUND THEN
		RETURN false;
	END IF;
	PERFORM musubi_ec_refresh(p_channel, ARRAY[p_customer],
	    ARRAY[p_friend]);
	RETURN true;
END;
$$;

-- Complete account links: every accountLink event with result ok whose
-- nonce was registered, unused and unexpired links that nonce's customer
-- to the event's friend.  A nonce works once.  Returns links made.
CREATE FUNCTION musubi_identity_account_links() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
	r	record;
	n	integer := 0;
BEGIN
	-- (no EC lock here: the applier never touches nonces, and
	-- musubi_identity_link takes it before touching links)
	FOR r IN
		UPDATE account_link_nonces a
		SET consumed_at = now(), friend_id = e.friend_id
		FROM (SELECT DISTINCT ON (i.channel_id, i.payload #>>
			'{link,nonce}') i.channel_id, i.friend_id,
			i.payload #>> '{link,nonce}' AS nonce, i.event_ts
		    FROM interactions i
		    WHERE i.type = 'accountLink' AND i.subtype = 'ok'
			AND i.friend_id IS NOT NULL
			AND i.created_at > now() - interval '1 day'
		    ORDER BY i.channel_id, i.payload #>> '{link,nonce}',
			i.event_ts) e
		WHERE a.channel_id = e.channel_id AND a.nonce = e.nonce
		    AND a.consumed_at IS NULL AND e.event_ts <= a.expires_at
		RETURNING a.channel_id, a.friend_id, a.customer_id
	LOOP
		PERFORM musubi_identity_link(r.channel_id, r.friend_id,
		    r.customer_id, 'account_link', true);
		n := n + 1;
	END LOOP;
	RETURN n;
END;
$$;

-- Record verified tracking tokens: batch is a JSON array of
-- {c: channel, o: order id, s: state, f: friend, l: link, r: run, t: issued
-- at (unix s)}.  state 'ok' rows attribute the order to the friend, and
-- link the order's customer to that friend when the customer has no
-- current link (a token never moves an existing link).  Returns the number
-- of customers linked.
CREATE FUNCTION musubi_identity_attribute(batch jsonb) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
	r	record;
	n	integer := 0;
BEGIN
	PERFORM pg_advisory_xact_lock(109117115101099);
	FOR r IN
		UPDATE orders o SET attribution_state = b.s,
		    attributed_friend_id = CASE WHEN b.s = 'ok' THEN f.id END,
		    attributed_link_id = CASE WHEN b.s = 'ok' THEN b.l END,
		    attributed_run_id = CASE WHEN b.s = 'ok'
			THEN nullif(b.r, 0) END,
		    attributed_click_at = CASE WHEN b.s = 'ok'
			THEN to_timestamp(b.t) END
		FROM jsonb_to_recordset(batch) AS b(c bigint, o bigint,
		    s text, f bigint, l bigint, r bigint, t bigint)
		LEFT JOIN friends f ON f.channel_id = b.c AND f.id = b.f
		WHERE o.channel_id = b.c AND o.id = b.o
		    AND o.attribution_state IS NULL
		RETURNING o.channel_id, o.customer_id, o.attributed_friend_id
	LOOP
		IF r.attributed_friend_id IS NOT NULL AND
		    r.customer_id IS NOT NULL AND NOT EXISTS (
			SELECT 1 FROM friend_customer_links l
			WHERE l.channel_id = r.channel_id
			    AND l.customer_id = r.customer_id
			    AND l.unlinked_at IS NULL) THEN
			IF musubi_identity_link(r.channel_id,
			    r.attributed_friend_id, r.customer_id,
			    'tracking_token', false) = 'linked' THEN
				n := n + 1;
			END IF;
		END IF;
	END LOOP;
	RETURN n;
END;
$$;
