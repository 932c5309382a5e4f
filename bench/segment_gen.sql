-- SPDX-License-Identifier: ISC
-- bench/segment_gen.sql -- set-based data for the segment benchmark.
--
-- One channel "bench" with :friends friends (default 1,000,000), :orders
-- orders (5,000,000) with 1-3 items each, :clicks clicks (10,000,000),
-- :views page views (2,000,000) and :events interactions (2,000,000),
-- plus two noise channels of :noise (0.2) of that each.  Everything is
-- generate_series, so the whole set takes minutes, not hours.
--
-- Run on a migrated database (musubictl migrate):
--	psql -X -v ON_ERROR_STOP=1 [-v friends=N ...] -f bench/segment_gen.sql
--
-- Orders are written as the ledger leaves them (revenue_state, net), not
-- replayed through musubi_ec_apply(); the rollups the segment queries read
-- are then computed with the same definitions as musubi_ec_rollup()
-- (friend_stats), musubi_ec_rfm() (RFM) and musubi_record_clicks() /
-- musubi_record_page_views() (friend_engagement).  The ledger table itself
-- is left empty: segments never read it.
--
-- Orders, clicks, page views and interactions are inserted in time order,
-- as production appends them: a time window then reads a contiguous part
-- of the table, not pages scattered over all of it.
--
-- Shapes, per channel of F friends:
--	friends		70% following, 25% blocked, 5% unknown; followed in
--			the last 3 years; language ja/en/th/none
--	tags		20 tags; a third of the friends have one or two
--	customers	0.8 F, in two shops; 0.6 F linked to a friend (plus
--			0.05 F links that ended)
--	orders		over 3 years, by a skewed choice of customer (a few buy
--			a lot); 92% counted, 5% refunded in part, 2% fully
--	order_items	1-3 per order, 500 products, 40 vendors
--	links		200 (50 of them campaign links), clicks over 1 year
--	page_views	over 1 year, 40 URL shapes
--	interactions	messages and postbacks over 1 year

\set ON_ERROR_STOP 1
\if :{?friends}
\else
\set friends 1000000
\endif
\if :{?orders}
\else
\set orders 5000000
\endif
\if :{?clicks}
\else
\set clicks 10000000
\endif
\if :{?views}
\else
\set views 2000000
\endif
\if :{?events}
\else
\set events 2000000
\endif
\if :{?noise}
\else
\set noise 0.2
\endif

\timing on
SET synchronous_commit = off;
-- no per-row foreign-key triggers: the rows are consistent by construction
-- (needs a superuser, as the benchmark's own cluster has)
SET session_replication_role = replica;
SET maintenance_work_mem = '512MB';
SET work_mem = '256MB';
SELECT setseed(0.42);

CREATE TEMP TABLE gen_channels (slug text, scale float8);
INSERT INTO gen_channels VALUES ('bench', 1), ('noise-a', :noise),
    ('noise-b', :noise);
INSERT INTO channels (slug, name, channel_secret)
SELECT slug, initcap(slug), 'bench-secret' FROM gen_channels
ON CONFLICT (slug) DO NOTHING;

-- Per channel: its id and the sizes to generate.
CREATE TEMP TABLE gen AS
SELECT c.id AS ch, g.slug,
    greatest(1, (:friends * g.scale)::bigint) AS nf,
    greatest(1, (:orders * g.scale)::bigint) AS no,
    greatest(1, (:clicks * g.scale)::bigint) AS nc,
    greatest(1, (:views * g.scale)::bigint) AS nv,
    greatest(1, (:events * g.scale)::bigint) AS ne
FROM gen_channels g JOIN channels c USING (slug);

\echo friends
INSERT INTO friends (channel_id, user_id, status, status_at, followed_at,
    first_followed_at, follow_count, language, display_name,
    profile_state)
SELECT gen.ch, 'U' || md5(gen.slug || '-' || i),
    CASE WHEN r < 0.70 THEN 'following' WHEN r < 0.95 THEN 'blocked'
	ELSE 'unknown' END,
    now() - d * interval '1 day',
    CASE WHEN r < 0.95 THEN now() - d * interval '1 day' END,
    CASE WHEN r < 0.95 THEN now() - (d + (i % 7) * 20) * interval '1 day'
	END,
    CASE WHEN r < 0.95 THEN 1 + (i % 3 = 0)::int ELSE 0 END,
    (ARRAY['ja', 'ja', 'ja', 'en', 'th', NULL])[1 + i % 6],
    'friend ' || i, 'ok'
FROM gen, generate_series(1, gen.nf) i,
    LATERAL (SELECT random() + 0 * i AS r, random() * 1095 AS d) x
ORDER BY gen.ch, i;

-- The id range of each channel's friends (contiguous: one statement,
-- ordered by channel).
CREATE TEMP TABLE gen_f AS
SELECT channel_id AS ch, min(id) AS lo, max(id) AS hi, count(*) AS n
FROM friends WHERE channel_id IN (SELECT ch FROM gen) GROUP BY 1;

\echo tags
INSERT INTO tags (channel_id, name)
SELECT gen.ch, 'tag-' || t FROM gen, generate_series(1, 20) t;
INSERT INTO friend_tags (channel_id, friend_id, tag_id)
SELECT DISTINCT f.ch, f.lo + i, t.id
FROM gen_f f, generate_series(0, f.n - 1) i,
    LATERAL (VALUES (i % 20 + 1), ((i * 7) % 20 + 1)) AS k(n), tags t
WHERE t.channel_id = f.ch AND t.name = 'tag-' || k.n
    AND i % 3 = 0 AND (k.n = i % 20 + 1 OR i % 2 = 0);

\echo shops and customers
INSERT INTO shops (channel_id, slug, name, platform, webhook_secret)
SELECT gen.ch, gen.slug || '-shop-' || s, 'Shop ' || s, 'generic', 'x'
FROM gen, generate_series(1, 2) s;
CREATE TEMP TABLE gen_s AS
SELECT channel_id AS ch, min(id) AS s1, max(id) AS s2 FROM shops
WHERE channel_id IN (SELECT ch FROM gen) GROUP BY 1;
INSERT INTO customers (channel_id, shop_id, external_id)
SELECT gen.ch, CASE WHEN i % 4 = 0 THEN s.s2 ELSE s.s1 END, 'c' || i
FROM gen JOIN gen_s s ON s.ch = gen.ch,
    generate_series(1, (gen.nf * 0.8)::bigint) i
ORDER BY gen.ch, i;
CREATE TEMP TABLE gen_c AS
SELECT channel_id AS ch, min(id) AS lo, count(*) AS n FROM customers
WHERE channel_id IN (SELECT ch FROM gen) GROUP BY 1;

\echo friend_customer_links
-- customer i of the first 75% links to a friend spread over the range;
-- a few more links that have ended
INSERT INTO friend_customer_links (channel_id, friend_id, customer_id,
    method, linked_at, unlinked_at)
SELECT c.ch, f.lo + (i * 7919) % f.n, c.lo + i, 'api',
    now() - interval '30 days', NULL
FROM gen_c c JOIN gen_f f ON f.ch = c.ch,
    generate_series(0, (c.n * 0.75)::bigint - 1) i
UNION ALL
SELECT c.ch, f.lo + (i * 104729) % f.n, c.lo + i, 'api',
    now() - interval '60 days', now() - interval '10 days'
FROM gen_c c JOIN gen_f f ON f.ch = c.ch,
    generate_series((c.n * 0.75)::bigint,
	(c.n * 0.75)::bigint + (f.n * 0.05)::bigint - 1) i;

\echo orders
-- the customer: skewed toward low numbers (a few heavy buyers)
INSERT INTO orders (channel_id, shop_id, external_id, customer_id,
    currency, financial_status, test, placed_at, paid_at, gross,
    current_total, revenue_state, net, src_hash)
SELECT gen.ch, cu.shop_id, 'o' || i, cu.id, 'JPY',
    CASE WHEN st = 'counted' THEN 'paid' ELSE 'pending' END,
    st = 'test', at, CASE WHEN st = 'counted' THEN at END, gross, gross,
    st,
    CASE WHEN st <> 'counted' THEN 0
	WHEN r2 < 0.02 THEN 0
	WHEN r2 < 0.07 THEN gross - round(gross * 0.3)
	ELSE gross END,
    'h' || i
FROM gen JOIN gen_c c ON c.ch = gen.ch,
    generate_series(1, gen.no) i,
    LATERAL (SELECT
	c.lo + floor(c.n * power(random(), 2.2))::bigint + 0 * i AS cid,
	CASE WHEN random() < 0.92 THEN 'counted' WHEN random() < 0.5
	    THEN 'unpaid' ELSE 'test' END AS st,
	now() - random() * 1095 * interval '1 day' AS at,
	(500 + floor(random() * 40) * 250)::numeric AS gross,
	random() AS r2) x, customers cu
WHERE cu.channel_id = gen.ch AND cu.id = x.cid
ORDER BY at;

\echo order_items
INSERT INTO order_items (channel_id, order_id, position, line_id,
    product_id, sku, title, vendor, quantity, price, total)
SELECT o.channel_id, o.id, p, p::text, 'P' || pr, 'SKU-' || pr,
    (ARRAY['Sencha ', '煎茶 ', 'Matcha ', 'Gift box ', 'Hojicha '])
	[1 + pr % 5] || pr, 'vendor-' || pr % 40, 1, o.gross / n,
    o.gross / n
FROM orders o,
    LATERAL (SELECT 1 + (o.id % 3)::int AS n) k,
    LATERAL generate_series(1, k.n) p,
    LATERAL (SELECT (o.id * 31 + p * 17) % 500 AS pr) q
WHERE o.channel_id IN (SELECT ch FROM gen);

\echo links and clicks
INSERT INTO links (channel_id, name, destination, campaign_id)
SELECT gen.ch, 'link ' || i, 'https://shop.example/p/' || i,
    CASE WHEN i <= 50 THEN 1 + i % 10 END
FROM gen, generate_series(1, 200) i
ORDER BY gen.ch, i;
CREATE TEMP TABLE gen_l AS
SELECT channel_id AS ch, min(id) AS lo FROM links
WHERE channel_id IN (SELECT ch FROM gen) GROUP BY 1;
INSERT INTO clicks (channel_id, link_id, friend_id, clicked_at)
SELECT gen.ch, l.lo + floor(random() * 200)::bigint,
    CASE WHEN random() < 0.9 THEN f.lo + floor(f.n * power(random(),
	1.5))::bigint END,
    now() - random() * 365 * interval '1 day' AS at
FROM gen JOIN gen_f f ON f.ch = gen.ch JOIN gen_l l ON l.ch = gen.ch,
    generate_series(1, gen.nc) i
ORDER BY at;

\echo page_views
INSERT INTO page_views (channel_id, friend_id, url, viewed_at)
SELECT gen.ch,
    CASE WHEN random() < 0.85 THEN f.lo + floor(f.n * power(random(),
	1.5))::bigint END,
    'https://shop.example/' || (ARRAY['products/', 'collections/', 'cart',
	'blog/', 'pages/'])[1 + i % 5] || (i % 8),
    now() - random() * 365 * interval '1 day' AS at
FROM gen JOIN gen_f f ON f.ch = gen.ch, generate_series(1, gen.nv) i
ORDER BY at;

\echo interactions
INSERT INTO interactions (channel_id, event_id, friend_id, user_id, type,
    subtype, event_ts, postback_data, text, payload)
SELECT gen.ch, 'b' || i, fid, NULL,
    CASE WHEN i % 3 = 0 THEN 'postback' ELSE 'message' END,
    CASE WHEN i % 3 = 0 THEN NULL ELSE 'text' END,
    now() - random() * 365 * interval '1 day' AS at,
    CASE WHEN i % 3 = 0 THEN (ARRAY['coupon=spring', 'coupon=summer',
	'survey:1', 'survey:2'])[1 + i % 4] END,
    CASE WHEN i % 3 <> 0 THEN 'hello' END, '{}'
FROM gen JOIN gen_f f ON f.ch = gen.ch, generate_series(1, gen.ne) i,
    LATERAL (SELECT f.lo + floor(f.n * random())::bigint + 0 * i AS fid) x
ORDER BY at;

\echo rollups
-- friend_engagement as musubi_record_clicks/page_views keep it
INSERT INTO friend_engagement (channel_id, friend_id, clicks,
    first_click_at, last_click_at, page_views, last_view_at)
SELECT coalesce(c.channel_id, v.channel_id),
    coalesce(c.friend_id, v.friend_id), coalesce(c.n, 0), c.first_at,
    c.last_at, coalesce(v.n, 0), v.last_at
FROM (SELECT channel_id, friend_id, count(*) AS n,
	min(clicked_at) AS first_at, max(clicked_at) AS last_at
	FROM clicks WHERE friend_id IS NOT NULL
	AND channel_id IN (SELECT ch FROM gen) GROUP BY 1, 2) c
FULL JOIN (SELECT channel_id, friend_id, count(*) AS n,
	max(viewed_at) AS last_at
	FROM page_views WHERE friend_id IS NOT NULL
	AND channel_id IN (SELECT ch FROM gen) GROUP BY 1, 2) v
ON v.channel_id = c.channel_id AND v.friend_id = c.friend_id;

-- friend_stats as musubi_ec_rollup() computes it: over the orders that
-- count of the customers linked to the friend now
INSERT INTO friend_stats (channel_id, friend_id, orders_count, net_revenue,
    first_purchase_at, last_purchase_at, aov)
SELECT k.channel_id, k.friend_id, n, net, first_at, last_at,
    CASE WHEN n > 0 THEN round(net / n, 2) END
FROM (SELECT k.channel_id, k.friend_id,
	count(*) FILTER (WHERE o.net > 0) AS n, sum(o.net) AS net,
	min(o.placed_at) FILTER (WHERE o.net > 0) AS first_at,
	max(o.placed_at) FILTER (WHERE o.net > 0) AS last_at
	FROM friend_customer_links k
	JOIN orders o ON o.channel_id = k.channel_id
	    AND o.customer_id = k.customer_id
	    AND o.revenue_state = 'counted'
	WHERE k.unlinked_at IS NULL AND k.channel_id IN (SELECT ch FROM gen)
	GROUP BY 1, 2) k;
SELECT * FROM musubi_ec_rfm();

\echo vacuum analyze
VACUUM (ANALYZE) friends, friend_tags, tags, customers,
    friend_customer_links, orders, order_items, links, clicks, page_views,
    interactions, friend_engagement, friend_stats, shops;

SELECT slug, (SELECT count(*) FROM friends WHERE channel_id = ch) AS friends,
    (SELECT count(*) FROM orders WHERE channel_id = ch) AS orders,
    (SELECT count(*) FROM order_items WHERE channel_id = ch) AS items,
    (SELECT count(*) FROM clicks WHERE channel_id = ch) AS clicks,
    (SELECT count(*) FROM page_views WHERE channel_id = ch) AS page_views,
    (SELECT count(*) FROM friend_stats WHERE channel_id = ch
	AND orders_count > 0) AS buyers
FROM gen ORDER BY slug;
