-- 006_campaigns: campaigns, their runs, the audience snapshot and the
-- delivery engine's batches; channel-level sending policies.
--
-- A campaign (messages + audience + schedule) has runs, one per occurrence
-- of its schedule; UNIQUE (channel_id, campaign_id, scheduled_at) means two
-- musubid processes never create the same occurrence twice.  A run is
-- prepared in restartable steps under a lease (campaign_runs.step):
--	0 -> 1	the run's tracked links are created (links.campaign_id)
--	1 -> 2	the audience is snapshotted into deliveries in one INSERT,
--		policies applied (skip_reason says why a friend is left out);
--		the sendable friends are numbered seq = 1..n.  A multicast
--		run's batches (seq ranges of <= 500) are built by the same
--		statement, from the same materialized snapshot: -> 3
--	2 -> 3	push runs: one batch per seq, bodies rendered in chunks
-- At 3 the run is 'sending'.
-- Every step is one transaction that starts with musubi_run_guard(), so a
-- process that lost its lease cannot write, and a crash rolls the step
-- back: whoever takes the run next continues at the same step.
--
-- A batch stores the exact request body and its X-Line-Retry-Key before the
-- first attempt.  Senders claim due batches with FOR UPDATE SKIP LOCKED and
-- a lease (next_attempt_at doubles as the lease expiry while 'sending'), and
-- report outcomes through musubi_batches_record(), which applies an outcome
-- only to the attempt it belongs to.  A recipient's status is derived from
-- the batch whose seq range holds it; deliveries rows are written again only
-- for failures, so a 1,000,000-recipient run costs 2,000 batch updates, not
-- a million row updates.
--
-- deliveries and delivery_batches are append-mostly logs owned by their run;
-- they carry no foreign keys so the bulk snapshot pays no per-row trigger.

CREATE TABLE channel_policies (
	channel_id		bigint PRIMARY KEY REFERENCES channels (id)
				ON DELETE CASCADE,
	-- at most frequency_cap messages per friend per rolling window,
	-- counted across campaigns; NULL = no cap
	frequency_cap		integer CHECK (frequency_cap BETWEEN 1 AND 1000),
	frequency_window_s	integer NOT NULL DEFAULT 604800
				CHECK (frequency_window_s BETWEEN 60 AND 31622400),
	-- local times in the channel's timezone; both or neither
	quiet_start		time,
	quiet_end		time,
	updated_at		timestamptz NOT NULL DEFAULT now(),
	CHECK ((quiet_start IS NULL) = (quiet_end IS NULL))
);

CREATE TABLE campaigns (
	channel_id		bigint NOT NULL REFERENCES channels (id)
				ON DELETE CASCADE,
	id			bigint GENERATED ALWAYS AS IDENTITY,
	name			text NOT NULL
				CHECK (length(name) BETWEEN 1 AND 200),
	state			text NOT NULL DEFAULT 'draft'
				CHECK (state IN ('draft', 'scheduled',
				'running', 'paused', 'completed', 'cancelled',
				'failed')),
	-- {"type":"segment","segment_id":N} | {"type":"snapshot",
	-- "snapshot_id":N} | {"type":"friends","user_ids":[...]} |
	-- {"type":"all"}
	audience		jsonb NOT NULL,
	messages		jsonb NOT NULL,
	-- a message uses a personalisation token: one push per recipient
	personalized		boolean NOT NULL DEFAULT false,
	notification_disabled	boolean NOT NULL DEFAULT false,
	-- customAggregationUnits: NULL none, '' derived ("musubi_c<id>")
	aggregation_unit	text CHECK (aggregation_unit = '' OR
				aggregation_unit ~ '^[a-zA-Z0-9_]{1,30}$'),
	-- {"type":"now"} | {"type":"at","at":...} | {"type":"daily",
	-- "time":"09:00","until"?} | {"type":"weekly","days":[...],...}
	schedule		jsonb NOT NULL,
	next_run_at		timestamptz,
	-- overrides of channel_policies: a key present replaces the
	-- channel's value (null turns the policy off)
	policies		jsonb NOT NULL DEFAULT '{}',
	quota_policy		text NOT NULL DEFAULT 'refuse'
				CHECK (quota_policy IN ('refuse', 'partial')),
	attribution_days	integer NOT NULL DEFAULT 7
				CHECK (attribution_days BETWEEN 1 AND 90),
	status_reason		text,
	created_at		timestamptz NOT NULL DEFAULT now(),
	updated_at		timestamptz NOT NULL DEFAULT now(),
	finished_at		timestamptz,
	PRIMARY KEY (channel_id, id)
);
CREATE INDEX campaigns_due ON campaigns (next_run_at)
	WHERE state IN ('scheduled', 'running') AND next_run_at IS NOT NULL;
CREATE INDEX campaigns_channel ON campaigns (channel_id, id DESC);

CREATE TABLE campaign_runs (
	channel_id		bigint NOT NULL,
	id			bigint GENERATED ALWAYS AS IDENTITY,
	campaign_id		bigint NOT NULL,
	scheduled_at		timestamptz NOT NULL,
	state			text NOT NULL DEFAULT 'pending'
				CHECK (state IN ('pending', 'preparing',
				'sending', 'paused', 'completed', 'cancelled',
				'failed')),
	-- preparation: 0 new, 1 links made, 2 snapshotted, 3 batches built
	step			smallint NOT NULL DEFAULT 0,
	-- push runs: bodies are built for friends up to this id
	built_friend		bigint NOT NULL DEFAULT 0,
	-- not prepared before this (quiet hours move it ahead)
	not_before		timestamptz NOT NULL,
	-- paused by quiet hours: resumes by itself then
	resume_at		timestamptz,
	lease_owner		text,
	lease_until		timestamptz,
	-- quota left when the audience was snapshotted; NULL = no limit
	quota_remaining		bigint,
	audience_count		integer,
	sendable_count		integer,
	-- destination URL -> links.id, for this run's tracked links
	links			jsonb NOT NULL DEFAULT '{}',
	status_reason		text,
	created_at		timestamptz NOT NULL DEFAULT now(),
	started_at		timestamptz,
	finished_at		timestamptz,
	PRIMARY KEY (channel_id, id),
	UNIQUE (channel_id, campaign_id, scheduled_at),
	FOREIGN KEY (channel_id, campaign_id) REFERENCES campaigns
		(channel_id, id) ON DELETE CASCADE
);
CREATE INDEX campaign_runs_due ON campaign_runs (not_before)
	WHERE state IN ('pending', 'preparing');
CREATE INDEX campaign_runs_active ON campaign_runs (channel_id, campaign_id)
	WHERE state IN ('pending', 'preparing', 'sending', 'paused');
CREATE INDEX campaign_runs_started ON campaign_runs (channel_id, started_at);

CREATE TABLE deliveries (
	channel_id	bigint NOT NULL,
	run_id		bigint NOT NULL,
	friend_id	bigint NOT NULL,
	-- 1..n over the run's sendable friends in friend id order, so a
	-- seq range is also a friend id range; NULL when skipped
	seq		integer,
	-- blocked | not_friend | frequency_cap | quota
	skip_reason	text,
	-- LINE refused this recipient, or its batch failed for good
	failure		text,
	PRIMARY KEY (channel_id, run_id, friend_id),
	CHECK ((seq IS NULL) = (skip_reason IS NOT NULL))
);
CREATE INDEX deliveries_skipped ON deliveries (channel_id, run_id,
	skip_reason) WHERE skip_reason IS NOT NULL;
CREATE INDEX deliveries_failed ON deliveries (channel_id, run_id)
	WHERE failure IS NOT NULL;

CREATE TABLE delivery_batches (
	channel_id		bigint NOT NULL,
	id			bigint GENERATED ALWAYS AS IDENTITY,
	run_id			bigint NOT NULL,
	kind			text NOT NULL CHECK (kind IN ('multicast',
				'push')),
	-- the deliveries this request carries, in "to" order: seq lo..hi,
	-- which are the sendable friends with ids flo..fhi (the primary key
	-- of deliveries finds them; seq has no index of its own)
	lo			integer NOT NULL,
	hi			integer NOT NULL,
	flo			bigint NOT NULL,
	fhi			bigint NOT NULL,
	-- the split this came from (LINE refused one of its recipients)
	parent_id		bigint,
	retry_key		uuid NOT NULL,
	-- the exact request body, stored before the first attempt
	body			jsonb NOT NULL,
	state			text NOT NULL DEFAULT 'pending'
				CHECK (state IN ('pending', 'sending', 'sent',
				'failed', 'split', 'cancelled')),
	attempts		integer NOT NULL DEFAULT 0,
	first_attempt_at	timestamptz,
	last_attempt_at		timestamptz,
	-- due time while pending; lease expiry while sending
	next_attempt_at		timestamptz NOT NULL DEFAULT now(),
	lease_owner		text,
	last_status		integer,
	request_id		text,
	accepted_request_id	text,
	last_error		text,
	sent_at			timestamptz,
	created_at		timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (channel_id, id),
	UNIQUE (channel_id, retry_key),
	CHECK (lo <= hi),
	FOREIGN KEY (channel_id, run_id) REFERENCES campaign_runs
		(channel_id, id) ON DELETE CASCADE
);
CREATE UNIQUE INDEX delivery_batches_origin ON delivery_batches
	(channel_id, run_id, lo) WHERE parent_id IS NULL;
CREATE INDEX delivery_batches_due ON delivery_batches (next_attempt_at)
	WHERE state IN ('pending', 'sending');
CREATE INDEX delivery_batches_open ON delivery_batches (channel_id, run_id)
	WHERE state IN ('pending', 'sending');
CREATE INDEX delivery_batches_run ON delivery_batches (channel_id, run_id,
	lo);

-- Sending processes seen lately: each shares the per-channel rate limits
-- equally with the others.
CREATE TABLE sender_heartbeats (
	owner		text PRIMARY KEY,
	seen_at		timestamptz NOT NULL DEFAULT now()
);

-- The next occurrence of a recurring schedule strictly after "after", in
-- the channel's timezone; NULL when there is none (one-off schedules, or
-- past "until").
CREATE FUNCTION musubi_campaign_next(sched jsonb, tz text, after timestamptz)
RETURNS timestamptz
LANGUAGE plpgsql STABLE AS $$
DECLARE
	t	time;
	d	date;
	c	timestamptz;
	i	integer;
	days	text[];
BEGIN
	IF sched->>'type' NOT IN ('daily', 'weekly') THEN
		RETURN NULL;
	END IF;
	t := (sched->>'time')::time;
	days := ARRAY(SELECT jsonb_array_elements_text(
	    coalesce(sched->'days', '[]')));
	d := (after AT TIME ZONE tz)::date;
	FOR i IN 0..8 LOOP
		c := ((d + i) + t) AT TIME ZONE tz;
		IF c > after AND (sched->>'type' = 'daily' OR
		    to_char(d + i, 'dy') = ANY (days)) THEN
			IF sched ? 'until' AND
			    c > (sched->>'until')::timestamptz THEN
				RETURN NULL;
			END IF;
			RETURN c;
		END IF;
	END LOOP;
	RETURN NULL;
END;
$$;

-- When the quiet window [qs, qe) (local times in tz) covering "at" ends;
-- NULL when "at" is outside it.  qs > qe spans midnight.
CREATE FUNCTION musubi_quiet_until(tz text, qs time, qe time,
	at timestamptz)
RETURNS timestamptz
LANGUAGE plpgsql STABLE AS $$
DECLARE
	lt	timestamp := at AT TIME ZONE tz;
	t	time := lt::time;
	e	timestamp;
BEGIN
	IF qs IS NULL OR qe IS NULL OR qs = qe THEN
		RETURN NULL;
	END IF;
	IF (qs < qe AND NOT (t >= qs AND t < qe)) OR
	    (qs > qe AND NOT (t >= qs OR t < qe)) THEN
		RETURN NULL;
	END IF;
	e := lt::date + qe;
	IF e <= lt THEN
		e := e + interval '1 day';
	END IF;
	RETURN e AT TIME ZONE tz;
END;
$$;

-- The policies in force for a campaign: its overrides over the channel's.
CREATE FUNCTION musubi_campaign_policies(ch bigint, over jsonb,
	OUT frequency_cap integer, OUT frequency_window_s integer,
	OUT quiet_start time, OUT quiet_end time)
LANGUAGE plpgsql STABLE AS $$
BEGIN
	SELECT p.frequency_cap, p.frequency_window_s, p.quiet_start,
	    p.quiet_end
	INTO frequency_cap, frequency_window_s, quiet_start, quiet_end
	FROM channel_policies p WHERE p.channel_id = ch;
	IF frequency_window_s IS NULL THEN
		frequency_window_s := 604800;
	END IF;
	IF over ? 'frequency_cap' THEN
		frequency_cap := (over #>> '{frequency_cap,max}')::integer;
		frequency_window_s := coalesce((over #>>
		    '{frequency_cap,window_hours}')::integer * 3600,
		    frequency_window_s);
	END IF;
	IF over ? 'quiet_hours' THEN
		quiet_start := (over #>> '{quiet_hours,start}')::time;
		quiet_end := (over #>> '{quiet_hours,end}')::time;
	END IF;
END;
$$;

-- A run whose batches are all settled is completed; a campaign whose runs
-- are all over and that has no next occurrence is completed (or failed,
-- when its last run failed), otherwise scheduled again.
CREATE FUNCTION musubi_run_settle(ch bigint, run bigint)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
	r	campaign_runs;
BEGIN
	UPDATE campaign_runs SET state = 'completed', finished_at = now(),
	    lease_owner = NULL, lease_until = NULL
	WHERE channel_id = ch AND id = run AND state = 'sending'
	    AND step = 3 AND NOT EXISTS (SELECT 1 FROM delivery_batches b
		WHERE b.channel_id = ch AND b.run_id = run
		AND b.state IN ('pending', 'sending'));
	SELECT * INTO r FROM campaign_runs WHERE channel_id = ch AND id = run;
	IF r.state NOT IN ('completed', 'failed', 'cancelled') THEN
		RETURN;
	END IF;
	UPDATE campaigns c SET
	    state = CASE WHEN c.next_run_at IS NOT NULL THEN 'scheduled'
		WHEN r.state = 'failed' THEN 'failed' ELSE 'completed' END,
	    status_reason = CASE WHEN r.state = 'failed'
		THEN r.status_reason ELSE c.status_reason END,
	    finished_at = CASE WHEN c.next_run_at IS NULL THEN now() END,
	    updated_at = now()
	WHERE c.channel_id = ch AND c.id = r.campaign_id
	    AND c.state = 'running'
	    AND NOT EXISTS (SELECT 1 FROM campaign_runs x
		WHERE x.channel_id = ch AND x.campaign_id = c.id
		AND x.state IN ('pending', 'preparing', 'sending', 'paused'));
END;
$$;

-- Fail a run (and, when whole, its campaign) with a reason; what was not
-- sent stays unsent.
CREATE FUNCTION musubi_run_fail(ch bigint, run bigint, reason text,
	whole_campaign boolean)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
	cid	bigint;
BEGIN
	UPDATE campaign_runs SET state = 'failed', status_reason = reason,
	    finished_at = now(), lease_owner = NULL, lease_until = NULL
	WHERE channel_id = ch AND id = run
	    AND state IN ('pending', 'preparing', 'sending', 'paused')
	RETURNING campaign_id INTO cid;
	IF cid IS NULL THEN
		RETURN;
	END IF;
	IF whole_campaign THEN
		UPDATE campaigns SET state = 'failed', status_reason = reason,
		    next_run_at = NULL, finished_at = now(),
		    updated_at = now()
		WHERE channel_id = ch AND id = cid
		    AND state IN ('scheduled', 'running', 'paused');
		UPDATE campaign_runs SET state = 'failed',
		    status_reason = reason, finished_at = now()
		WHERE channel_id = ch AND campaign_id = cid
		    AND state IN ('pending', 'preparing', 'sending', 'paused');
	END IF;
	PERFORM musubi_run_settle(ch, run);
END;
$$;

-- Renew the preparation lease of a run, or raise MS001 when this process
-- no longer holds it.  The first statement of every preparation step.
CREATE FUNCTION musubi_run_guard(ch bigint, run bigint, owner text,
	lease_ms integer, want_step integer)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
	UPDATE campaign_runs
	SET lease_until = now() + make_interval(secs => lease_ms / 1000.0)
	WHERE channel_id = ch AND id = run AND state = 'preparing'
	    AND lease_owner = owner AND step = want_step;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'run % is no longer prepared by this process',
		    run USING ERRCODE = 'MS001';
	END IF;
END;
$$;

-- After the snapshot (given its counts): refuse (MS002) when the quota
-- policy is refuse and friends had to be left out for the quota; else
-- record the counts and move to step 2, or, when the batches were built
-- by the same statement (multicast), to 3: sending.
CREATE FUNCTION musubi_run_snapshotted(ch bigint, run bigint,
	refuse boolean, total bigint, ok bigint, over bigint, built boolean)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
	IF refuse AND over > 0 THEN
		RAISE EXCEPTION 'quota: % recipients, % messages left this '
		    'month', ok + over, ok USING ERRCODE = 'MS002';
	END IF;
	UPDATE campaign_runs SET audience_count = total, sendable_count = ok,
	    step = CASE WHEN built THEN 3 ELSE 2 END,
	    state = CASE WHEN built THEN 'sending' ELSE state END,
	    started_at = CASE WHEN built THEN clock_timestamp()
		ELSE started_at END,
	    lease_owner = CASE WHEN built THEN NULL ELSE lease_owner END,
	    lease_until = CASE WHEN built THEN NULL ELSE lease_until END
	WHERE channel_id = ch AND id = run;
	-- The caller settles the run in its next statement: the batches its
	-- own statement wrote are not visible here.
END;
$$;

-- One scheduler pass: create the runs of due campaigns, defer runs that
-- fall in quiet hours, pause and resume sending runs at the edges of quiet
-- hours, and claim at most one run to prepare (returned, with what its
-- preparation needs).  Safe in any number of processes at once.
CREATE FUNCTION musubi_campaign_tick(owner text, lease_ms integer)
RETURNS TABLE (channel_id bigint, run_id bigint, campaign_id bigint,
	step smallint, built_friend bigint, audience jsonb, messages jsonb,
	personalized boolean, notification_disabled boolean,
	aggregation_unit text, quota_policy text, access_token text,
	frequency_cap integer, frequency_window_s integer,
	quota_remaining bigint, links jsonb)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
	rid	bigint;
	rch	bigint;
BEGIN
	-- Occurrences that are due become runs; the next one is computed
	-- from now, so a long outage does not replay every missed day.
	WITH due AS (
		SELECT c.channel_id, c.id, c.next_run_at, c.schedule,
		    ch.timezone
		FROM campaigns c JOIN channels ch ON ch.id = c.channel_id
		WHERE c.state IN ('scheduled', 'running')
		    AND c.next_run_at <= now()
		ORDER BY c.next_run_at LIMIT 100
		FOR UPDATE OF c SKIP LOCKED
	), ins AS (
		INSERT INTO campaign_runs (channel_id, campaign_id,
		    scheduled_at, not_before)
		SELECT d.channel_id, d.id, d.next_run_at, d.next_run_at
		FROM due d
		ON CONFLICT DO NOTHING
	)
	UPDATE campaigns c SET state = 'running', updated_at = now(),
	    next_run_at = musubi_campaign_next(d.schedule, d.timezone,
		greatest(now(), d.next_run_at))
	FROM due d WHERE c.channel_id = d.channel_id AND c.id = d.id;

	-- Quiet hours, evaluated afresh at every pass so a policy change
	-- counts at once: due runs wait while the window is closed ...
	CREATE TEMP TABLE IF NOT EXISTS musubi_quiet (channel_id bigint,
	    id bigint, state text, until timestamptz) ON COMMIT DROP;
	TRUNCATE musubi_quiet;
	INSERT INTO musubi_quiet
	SELECT r2.channel_id, r2.id, r2.state,
	    musubi_quiet_until(ch.timezone, p.quiet_start, p.quiet_end, now())
	FROM campaign_runs r2
	JOIN campaigns c ON c.channel_id = r2.channel_id
	    AND c.id = r2.campaign_id
	JOIN channels ch ON ch.id = r2.channel_id,
	LATERAL musubi_campaign_policies(r2.channel_id, c.policies) p
	WHERE (r2.state = 'pending' AND r2.not_before <= now())
	    OR r2.state = 'sending'
	    OR (r2.state = 'paused' AND r2.resume_at IS NOT NULL);
	UPDATE campaign_runs r SET status_reason = 'deferred: quiet hours '
	    'until ' || to_char(q.until AT TIME ZONE 'UTC',
	    'YYYY-MM-DD"T"HH24:MI:SS"Z"')
	FROM musubi_quiet q
	WHERE r.channel_id = q.channel_id AND r.id = q.id
	    AND q.state = 'pending' AND q.until IS NOT NULL
	    AND r.status_reason IS DISTINCT FROM 'deferred: quiet hours '
	    'until ' || to_char(q.until AT TIME ZONE 'UTC',
	    'YYYY-MM-DD"T"HH24:MI:SS"Z"');
	-- ... sending runs pause when it closes, and resume when it opens.
	UPDATE campaign_runs r SET state = 'paused', resume_at = q.until,
	    status_reason = 'paused: quiet hours until ' ||
		to_char(q.until AT TIME ZONE 'UTC',
		'YYYY-MM-DD"T"HH24:MI:SS"Z"')
	FROM musubi_quiet q
	WHERE r.channel_id = q.channel_id AND r.id = q.id
	    AND q.state = 'sending' AND r.state = 'sending'
	    AND q.until IS NOT NULL;
	UPDATE campaign_runs r SET state = 'sending', resume_at = NULL,
	    status_reason = NULL
	FROM musubi_quiet q
	WHERE r.channel_id = q.channel_id AND r.id = q.id
	    AND q.state = 'paused' AND r.state = 'paused'
	    AND r.resume_at IS NOT NULL AND q.until IS NULL;

	-- Batches of cancelled runs whose sender died before recording an
	-- outcome: their lease has run out, nobody will send them now.
	UPDATE delivery_batches b SET state = 'cancelled', lease_owner = NULL
	FROM campaign_runs r
	WHERE b.state = 'sending' AND b.next_attempt_at < now()
	    AND r.channel_id = b.channel_id AND r.id = b.run_id
	    AND r.state = 'cancelled';

	-- Claim one run to prepare: new, or abandoned by a dead process.
	SELECT r.channel_id, r.id INTO rch, rid
	FROM campaign_runs r
	WHERE r.state IN ('pending', 'preparing') AND r.not_before <= now()
	    AND (r.state = 'pending' OR r.lease_until < now())
	    AND NOT EXISTS (SELECT 1 FROM musubi_quiet q
		WHERE q.channel_id = r.channel_id AND q.id = r.id
		AND q.until IS NOT NULL)
	ORDER BY r.not_before
	LIMIT 1
	FOR UPDATE SKIP LOCKED;
	IF rid IS NULL THEN
		RETURN;
	END IF;
	UPDATE campaign_runs r SET state = 'preparing', lease_owner = $1,
	    lease_until = now() + make_interval(secs => lease_ms / 1000.0),
	    status_reason = NULL
	WHERE r.channel_id = rch AND r.id = rid;

	RETURN QUERY
	SELECT r.channel_id, r.id, r.campaign_id, r.step, r.built_friend,
	    c.audience, c.messages, c.personalized, c.notification_disabled,
	    c.aggregation_unit, c.quota_policy, ch.access_token,
	    p.frequency_cap, p.frequency_window_s, r.quota_remaining, r.links
	FROM campaign_runs r
	JOIN campaigns c ON c.channel_id = r.channel_id
	    AND c.id = r.campaign_id
	JOIN channels ch ON ch.id = r.channel_id,
	LATERAL musubi_campaign_policies(r.channel_id, c.policies) p
	WHERE r.channel_id = rch AND r.id = rid;
END;
$$;

-- Claim up to lim due batches for this process: pending ones whose time
-- has come and sending ones whose lease expired (their sender died).  The
-- lease is next_attempt_at; attempts counts claims, and an outcome is
-- applied only to the attempt it answers.  Also keeps this sender's
-- heartbeat, returns how many senders share the rate limits, and, as rows
-- of kind 'stop', which of the runs in held (those the sender has batches
-- of waiting in memory) are no longer sending (paused, cancelled, failed).
CREATE FUNCTION musubi_batches_claim(p_owner text, lim integer,
	lease_ms integer, held bigint[])
RETURNS TABLE (channel_id bigint, id bigint, run_id bigint, kind text,
	attempts integer, retry_key uuid, body text, access_token text,
	senders integer)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
	n	integer;
BEGIN
	INSERT INTO sender_heartbeats AS h (owner, seen_at)
	VALUES (p_owner, now())
	ON CONFLICT (owner) DO UPDATE SET seen_at = now();
	SELECT count(*) INTO n FROM sender_heartbeats h
	WHERE h.seen_at > now() - interval '10 seconds';
	RETURN QUERY
	SELECT r.channel_id, 0::bigint, r.id, 'stop'::text, 0, NULL::uuid,
	    NULL::text, NULL::text, n
	FROM campaign_runs r
	WHERE r.id = ANY (held) AND r.state <> 'sending';
	IF lim <= 0 THEN
		RETURN;
	END IF;
	RETURN QUERY
	WITH c AS (
		SELECT b.channel_id, b.id
		FROM delivery_batches b
		JOIN campaign_runs r ON r.channel_id = b.channel_id
		    AND r.id = b.run_id
		WHERE b.state IN ('pending', 'sending')
		    AND b.next_attempt_at <= now() AND r.state = 'sending'
		ORDER BY b.next_attempt_at
		LIMIT lim
		FOR UPDATE OF b SKIP LOCKED
	)
	UPDATE delivery_batches b SET state = 'sending',
	    attempts = b.attempts + 1, lease_owner = p_owner,
	    first_attempt_at = coalesce(b.first_attempt_at, now()),
	    last_attempt_at = now(),
	    next_attempt_at = now() + make_interval(secs => lease_ms / 1000.0)
	FROM c, channels ch
	WHERE b.channel_id = c.channel_id AND b.id = c.id
	    AND ch.id = b.channel_id
	RETURNING b.channel_id, b.id, b.run_id, b.kind, b.attempts,
	    b.retry_key, b.body::text, ch.access_token, n;
END;
$$;

-- The friend of a batch's delivery number seq.
CREATE FUNCTION musubi_seq_friend(b delivery_batches, want integer)
RETURNS bigint
LANGUAGE sql STABLE AS $$
	SELECT d.friend_id FROM deliveries d
	WHERE d.channel_id = b.channel_id AND d.run_id = b.run_id
	    AND d.friend_id BETWEEN b.flo AND b.fhi AND d.seq = want;
$$;

-- Record what LINE answered.  results: a JSON array of
--   {c: channel, b: batch, a: attempt, o: outcome, s: HTTP status,
--    q: x-line-request-id, x: x-line-accepted-request-id, e: error,
--    d: retry delay ms, i: index of the refused recipient}
-- outcomes: sent (2xx), accepted (409), retry (5xx, timeout: same key
-- later, within 24 h of the first attempt), ratelimit (429: later),
-- release (never sent: pending again now), quota (429 monthly limit: the
-- run fails), auth (401/403: the campaign fails), bad (400: isolate
-- recipient i of a multicast, i = -2 split in halves, -1 fail the batch),
-- bad_messages (400 on the messages: the run fails), failed (gave up).
CREATE FUNCTION musubi_batches_record(owner text, results jsonb)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
	r	record;
	b	delivery_batches;
	applied	integer := 0;
	n	integer;
	cut	integer;
	runs	bigint[] := '{}';
	chans	bigint[] := '{}';
BEGIN
	FOR r IN SELECT * FROM jsonb_to_recordset(results) AS x(c bigint,
	    b bigint, a integer, o text, s integer, q text, x text, e text,
	    d bigint, i integer)
	LOOP
		SELECT * INTO b FROM delivery_batches
		WHERE channel_id = r.c AND id = r.b AND state = 'sending'
		    AND attempts = r.a
		FOR UPDATE;
		IF NOT FOUND THEN
			CONTINUE;	-- stale: another attempt owns it now
		END IF;
		applied := applied + 1;
		runs := runs || b.run_id;
		chans := chans || b.channel_id;
		n := b.hi - b.lo + 1;
		IF r.o NOT IN ('sent', 'accepted') AND EXISTS (SELECT 1
		    FROM campaign_runs x WHERE x.channel_id = b.channel_id
		    AND x.id = b.run_id AND x.state = 'cancelled') THEN
			-- Cancelled while in flight: no retry, no split.
			UPDATE delivery_batches SET state = 'cancelled',
			    last_status = r.s, request_id = r.q,
			    last_error = r.e, lease_owner = NULL
			WHERE channel_id = b.channel_id AND id = b.id;
		ELSIF r.o IN ('sent', 'accepted') THEN
			UPDATE delivery_batches SET state = 'sent',
			    sent_at = now(), last_status = r.s,
			    request_id = r.q, accepted_request_id = r.x,
			    last_error = NULL, lease_owner = NULL
			WHERE channel_id = b.channel_id AND id = b.id;
		ELSIF r.o = 'release' THEN
			UPDATE delivery_batches SET state = 'pending',
			    next_attempt_at = now(), lease_owner = NULL
			WHERE channel_id = b.channel_id AND id = b.id;
		ELSIF r.o IN ('retry', 'ratelimit') AND
		    now() + make_interval(secs => r.d / 1000.0) <
		    b.first_attempt_at + interval '23 hours 45 minutes' THEN
			UPDATE delivery_batches SET state = 'pending',
			    next_attempt_at = now() +
				make_interval(secs => r.d / 1000.0),
			    last_status = r.s, request_id = r.q,
			    last_error = r.e, lease_owner = NULL
			WHERE channel_id = b.channel_id AND id = b.id;
		ELSIF r.o IN ('quota', 'auth') THEN
			-- Not accepted by LINE: the batch stays sendable,
			-- the run (or campaign) stops.
			UPDATE delivery_batches SET state = 'pending',
			    next_attempt_at = now(), last_status = r.s,
			    request_id = r.q, last_error = r.e,
			    lease_owner = NULL
			WHERE channel_id = b.channel_id AND id = b.id;
			PERFORM musubi_run_fail(b.channel_id, b.run_id,
			    CASE r.o WHEN 'quota' THEN 'quota: ' || r.e
			    ELSE 'unauthorized: ' || r.e END, r.o = 'auth');
		ELSIF r.o = 'bad' AND b.kind = 'multicast' AND n > 1 AND
		    (r.i = -2 OR (r.i >= 0 AND r.i < n)) THEN
			-- LINE sent nothing: isolate the refused recipient
			-- (or halve), new keys for the rest.
			UPDATE delivery_batches SET state = 'split',
			    last_status = r.s, request_id = r.q,
			    last_error = r.e, lease_owner = NULL
			WHERE channel_id = b.channel_id AND id = b.id;
			IF r.i >= 0 THEN
				UPDATE deliveries SET failure = r.e
				WHERE channel_id = b.channel_id
				    AND run_id = b.run_id
				    AND friend_id BETWEEN b.flo AND b.fhi
				    AND seq = b.lo + r.i;
				INSERT INTO delivery_batches (channel_id,
				    run_id, kind, lo, hi, flo, fhi, parent_id,
				    retry_key, body)
				SELECT b.channel_id, b.run_id, b.kind,
				    b.lo + p.f, b.lo + p.t,
				    musubi_seq_friend(b, b.lo + p.f),
				    musubi_seq_friend(b, b.lo + p.t), b.id,
				    gen_random_uuid(),
				    jsonb_set(b.body, '{to}', (SELECT
					jsonb_agg(e ORDER BY k) FROM
					jsonb_array_elements(b.body->'to')
					WITH ORDINALITY AS t(e, k)
					WHERE k - 1 BETWEEN p.f AND p.t))
				FROM (VALUES (0, r.i - 1),
				    (r.i + 1, n - 1)) AS p(f, t)
				WHERE p.f <= p.t;
			ELSE
				cut := n / 2;
				INSERT INTO delivery_batches (channel_id,
				    run_id, kind, lo, hi, flo, fhi, parent_id,
				    retry_key, body)
				SELECT b.channel_id, b.run_id, b.kind,
				    b.lo + p.f, b.lo + p.t,
				    musubi_seq_friend(b, b.lo + p.f),
				    musubi_seq_friend(b, b.lo + p.t), b.id,
				    gen_random_uuid(),
				    jsonb_set(b.body, '{to}', (SELECT
					jsonb_agg(e ORDER BY k) FROM
					jsonb_array_elements(b.body->'to')
					WITH ORDINALITY AS t(e, k)
					WHERE k - 1 BETWEEN p.f AND p.t))
				FROM (VALUES (0, cut - 1),
				    (cut, n - 1)) AS p(f, t);
			END IF;
		ELSE
			-- bad, bad_messages, failed, or retries past the
			-- retry key's lifetime: this batch failed for good.
			UPDATE delivery_batches SET state = 'failed',
			    last_status = r.s, request_id = r.q,
			    last_error = coalesce(r.e, r.o),
			    lease_owner = NULL
			WHERE channel_id = b.channel_id AND id = b.id;
			UPDATE deliveries SET failure = coalesce(r.e, r.o)
			WHERE channel_id = b.channel_id AND run_id = b.run_id
			    AND friend_id BETWEEN b.flo AND b.fhi
			    AND seq BETWEEN b.lo AND b.hi;
			IF r.o = 'bad_messages' THEN
				PERFORM musubi_run_fail(b.channel_id,
				    b.run_id, 'LINE refused the messages: ' ||
				    coalesce(r.e, ''), false);
			END IF;
		END IF;
	END LOOP;
	FOR r IN SELECT DISTINCT u.c, u.r
	    FROM unnest(chans, runs) AS u(c, r)
	LOOP
		PERFORM musubi_run_settle(r.c, r.r);
	END LOOP;
	RETURN applied;
END;
$$;

-- Check a campaign's audience against the channel: NULL when usable,
-- otherwise 'not_found' (a segment or snapshot of no such id in this
-- channel), 'unavailable' (segments are not installed), or 'friend:N'
-- (the 0-based index of the first user id that is no friend here).
CREATE FUNCTION musubi_campaign_audience_check(ch bigint, aud jsonb)
RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
	i	bigint;
	ok	boolean;
BEGIN
	IF aud->>'type' = 'friends' THEN
		SELECT u.n - 1 INTO i
		FROM jsonb_array_elements_text(aud->'user_ids')
		    WITH ORDINALITY AS u(uid, n)
		WHERE NOT EXISTS (SELECT 1 FROM friends f
		    WHERE f.channel_id = ch AND f.user_id = u.uid)
		ORDER BY u.n LIMIT 1;
		RETURN CASE WHEN i IS NULL THEN NULL ELSE 'friend:' || i END;
	ELSIF aud->>'type' = 'segment' THEN
		IF to_regclass('segments') IS NULL THEN
			RETURN 'unavailable';
		END IF;
		EXECUTE 'SELECT EXISTS (SELECT 1 FROM segments '
		    'WHERE channel_id = $1 AND id = $2)'
		    INTO ok USING ch, (aud->>'segment_id')::bigint;
		RETURN CASE WHEN ok THEN NULL ELSE 'not_found' END;
	ELSIF aud->>'type' = 'snapshot' THEN
		IF to_regclass('segment_snapshots') IS NULL THEN
			RETURN 'unavailable';
		END IF;
		EXECUTE 'SELECT EXISTS (SELECT 1 FROM segment_snapshots '
		    'WHERE channel_id = $1 AND id = $2)'
		    INTO ok USING ch, (aud->>'snapshot_id')::bigint;
		RETURN CASE WHEN ok THEN NULL ELSE 'not_found' END;
	END IF;
	RETURN NULL;
END;
$$;

-- When a schedule first fires, from now: NULL when never (in the past).
CREATE FUNCTION musubi_campaign_first(sched jsonb, tz text)
RETURNS timestamptz
LANGUAGE plpgsql STABLE AS $$
BEGIN
	IF sched->>'type' = 'now' THEN
		RETURN now();
	ELSIF sched->>'type' = 'at' THEN
		IF (sched->>'at')::timestamptz <= now() THEN
			RETURN NULL;
		END IF;
		RETURN (sched->>'at')::timestamptz;
	END IF;
	RETURN musubi_campaign_next(sched, tz, now());
END;
$$;

-- The marketer's actions on a campaign: schedule, pause, resume, cancel.
-- Returns 'ok', 'not_found', 'past' (the schedule has no future
-- occurrence) or 'conflict:<state>'.
CREATE FUNCTION musubi_campaign_action(ch bigint, cid bigint, action text)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
	c	campaigns;
	nxt	timestamptz;
	tz	text;
BEGIN
	SELECT * INTO c FROM campaigns WHERE channel_id = ch AND id = cid
	FOR UPDATE;
	IF NOT FOUND THEN
		RETURN 'not_found';
	END IF;
	IF action = 'schedule' THEN
		IF c.state <> 'draft' THEN
			RETURN 'conflict:' || c.state;
		END IF;
		SELECT timezone INTO tz FROM channels WHERE id = ch;
		nxt := musubi_campaign_first(c.schedule, tz);
		IF nxt IS NULL THEN
			RETURN 'past';
		END IF;
		UPDATE campaigns SET state = 'scheduled', next_run_at = nxt,
		    status_reason = NULL, updated_at = now()
		WHERE channel_id = ch AND id = cid;
	ELSIF action = 'pause' THEN
		IF c.state NOT IN ('scheduled', 'running') THEN
			RETURN 'conflict:' || c.state;
		END IF;
		UPDATE campaign_runs SET state = 'paused', resume_at = NULL,
		    lease_owner = NULL, lease_until = NULL,
		    status_reason = 'paused'
		WHERE channel_id = ch AND campaign_id = cid
		    AND state IN ('pending', 'preparing', 'sending', 'paused');
		UPDATE campaigns SET state = 'paused', updated_at = now()
		WHERE channel_id = ch AND id = cid;
	ELSIF action = 'resume' THEN
		IF c.state <> 'paused' THEN
			RETURN 'conflict:' || c.state;
		END IF;
		UPDATE campaign_runs SET state = CASE WHEN step = 3
		    THEN 'sending' ELSE 'pending' END, status_reason = NULL,
		    not_before = least(not_before, now())
		WHERE channel_id = ch AND campaign_id = cid
		    AND state = 'paused';
		UPDATE campaigns SET updated_at = now(),
		    state = CASE WHEN EXISTS (SELECT 1 FROM campaign_runs r
			WHERE r.channel_id = ch AND r.campaign_id = cid
			AND r.state IN ('pending', 'sending'))
			THEN 'running' ELSE 'scheduled' END
		WHERE channel_id = ch AND id = cid;
		PERFORM musubi_run_settle(ch, r.id) FROM campaign_runs r
		WHERE r.channel_id = ch AND r.campaign_id = cid
		    AND r.state = 'sending';
	ELSIF action = 'cancel' THEN
		IF c.state IN ('completed', 'cancelled', 'failed') THEN
			RETURN 'conflict:' || c.state;
		END IF;
		UPDATE delivery_batches b SET state = 'cancelled'
		FROM campaign_runs r
		WHERE r.channel_id = ch AND r.campaign_id = cid
		    AND r.state IN ('pending', 'preparing', 'sending', 'paused')
		    AND b.channel_id = ch AND b.run_id = r.id
		    AND b.state = 'pending';
		UPDATE campaign_runs SET state = 'cancelled',
		    finished_at = now(), lease_owner = NULL,
		    lease_until = NULL, status_reason = 'cancelled'
		WHERE channel_id = ch AND campaign_id = cid
		    AND state IN ('pending', 'preparing', 'sending', 'paused');
		UPDATE campaigns SET state = 'cancelled', next_run_at = NULL,
		    finished_at = now(), updated_at = now()
		WHERE channel_id = ch AND id = cid;
	ELSE
		RAISE EXCEPTION 'unknown campaign action %', action;
	END IF;
	RETURN 'ok';
END;
$$;

-- Conversions of some runs (of one campaign) inside an attribution window
-- of days:
--   delivery: orders placed by a friend a run reached, from when that run
--     started sending until days later
--   click: orders placed by a friend after that friend's first click on a
--     link of the runs, until days later (push links name the friend;
--     multicast links do not, so multicast runs have clicks but no
--     click-through conversions)
-- An order counts once however many runs reached its friend; it counts
-- when orders.revenue_state = 'counted', for its net.  NULL while the shop
-- tables (sql/003_shops.sql) are not installed.
CREATE FUNCTION musubi_conversions(ch bigint, runs bigint[], days integer)
RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
	dv	record;
	ck	record;
BEGIN
	IF to_regclass('orders') IS NULL OR
	    to_regclass('friend_customer_links') IS NULL THEN
		RETURN NULL;
	END IF;
	EXECUTE 'SELECT count(*) AS n, coalesce(sum(o.net), 0) AS rev, '
	    'min(o.currency) AS cur, count(DISTINCT o.currency) AS ncur '
	    'FROM orders o WHERE o.channel_id = $1 '
	    'AND o.revenue_state = ''counted'' AND EXISTS (SELECT 1 '
	    'FROM friend_customer_links k JOIN deliveries d '
	    'ON d.channel_id = k.channel_id AND d.run_id = ANY ($2) '
	    'AND d.friend_id = k.friend_id AND d.failure IS NULL '
	    'JOIN campaign_runs r ON r.channel_id = d.channel_id '
	    'AND r.id = d.run_id '
	    'JOIN delivery_batches b ON b.channel_id = d.channel_id '
	    'AND b.run_id = d.run_id AND b.state = ''sent'' '
	    'AND d.friend_id BETWEEN b.flo AND b.fhi '
	    'AND d.seq BETWEEN b.lo AND b.hi '
	    'WHERE k.channel_id = o.channel_id '
	    'AND k.customer_id = o.customer_id AND k.unlinked_at IS NULL '
	    'AND o.placed_at >= r.started_at AND o.placed_at < '
	    'r.started_at + make_interval(days => $3))'
	    INTO dv USING ch, runs, days;
	EXECUTE 'SELECT count(*) AS n, coalesce(sum(o.net), 0) AS rev, '
	    'min(o.currency) AS cur, count(DISTINCT o.currency) AS ncur '
	    'FROM orders o WHERE o.channel_id = $1 '
	    'AND o.revenue_state = ''counted'' AND EXISTS (SELECT 1 '
	    'FROM friend_customer_links k JOIN (SELECT c.friend_id, '
	    'min(c.clicked_at) AS t FROM clicks c WHERE c.channel_id = $1 '
	    'AND c.run_id = ANY ($2) AND c.friend_id IS NOT NULL '
	    'GROUP BY c.friend_id) fc ON fc.friend_id = k.friend_id '
	    'WHERE k.channel_id = o.channel_id '
	    'AND k.customer_id = o.customer_id AND k.unlinked_at IS NULL '
	    'AND o.placed_at >= fc.t AND o.placed_at < fc.t + '
	    'make_interval(days => $3))'
	    INTO ck USING ch, runs, days;
	RETURN jsonb_build_object(
	    'attribution_days', days,
	    'delivery', jsonb_build_object('orders', dv.n,
		'revenue', dv.rev::text, 'currency', CASE
		WHEN dv.ncur > 1 THEN 'mixed' ELSE dv.cur END),
	    'click', jsonb_build_object('orders', ck.n,
		'revenue', ck.rev::text, 'currency', CASE
		WHEN ck.ncur > 1 THEN 'mixed' ELSE ck.cur END));
END;
$$;

-- The numbers of one run: the audience and what became of each friend
-- (sent, queued, cancelled, failed, skipped by reason), the requests it
-- took, clicks and unique clickers (a friend, or for anonymous multicast
-- links an IP hash), and the conversions.
CREATE FUNCTION musubi_run_report(ch bigint, run bigint, days integer)
RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
	r	campaign_runs;
	st	record;
	sk	jsonb;
	cl	record;
	failed	bigint;
BEGIN
	SELECT * INTO r FROM campaign_runs WHERE channel_id = ch AND id = run;
	IF NOT FOUND THEN
		RETURN NULL;
	END IF;
	SELECT coalesce(sum(hi - lo + 1) FILTER (WHERE state = 'sent'), 0)
		AS sent,
	    coalesce(sum(hi - lo + 1) FILTER (WHERE state IN ('pending',
		'sending')), 0) AS queued,
	    coalesce(sum(hi - lo + 1) FILTER (WHERE state = 'cancelled'), 0)
		AS cancelled,
	    count(*) AS requests
	INTO st
	FROM delivery_batches WHERE channel_id = ch AND run_id = run
	    AND state <> 'split';
	SELECT count(*) INTO failed FROM deliveries
	WHERE channel_id = ch AND run_id = run AND failure IS NOT NULL;
	SELECT coalesce(jsonb_object_agg(x.skip_reason, x.n), '{}') INTO sk
	FROM (SELECT skip_reason, count(*) AS n FROM deliveries
	    WHERE channel_id = ch AND run_id = run AND skip_reason IS NOT NULL
	    GROUP BY skip_reason) x;
	SELECT count(*) AS clicks, count(DISTINCT coalesce(friend_id::text,
	    'ip:' || ip_hash)) AS uniq
	INTO cl FROM clicks WHERE channel_id = ch AND run_id = run;
	RETURN jsonb_build_object(
	    'run_id', r.id,
	    'scheduled_at', r.scheduled_at,
	    'started_at', r.started_at,
	    'finished_at', r.finished_at,
	    'state', r.state,
	    'status_reason', r.status_reason,
	    'audience', coalesce(r.audience_count, 0),
	    'sent', st.sent,
	    'queued', st.queued,
	    'cancelled', st.cancelled,
	    'failed', failed,
	    'skipped', sk,
	    'requests', st.requests,
	    'quota_remaining_at_start', r.quota_remaining,
	    'clicks', cl.clicks,
	    'unique_clickers', cl.uniq,
	    'conversions', CASE WHEN r.started_at IS NULL THEN NULL
		ELSE musubi_conversions(ch, ARRAY[run], days) END);
END;
$$;

-- A campaign's report: its runs' reports (one run, or all) and totals.
-- Unique clickers and conversions of the totals count each friend and
-- each order once across runs.
CREATE FUNCTION musubi_campaign_report(ch bigint, cid bigint, one_run bigint)
RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
	c	campaigns;
	runs	jsonb;
	ids	bigint[];
	tot	jsonb;
	uniq	bigint;
BEGIN
	SELECT * INTO c FROM campaigns WHERE channel_id = ch AND id = cid;
	IF NOT FOUND THEN
		RETURN NULL;
	END IF;
	SELECT coalesce(array_agg(r.id ORDER BY r.id), '{}') INTO ids
	FROM campaign_runs r WHERE r.channel_id = ch AND r.campaign_id = cid
	    AND (one_run IS NULL OR r.id = one_run);
	IF one_run IS NOT NULL AND cardinality(ids) = 0 THEN
		RETURN NULL;
	END IF;
	SELECT coalesce(jsonb_agg(musubi_run_report(ch, x, c.attribution_days)
	    ORDER BY x), '[]') INTO runs FROM unnest(ids) AS x;
	SELECT count(DISTINCT coalesce(friend_id::text, 'ip:' || ip_hash))
	INTO uniq FROM clicks WHERE channel_id = ch AND run_id = ANY (ids);
	SELECT jsonb_build_object(
	    'audience', coalesce(sum((e->>'audience')::bigint), 0),
	    'sent', coalesce(sum((e->>'sent')::bigint), 0),
	    'queued', coalesce(sum((e->>'queued')::bigint), 0),
	    'cancelled', coalesce(sum((e->>'cancelled')::bigint), 0),
	    'failed', coalesce(sum((e->>'failed')::bigint), 0),
	    'requests', coalesce(sum((e->>'requests')::bigint), 0),
	    'clicks', coalesce(sum((e->>'clicks')::bigint), 0),
	    'unique_clickers', uniq,
	    'skipped', (SELECT coalesce(jsonb_object_agg(k, n), '{}') FROM
		(SELECT s.key AS k, sum(s.value::bigint) AS n
		FROM jsonb_array_elements(runs) AS r2,
		jsonb_each_text(r2->'skipped') AS s GROUP BY s.key) y))
	INTO tot FROM jsonb_array_elements(runs) AS e;
	tot := tot || jsonb_build_object('conversions',
	    musubi_conversions(ch, ARRAY(SELECT r.id FROM campaign_runs r
		WHERE r.id = ANY (ids) AND r.channel_id = ch
		AND r.started_at IS NOT NULL), c.attribution_days));
	RETURN jsonb_build_object('campaign_id', c.id, 'name', c.name,
	    'state', c.state, 'status_reason', c.status_reason,
	    'attribution_days', c.attribution_days,
	    'totals', tot, 'runs', runs);
END;
$$;
