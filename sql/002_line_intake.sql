-- 002_line_intake: the LINE webhook inbox, friends, their timeline and tags.
--
-- webhook_events is the inbox: a delivery's events are committed here (one
-- row each, deduplicated on the event id) before LINE gets its 200.  The
-- processor applies pending rows with musubi_line_apply(), which claims them
-- with FOR UPDATE SKIP LOCKED inside its own transaction, so any number of
-- musubid processes share the work and none applies an event twice; a crash
-- rolls the claim back and the rows stay pending.

CREATE TABLE webhook_events (
	channel_id	bigint NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
	id		bigint GENERATED ALWAYS AS IDENTITY,
	-- webhookEventId, or "h:" + SHA-256 of the event when it has none
	event_id	text NOT NULL,
	received_at	timestamptz NOT NULL DEFAULT now(),
	request_id	text,
	type		text NOT NULL,
	-- event timestamp (LINE sends milliseconds); NULL if missing/invalid
	event_ts	timestamptz,
	mode		text,
	user_id		text,
	redelivery	boolean NOT NULL DEFAULT false,
	payload		jsonb NOT NULL,
	-- 0 pending, 1 applied, 2 stored but malformed (see problem)
	state		smallint NOT NULL DEFAULT 0,
	problem		text,
	applied_at	timestamptz,
	PRIMARY KEY (channel_id, id),
	UNIQUE (channel_id, event_id)
);
CREATE INDEX webhook_events_pending ON webhook_events (id)
	WHERE state = 0;

CREATE TABLE friends (
	channel_id		bigint NOT NULL REFERENCES channels (id)
				ON DELETE CASCADE,
	id			bigint GENERATED ALWAYS AS IDENTITY,
	user_id			text NOT NULL,
	-- following | blocked | unknown (seen, e.g. in a group, never followed)
	status			text NOT NULL DEFAULT 'unknown'
				CHECK (status IN ('following', 'blocked',
				'unknown')),
	-- timestamp of the follow/unfollow event that set status
	status_at		timestamptz,
	followed_at		timestamptz,
	first_followed_at	timestamptz,
	unfollowed_at		timestamptz,
	follow_count		integer NOT NULL DEFAULT 0,
	is_unblocked		boolean,
	display_name		text,
	picture_url		text,
	status_message		text,
	language		text,
	-- pending | ok | unavailable (LINE said 404) | failed (gave up)
	profile_state		text NOT NULL DEFAULT 'pending',
	profile_attempts	integer NOT NULL DEFAULT 0,
	profile_next_at		timestamptz NOT NULL DEFAULT now(),
	profile_updated_at	timestamptz,
	last_event_at		timestamptz,
	created_at		timestamptz NOT NULL DEFAULT now(),
	updated_at		timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (channel_id, id),
	UNIQUE (channel_id, user_id)
);
CREATE INDEX friends_status ON friends (channel_id, status, id);
CREATE INDEX friends_followed ON friends (channel_id, followed_at);
CREATE INDEX friends_profile_due ON friends (profile_next_at)
	WHERE profile_state = 'pending';

-- Everything a friend (or a group/room) did: one row per applied event.
CREATE TABLE interactions (
	channel_id	bigint NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
	id		bigint GENERATED ALWAYS AS IDENTITY,
	event_id	text NOT NULL,
	friend_id	bigint,
	user_id		text,
	type		text NOT NULL,
	-- message type (text, image, sticker...), beacon type, link result...
	subtype		text,
	event_ts	timestamptz,
	mode		text,
	source_type	text,
	group_id	text,
	message_id	text,
	-- message text; NULL after an unsend
	text		text,
	postback_data	text,
	payload		jsonb NOT NULL,
	unsent		boolean NOT NULL DEFAULT false,
	created_at	timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (channel_id, id),
	UNIQUE (channel_id, event_id)
);
CREATE INDEX interactions_friend ON interactions (channel_id, friend_id,
	event_ts DESC, id DESC);
CREATE INDEX interactions_message ON interactions (channel_id, message_id)
	WHERE message_id IS NOT NULL;
CREATE INDEX interactions_type ON interactions (channel_id, type, event_ts);

CREATE TABLE tags (
	channel_id	bigint NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
	id		bigint GENERATED ALWAYS AS IDENTITY,
	name		text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
	created_at	timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (channel_id, id),
	UNIQUE (channel_id, name)
);

CREATE TABLE friend_tags (
	channel_id	bigint NOT NULL,
	friend_id	bigint NOT NULL,
	tag_id		bigint NOT NULL,
	created_at	timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (channel_id, friend_id, tag_id),
	FOREIGN KEY (channel_id, friend_id) REFERENCES friends (channel_id, id)
		ON DELETE CASCADE,
	FOREIGN KEY (channel_id, tag_id) REFERENCES tags (channel_id, id)
		ON DELETE CASCADE
);
CREATE INDEX friend_tags_tag ON friend_tags (channel_id, tag_id);

-- Apply up to lim pending inbox rows in one transaction.  Returns what was
-- done, and the friends whose profile should be fetched now.
CREATE FUNCTION musubi_line_apply(lim integer,
	OUT applied integer, OUT malformed integer, OUT profiles bigint[])
LANGUAGE plpgsql AS $$
BEGIN
	CREATE TEMP TABLE IF NOT EXISTS musubi_batch (
		channel_id bigint, id bigint, event_id text, type text,
		event_ts timestamptz, mode text, user_id text, payload jsonb,
		problem text) ON COMMIT DROP;
	TRUNCATE musubi_batch;

	INSERT INTO musubi_batch
	SELECT w.channel_id, w.id, w.event_id, w.type, w.event_ts, w.mode,
	    w.user_id, w.payload,
	    CASE
	    WHEN w.type = '' THEN 'event has no type'
	    WHEN w.event_ts IS NULL THEN 'event has no valid timestamp'
	    WHEN w.user_id IS NOT NULL AND w.user_id !~ '^U[0-9a-f]{32}$'
	      THEN 'source.userId is not a LINE user id'
	    WHEN w.type IN ('follow', 'unfollow') AND w.user_id IS NULL
	      THEN w.type || ' event without source.userId'
	    END
	FROM webhook_events w
	WHERE w.state = 0
	ORDER BY w.id
	LIMIT lim
	FOR UPDATE SKIP LOCKED;

	-- Friends: create any user seen; usable ids only.
	INSERT INTO friends AS f (channel_id, user_id, last_event_at)
	SELECT b.channel_id, b.user_id, max(b.event_ts)
	FROM musubi_batch b
	WHERE b.problem IS NULL AND b.user_id IS NOT NULL
	GROUP BY b.channel_id, b.user_id
	ON CONFLICT (channel_id, user_id) DO UPDATE
	SET last_event_at = greatest(f.last_event_at, excluded.last_event_at);

	-- Status follows event time, not arrival: only the newest follow or
	-- unfollow in the batch counts, and only if newer than the one that
	-- set the current status.
	WITH latest AS (
		SELECT DISTINCT ON (b.channel_id, b.user_id)
		    b.channel_id, b.user_id, b.type, b.event_ts,
		    CASE WHEN jsonb_typeof(b.payload #> '{follow,isUnblocked}')
			= 'boolean' THEN (b.payload #>> '{follow,isUnblocked}')::boolean
		    END AS unblocked
		FROM musubi_batch b
		WHERE b.problem IS NULL AND b.type IN ('follow', 'unfollow')
		ORDER BY b.channel_id, b.user_id, b.event_ts DESC, b.id DESC
	), follows AS (
		SELECT b.channel_id, b.user_id, count(*) AS n,
		    min(b.event_ts) AS first_ts, max(b.event_ts) AS last_ts
		FROM musubi_batch b
		WHERE b.problem IS NULL AND b.type = 'follow'
		GROUP BY b.channel_id, b.user_id
	), unfollows AS (
		SELECT b.channel_id, b.user_id, max(b.event_ts) AS last_ts
		FROM musubi_batch b
		WHERE b.problem IS NULL AND b.type = 'unfollow'
		GROUP BY b.channel_id, b.user_id
	)
	UPDATE friends f SET
	    status = CASE WHEN f.status_at IS NULL OR l.event_ts > f.status_at
		THEN CASE l.type WHEN 'follow' THEN 'following'
		    ELSE 'blocked' END
		ELSE f.status END,
	    status_at = greatest(f.status_at, l.event_ts),
	    is_unblocked = CASE WHEN l.type = 'follow' AND
		(f.status_at IS NULL OR l.event_ts > f.status_at)
		THEN l.unblocked ELSE f.is_unblocked END,
	    followed_at = greatest(f.followed_at, fo.last_ts),
	    first_followed_at = least(f.first_followed_at, fo.first_ts),
	    follow_count = f.follow_count + coalesce(fo.n, 0),
	    unfollowed_at = greatest(f.unfollowed_at, uf.last_ts),
	    -- a (re-)follow refreshes the profile
	    profile_state = CASE WHEN fo.n IS NOT NULL THEN 'pending'
		ELSE f.profile_state END,
	    profile_attempts = CASE WHEN fo.n IS NOT NULL THEN 0
		ELSE f.profile_attempts END,
	    profile_next_at = CASE WHEN fo.n IS NOT NULL THEN now()
		ELSE f.profile_next_at END,
	    updated_at = now()
	FROM latest l
	LEFT JOIN follows fo USING (channel_id, user_id)
	LEFT JOIN unfollows uf USING (channel_id, user_id)
	WHERE f.channel_id = l.channel_id AND f.user_id = l.user_id;

	-- The timeline: every event that has a type and a time, malformed
	-- user ids included (kept without a friend).
	INSERT INTO interactions (channel_id, event_id, friend_id, user_id,
	    type, subtype, event_ts, mode, source_type, group_id, message_id,
	    text, postback_data, payload)
	SELECT b.channel_id, b.event_id, f.id, b.user_id, b.type,
	    coalesce(b.payload #>> '{message,type}',
		b.payload #>> '{beacon,type}', b.payload #>> '{link,result}',
		b.payload #>> '{membership,type}',
		b.payload #>> '{module,type}'),
	    b.event_ts, b.mode, b.payload #>> '{source,type}',
	    coalesce(b.payload #>> '{source,groupId}',
		b.payload #>> '{source,roomId}'),
	    CASE WHEN b.type IN ('message', 'messageEdited')
		THEN b.payload #>> '{message,id}'
		WHEN b.type = 'unsend' THEN b.payload #>> '{unsend,messageId}'
	    END,
	    CASE WHEN b.type IN ('message', 'messageEdited')
		THEN b.payload #>> '{message,text}' END,
	    b.payload #>> '{postback,data}', b.payload
	FROM musubi_batch b
	LEFT JOIN friends f ON f.channel_id = b.channel_id
	    AND f.user_id = b.user_id AND b.problem IS NULL
	WHERE b.type <> '' AND b.event_ts IS NOT NULL
	ON CONFLICT (channel_id, event_id) DO NOTHING;

	-- unsend: drop the stored text, whichever of the two came first, from
	-- the timeline and from the inbox copy of the event alike.
	WITH gone AS (
		UPDATE interactions m SET text = NULL, unsent = true,
		    payload = m.payload #- '{message,text}'
			#- '{message,emojis}' #- '{message,mention}'
		FROM interactions u
		WHERE u.type = 'unsend'
		    AND m.type IN ('message', 'messageEdited')
		    AND m.channel_id = u.channel_id
		    AND m.message_id = u.message_id AND NOT m.unsent
		    AND (u.event_id IN (SELECT event_id FROM musubi_batch b
			    WHERE b.channel_id = u.channel_id)
			OR m.event_id IN (SELECT event_id FROM musubi_batch b
			    WHERE b.channel_id = m.channel_id))
		RETURNING m.channel_id, m.event_id
	)
	UPDATE webhook_events w
	SET payload = w.payload #- '{message,text}' #- '{message,emojis}'
	    #- '{message,mention}'
	FROM gone g
	WHERE w.channel_id = g.channel_id AND w.event_id = g.event_id;

	UPDATE webhook_events w
	SET state = CASE WHEN b.problem IS NULL THEN 1 ELSE 2 END,
	    problem = b.problem, applied_at = now()
	FROM musubi_batch b
	WHERE w.channel_id = b.channel_id AND w.id = b.id;

	SELECT count(*) FILTER (WHERE problem IS NULL),
	    count(*) FILTER (WHERE problem IS NOT NULL)
	INTO applied, malformed FROM musubi_batch;

	SELECT coalesce(array_agg(f.id), '{}') INTO profiles
	FROM friends f
	WHERE f.profile_state = 'pending' AND f.profile_next_at <= now()
	    AND (f.channel_id, f.user_id) IN (SELECT b.channel_id, b.user_id
		FROM musubi_batch b WHERE b.type = 'follow'
		AND b.problem IS NULL);
END;
$$;
