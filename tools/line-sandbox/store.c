/* SPDX-License-Identifier: ISC */
/*
 * store.c -- everything the sandbox remembers: channels (one per access
 * token, with their rate-limit buckets, retry keys and quota usage),
 * users (profiles, friend state and a delivery count each), the ring of
 * recent delivered batches, link and reply tokens, and the request
 * counters behind /sandbox/stats.
 *
 * It is built to keep up with a campaign of a million recipients: users
 * and retry keys live in flat arrays indexed by open-addressing tables
 * keyed on their 16 binary bytes, a user costs ~48 bytes, and only the
 * last recording.max_batches batches (and at most recording.max_recipients
 * recipient ids among them) are kept, with identical consecutive message
 * payloads shared.  Duplicates are users who received the same messages
 * payload (hash of the compact messages JSON) more than once.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "musubi/crypto.h"
#include "musubi/xmalloc.h"

#include "sandbox.h"

#define SB_FIRST_MSG_ID	500000000000000000ULL

/* Free a link token entry. */
static void
store_link_free(void *p)
{
	struct sb_link_token	*lt = p;

	free(lt->token);
	free(lt);
}

/* Initialise the parts of a store that reset clears. */
static void
store_init(struct sb_store *st)
{
	st->channel_map = strmap_new(NULL);
	st->link_tokens = strmap_new(store_link_free);
	st->reply_tokens = strmap_new(free);
	st->next_msg_id = SB_FIRST_MSG_ID;
	crypto_random(st->secret, sizeof st->secret);
}

/* Make an empty store. */
struct sb_store *
store_new(void)
{
	struct sb_store	*st = xcalloc(1, sizeof *st);

	store_init(st);
	return (st);
}

/* Drop one reference to a payload. */
static void
store_payload_unref(struct sb_payload *p)
{
	if (p != NULL && --p->refs == 0)
		free(p);
}

/* Free one batch's contents. */
static void
store_batch_clear(struct sb_batch *b)
{
	store_payload_unref(b->payload);
	free(b->recipients);
	memset(b, 0, sizeof *b);
}

/* Free a channel. */
static void
store_channel_free(struct sb_channel *c)
{
	free(c->token);
	free(c->retries);
	sb_idx_free(&c->retry_idx);
	free(c);
}

/* Free a profile. */
static void
store_profile_free(struct sb_profile *p)
{
	if (p == NULL)
		return;
	free(p->display_name);
	free(p->language);
	free(p->picture_url);
	free(p->status_message);
	free(p);
}

/* Release everything reset clears. */
static void
store_clear(struct sb_store *st)
{
	size_t	 i;

	for (i = 0; i < st->nusers; i++)
		store_profile_free(st->users[i].profile);
	free(st->users);
	sb_idx_free(&st->user_idx);
	free(st->pairs);
	for (i = 0; i < st->ring_len; i++)
		store_batch_clear(&st->ring[(st->ring_head + i) %
		    st->ring_cap]);
	free(st->ring);
	store_payload_unref(st->last_payload);
	for (i = 0; i < st->nchannels; i++)
		store_channel_free(st->channels[i]);
	free(st->channels);
	strmap_free(st->channel_map);
	strmap_free(st->link_tokens);
	strmap_free(st->reply_tokens);
}

/* Free a store. */
void
store_free(struct sb_store *st)
{
	if (st == NULL)
		return;
	store_clear(st);
	free(st);
}

/* Forget everything; the generation tells streams to stop. */
void
store_reset(struct sb_store *st)
{
	uint64_t	 gen = st->generation;

	store_clear(st);
	memset(st, 0, sizeof *st);
	store_init(st);
	st->generation = gen + 1;
}

/* Tell whether a token entry has been gone for an hour. */
static int
store_link_expired_cb(const char *key, void *val, void *arg)
{
	struct sb_link_token	*lt = val;
	int64_t			 now = *(int64_t *)arg;

	return (lt->expires_ms + 3600 * 1000 < now);
}

/* Same for reply tokens. */
static int
store_reply_expired_cb(const char *key, void *val, void *arg)
{
	struct sb_reply_token	*rt = val;
	int64_t			 now = *(int64_t *)arg;

	return (rt->expires_ms + 3600 * 1000 < now);
}

/* Drop tokens that expired over an hour ago. */
void
store_expire(struct sb_store *st, int64_t now_ms)
{
	strmap_sweep(st->link_tokens, store_link_expired_cb, &now_ms);
	strmap_sweep(st->reply_tokens, store_reply_expired_cb, &now_ms);
}

/* Evict the oldest batch. */
static void
store_ring_pop(struct sb_store *st)
{
	struct sb_batch	*b = &st->ring[st->ring_head];

	st->ring_recipients -= b->nrecipients;
	store_batch_clear(b);
	st->ring_head = (st->ring_head + 1) % st->ring_cap;
	st->ring_len--;
}

/* Evict until the ring fits the recording limits. */
void
store_limit(struct sb_store *st, const struct sb_config *cfg)
{
	while (st->ring_len > 0 && (st->ring_len > cfg->max_batches ||
	    st->ring_recipients > cfg->max_recipients))
		store_ring_pop(st);
}

/* Append a batch, evicting old ones first. */
static void
store_ring_push(struct sb_store *st, const struct sb_config *cfg,
    struct sb_batch *b)
{
	struct sb_batch	*nr;
	size_t		 ncap, i;

	while (st->ring_len > 0 && (st->ring_len >= cfg->max_batches ||
	    st->ring_recipients + b->nrecipients > cfg->max_recipients))
		store_ring_pop(st);
	if (st->ring_len == st->ring_cap) {
		ncap = st->ring_cap == 0 ? 1024 : st->ring_cap * 2;
		if (ncap > cfg->max_batches && cfg->max_batches > st->ring_cap)
			ncap = cfg->max_batches;
		nr = xcalloc(ncap, sizeof *nr);
		for (i = 0; i < st->ring_len; i++)
			nr[i] = st->ring[(st->ring_head + i) % st->ring_cap];
		free(st->ring);
		st->ring = nr;
		st->ring_cap = ncap;
		st->ring_head = 0;
	}
	st->ring[(st->ring_head + st->ring_len) % st->ring_cap] = *b;
	st->ring_len++;
	st->ring_recipients += b->nrecipients;
}

/* Existing channel for a token. */
struct sb_channel *
store_channel_find(struct sb_store *st, const char *token)
{
	return (strmap_get(st->channel_map, token));
}

/* The channel for a token, created on first use. */
struct sb_channel *
store_channel(struct sb_store *st, const char *token)
{
	struct sb_channel	*c;
	unsigned char		 d[CRYPTO_SHA256_LEN];
	char			*seed;

	if ((c = strmap_get(st->channel_map, token)) != NULL)
		return (c);
	c = xcalloc(1, sizeof *c);
	c->token = xstrdup(token);
	c->index = (uint32_t)st->nchannels;
	xasprintf(&seed, "line-sandbox bot %s", token);
	crypto_sha256(seed, strlen(seed), d);
	free(seed);
	c->bot_id[0] = 'U';
	crypto_hex(d, 16, c->bot_id + 1);
	st->channels = xreallocarray(st->channels, st->nchannels + 1,
	    sizeof *st->channels);
	st->channels[st->nchannels++] = c;
	strmap_put(st->channel_map, token, c);
	return (c);
}

/* Count a reply status. */
void
store_count(struct sb_store *st, int ep, int status)
{
	if (ep >= 0 && ep < SB_EP_COUNT && status >= 0 &&
	    status < SB_STATUS_SLOTS)
		st->requests[ep][status]++;
}

/* Token bucket: refill by elapsed time, then take one. */
int
store_take(struct sb_bucket *b, const struct sb_rate *r)
{
	int64_t	 now;

	if (r->rate <= 0)
		return (0);
	now = sb_mono_us();
	if (!b->primed) {
		b->tokens = r->burst;
		b->primed = 1;
	} else {
		b->tokens += (double)(now - b->last_us) * r->rate / 1e6;
		if (b->tokens > r->burst)
			b->tokens = r->burst;
	}
	b->last_us = now;
	if (b->tokens < 1)
		return (-1);
	b->tokens -= 1;
	return (0);
}

/* Find a user by binary id. */
long
store_user_find(const struct sb_store *st, const uint8_t id[SB_ID_LEN])
{
	return (sb_idx_find(&st->user_idx, st->users, sizeof *st->users,
	    offsetof(struct sb_user, id), id, SB_ID_LEN));
}

/* Find or create a user. */
uint32_t
store_user_get(struct sb_store *st, const uint8_t id[SB_ID_LEN])
{
	struct sb_user	*u;
	long		 i;

	if ((i = store_user_find(st, id)) >= 0)
		return ((uint32_t)i);
	if (st->nusers == st->users_cap) {
		st->users_cap = st->users_cap == 0 ? 1024 : st->users_cap * 2;
		st->users = xreallocarray(st->users, st->users_cap,
		    sizeof *st->users);
	}
	u = &st->users[st->nusers];
	memset(u, 0, sizeof *u);
	memcpy(u->id, id, SB_ID_LEN);
	sb_idx_add(&st->user_idx, st->users, sizeof *st->users,
	    offsetof(struct sb_user, id), SB_ID_LEN, (uint32_t)st->nusers);
	return ((uint32_t)st->nusers++);
}

/* Tell whether a message to this id is seen by someone. */
int
store_reachable(const struct sb_store *st, const struct sb_config *cfg,
    const uint8_t id[SB_ID_LEN])
{
	const struct sb_user	*u;
	long			 i;

	if (id[0] != 'U')
		return (1);	/* groups and rooms: the bot is a member */
	if ((i = store_user_find(st, id)) >= 0) {
		u = &st->users[i];
		if (u->flags & SB_USER_REGISTERED)
			return ((u->flags & SB_USER_FRIEND) &&
			    !(u->flags & SB_USER_BLOCKED));
	}
	return (cfg->auto_profiles);
}

/* The generated display name of an unregistered user. */
static void
store_auto_name(const uint8_t id[SB_ID_LEN], char *out, size_t len)
{
	snprintf(out, len, "Sandbox User %02X%02X%02X", id[1], id[2], id[3]);
}

/* Profile of any user, registered or generated. */
json_t *
store_user_profile(const struct sb_store *st, const uint8_t id[SB_ID_LEN])
{
	const struct sb_profile	*p = NULL;
	json_t			*o;
	char			 s[SB_ID_STRLEN + 1], name[64];
	long			 i;

	if ((i = store_user_find(st, id)) >= 0)
		p = st->users[i].profile;
	sb_id_format(id, s);
	o = json_object();
	if (p != NULL) {
		json_object_set_new(o, "displayName",
		    json_string(p->display_name));
		json_object_set_new(o, "userId", json_string(s));
		if (p->language != NULL)
			json_object_set_new(o, "language",
			    json_string(p->language));
		if (p->picture_url != NULL)
			json_object_set_new(o, "pictureUrl",
			    json_string(p->picture_url));
		if (p->status_message != NULL)
			json_object_set_new(o, "statusMessage",
			    json_string(p->status_message));
	} else {
		store_auto_name(id, name, sizeof name);
		json_object_set_new(o, "displayName", json_string(name));
		json_object_set_new(o, "userId", json_string(s));
		json_object_set_new(o, "language", json_string("ja"));
	}
	return (o);
}

/* Profile for GET /v2/bot/profile/{userId}: friends only. */
json_t *
store_profile_json(const struct sb_store *st, const struct sb_config *cfg,
    const uint8_t id[SB_ID_LEN])
{
	if (id[0] != 'U' || !store_reachable(st, cfg, id))
		return (NULL);
	return (store_user_profile(st, id));
}

/* Copy an optional string member; -1 if present but not a string. */
static int
store_optstr(json_t *o, const char *key, char **out)
{
	json_t	*v = json_object_get(o, key);

	*out = NULL;
	if (v == NULL || json_is_null(v))
		return (0);
	if (!json_is_string(v))
		return (-1);
	*out = xstrdup(json_string_value(v));
	return (0);
}

/* Register or update a user. */
int
store_user_register(struct sb_store *st, json_t *o, char **cause)
{
	struct sb_profile	*p;
	struct sb_user		*u;
	const char		*uid;
	json_t			*f, *b;
	uint8_t			 id[SB_ID_LEN];
	uint32_t		 ui;
	char			 name[64];

	uid = json_string_value(json_object_get(o, "userId"));
	if (!json_is_object(o) || sb_id_parse(uid, id, "U") != 0) {
		xsetcause(cause, "userId must match ^U[0-9a-f]{32}$");
		return (-1);
	}
	f = json_object_get(o, "friend");
	b = json_object_get(o, "blocked");
	if ((f != NULL && !json_is_boolean(f)) ||
	    (b != NULL && !json_is_boolean(b))) {
		xsetcause(cause, "%s: friend and blocked must be booleans",
		    uid);
		return (-1);
	}
	p = xcalloc(1, sizeof *p);
	if (store_optstr(o, "displayName", &p->display_name) != 0 ||
	    store_optstr(o, "language", &p->language) != 0 ||
	    store_optstr(o, "pictureUrl", &p->picture_url) != 0 ||
	    store_optstr(o, "statusMessage", &p->status_message) != 0) {
		store_profile_free(p);
		xsetcause(cause, "%s: profile fields must be strings", uid);
		return (-1);
	}
	if (p->display_name == NULL) {
		store_auto_name(id, name, sizeof name);
		p->display_name = xstrdup(name);
	}
	ui = store_user_get(st, id);	/* may move st->users */
	u = &st->users[ui];
	store_profile_free(u->profile);
	u->profile = p;
	u->flags |= SB_USER_REGISTERED;
	u->flags &= ~(SB_USER_FRIEND | SB_USER_BLOCKED);
	if (f == NULL || json_is_true(f))
		u->flags |= SB_USER_FRIEND;
	if (b != NULL && json_is_true(b))
		u->flags |= SB_USER_BLOCKED;
	return (0);
}

/* Make a user a friend (LINE Login add-friend option). */
int
store_user_befriend(struct sb_store *st, const struct sb_config *cfg,
    const uint8_t id[SB_ID_LEN], int *was_blocked)
{
	struct sb_user	*u;
	uint32_t	 ui;
	char		 name[64];

	*was_blocked = 0;
	if (store_reachable(st, cfg, id))
		return (0);
	ui = store_user_get(st, id);	/* may move st->users */
	u = &st->users[ui];
	if (u->profile == NULL) {
		u->profile = xcalloc(1, sizeof *u->profile);
		store_auto_name(id, name, sizeof name);
		u->profile->display_name = xstrdup(name);
	}
	*was_blocked = (u->flags & SB_USER_BLOCKED) != 0;
	u->flags |= SB_USER_REGISTERED | SB_USER_FRIEND;
	u->flags &= ~SB_USER_BLOCKED;
	return (1);
}

/* Look an accepted retry key up. */
const struct sb_retry *
store_retry_find(struct sb_channel *c, const uint8_t key[16], int64_t now_ms)
{
	const struct sb_retry	*r;
	long			 i;

	i = sb_idx_find(&c->retry_idx, c->retries, sizeof *c->retries,
	    offsetof(struct sb_retry, key), key, 16);
	if (i < 0)
		return (NULL);
	r = &c->retries[i];
	if (now_ms - r->accepted_ms >= SB_RETRY_KEY_TTL_MS)
		return (NULL);
	return (r);
}

/* Remember that a retry key was accepted. */
void
store_retry_accept(struct sb_channel *c, const uint8_t key[16],
    int64_t now_ms, const char *request_id, uint64_t first_msg_id,
    uint32_t nmsgs)
{
	struct sb_retry	*r;
	long		 i;

	i = sb_idx_find(&c->retry_idx, c->retries, sizeof *c->retries,
	    offsetof(struct sb_retry, key), key, 16);
	if (i >= 0)
		r = &c->retries[i];	/* expired: the key starts again */
	else {
		if (c->nretries == c->retries_cap) {
			c->retries_cap = c->retries_cap == 0 ? 1024 :
			    c->retries_cap * 2;
			c->retries = xreallocarray(c->retries, c->retries_cap,
			    sizeof *c->retries);
		}
		r = &c->retries[c->nretries];
		memcpy(r->key, key, 16);
		sb_idx_add(&c->retry_idx, c->retries, sizeof *c->retries,
		    offsetof(struct sb_retry, key), 16,
		    (uint32_t)c->nretries);
		c->nretries++;
	}
	if (sb_uuid_parse(request_id, r->request_id) != 0)
		memset(r->request_id, 0, sizeof r->request_id);
	r->accepted_ms = now_ms;
	r->first_msg_id = first_msg_id;
	r->nmsgs = nmsgs;
}

/* Reserve message ids. */
uint64_t
store_msg_ids(struct sb_store *st, size_t n)
{
	uint64_t	 first = st->next_msg_id;

	st->next_msg_id += n;
	return (first);
}

/* Build sentMessages; quote tokens are derived from the ids. */
json_t *
store_sent_messages(const struct sb_store *st, uint64_t first, size_t n)
{
	unsigned char	 mac[CRYPTO_SHA256_LEN];
	json_t		*a = json_array(), *o;
	char		 id[32], *qt;
	size_t		 i;

	for (i = 0; i < n; i++) {
		snprintf(id, sizeof id, "%llu",
		    (unsigned long long)(first + i));
		crypto_hmac_sha256(st->secret, sizeof st->secret, id,
		    strlen(id), mac);
		qt = crypto_base64url(mac, sizeof mac);
		o = json_object();
		json_object_set_new(o, "id", json_string(id));
		json_object_set_new(o, "quoteToken", json_string(qt));
		json_array_append_new(a, o);
		free(qt);
	}
	return (a);
}

/* Grow the (user, payload) pair table. */
static void
store_pairs_grow(struct sb_store *st)
{
	struct sb_pair	*old = st->pairs, *np;
	size_t		 oldcap = st->pairs_cap, i, j, mask;

	st->pairs_cap = oldcap == 0 ? 1024 : oldcap * 2;
	np = xcalloc(st->pairs_cap, sizeof *np);
	mask = st->pairs_cap - 1;
	for (i = 0; i < oldcap; i++) {
		if (old[i].count == 0)
			continue;
		j = (old[i].hash ^ (old[i].user * 0x9e3779b97f4a7c15ULL)) &
		    mask;
		while (np[j].count != 0)
			j = (j + 1) & mask;
		np[j] = old[i];
	}
	free(old);
	st->pairs = np;
}

/* Count one delivery of payload h to user u; return the earlier count. */
static uint32_t
store_pair_bump(struct sb_store *st, uint32_t u, uint64_t h)
{
	size_t	 j, mask;

	if ((st->npairs + 1) * 2 > st->pairs_cap)
		store_pairs_grow(st);
	mask = st->pairs_cap - 1;
	j = (h ^ (u * 0x9e3779b97f4a7c15ULL)) & mask;
	while (st->pairs[j].count != 0) {
		if (st->pairs[j].user == u && st->pairs[j].hash == h)
			return (st->pairs[j].count++);
		j = (j + 1) & mask;
	}
	st->pairs[j].hash = h;
	st->pairs[j].user = u;
	st->pairs[j].count = 1;
	st->npairs++;
	return (0);
}

/* Share the payload with the previous batch when identical. */
static struct sb_payload *
store_payload(struct sb_store *st, const char *json, size_t len, uint64_t h)
{
	struct sb_payload	*p = st->last_payload;

	if (p == NULL || p->hash != h || p->len != len ||
	    memcmp(p->json, json, len) != 0) {
		p = xmalloc(sizeof *p + len + 1);
		p->refs = 1;		/* held by last_payload */
		p->hash = h;
		p->len = len;
		memcpy(p->json, json, len);
		p->json[len] = '\0';
		store_payload_unref(st->last_payload);
		st->last_payload = p;
	}
	p->refs++;
	return (p);
}

/* Record an accepted send. */
size_t
store_deliver(struct sb_store *st, const struct sb_config *cfg,
    const struct sb_send *s)
{
	struct sb_batch	 b;
	struct sb_user	*u;
	const uint8_t	*id;
	uint64_t	 h = sb_hash(s->payload, s->payload_len);
	uint32_t	 ui;
	size_t		 i, n = 0;
	int		 dup;

	memset(&b, 0, sizeof b);
	b.recipients = xreallocarray(NULL, s->nids > 0 ? s->nids : 1,
	    SB_ID_LEN);
	for (i = 0; i < s->nids; i++) {
		id = s->ids + i * SB_ID_LEN;
		if (!store_reachable(st, cfg, id)) {
			st->undelivered_recipients++;
			continue;
		}
		ui = store_user_get(st, id);
		u = &st->users[ui];
		dup = 0;
		if (u->count == 0) {
			u->first_payload = h;
			st->nreached++;
		}
		else if (u->first_payload == h)
			dup = 1;
		else if (store_pair_bump(st, ui, h) > 0)
			dup = 1;
		u->count++;
		if (u->count > st->max_per_user)
			st->max_per_user = u->count;
		if (dup) {
			st->dup_deliveries++;
			if (!(u->flags & SB_USER_DUP)) {
				u->flags |= SB_USER_DUP;
				st->dup_users++;
			}
		}
		memcpy(b.recipients + n * SB_ID_LEN, id, SB_ID_LEN);
		n++;
	}
	b.seq = st->next_seq++;
	b.time_ms = sb_now_ms();
	b.payload = store_payload(st, s->payload, s->payload_len, h);
	b.nrecipients = (uint32_t)n;
	b.channel = s->chan->index;
	b.ep = s->ep;
	snprintf(b.request_id, sizeof b.request_id, "%s", s->request_id);
	snprintf(b.retry_key, sizeof b.retry_key, "%s",
	    s->retry_key != NULL ? s->retry_key : "");
	store_ring_push(st, cfg, &b);

	st->delivered_requests++;
	st->delivered_recipients += n;
	st->delivered_messages += n * s->nmessages;
	s->chan->requests++;
	s->chan->recipients += n;
	s->chan->messages += n * s->nmessages;
	if (s->ep != SB_EP_REPLY)
		s->chan->usage += (long long)n;
	return (n);
}

/* Issue a link token. */
const char *
store_link_token_new(struct sb_store *st, struct sb_channel *c,
    const char *user)
{
	struct sb_link_token	*lt = xcalloc(1, sizeof *lt);
	char			*tok = crypto_token(24); /* 32 chars */

	lt->token = xstrdup(c->token);
	snprintf(lt->link, sizeof lt->link, "%s", tok);
	snprintf(lt->user, sizeof lt->user, "%s", user);
	lt->expires_ms = sb_now_ms() + SB_LINK_TOKEN_TTL_MS;
	strmap_put(st->link_tokens, tok, lt);
	free(tok);
	return (lt->link);
}

/* Look a link token up. */
struct sb_link_token *
store_link_token_find(struct sb_store *st, const char *token)
{
	return (strmap_get(st->link_tokens, token));
}

/* Remember a reply token handed out in a webhook event. */
void
store_reply_token_add(struct sb_store *st, const char *token,
    const char *user, int64_t now_ms)
{
	struct sb_reply_token	*rt = xcalloc(1, sizeof *rt);

	snprintf(rt->user, sizeof rt->user, "%s", user != NULL ? user : "");
	rt->expires_ms = now_ms + SB_REPLY_TOKEN_TTL_MS;
	strmap_put(st->reply_tokens, token, rt);
}

/* Remember reply tokens handed out in webhook events. */
void
store_reply_tokens_from(struct sb_store *st, json_t *events, int64_t now_ms)
{
	const char	*tok, *user;
	json_t		*ev, *src;
	size_t		 i;

	json_array_foreach(events, i, ev) {
		tok = json_string_value(json_object_get(ev, "replyToken"));
		src = json_object_get(ev, "source");
		/* A reply goes to the chat the event came from. */
		if ((user = json_string_value(json_object_get(src,
		    "groupId"))) == NULL &&
		    (user = json_string_value(json_object_get(src,
		    "roomId"))) == NULL)
			user = json_string_value(json_object_get(src,
			    "userId"));
		if (tok != NULL && *tok != '\0')
			store_reply_token_add(st, tok, user, now_ms);
	}
}

/* Use a reply token once. */
int
store_reply_token_use(struct sb_store *st, const char *token, int64_t now_ms,
    char user[SB_ID_STRLEN + 1])
{
	struct sb_reply_token	*rt = strmap_get(st->reply_tokens, token);

	if (rt == NULL)
		return (0);
	if (rt->used || rt->expires_ms < now_ms)
		return (-1);
	rt->used = 1;
	snprintf(user, SB_ID_STRLEN + 1, "%s", rt->user);
	return (1);
}

/* Per-channel numbers. */
static json_t *
store_channel_json(const struct sb_channel *c)
{
	json_t	*o = json_object();

	json_object_set_new(o, "botUserId", json_string(c->bot_id));
	json_object_set_new(o, "totalUsage", json_integer(c->usage));
	json_object_set_new(o, "requests", json_integer((json_int_t)
	    c->requests));
	json_object_set_new(o, "recipients", json_integer((json_int_t)
	    c->recipients));
	json_object_set_new(o, "messages", json_integer((json_int_t)
	    c->messages));
	json_object_set_new(o, "retryKeys", json_integer((json_int_t)
	    c->nretries));
	return (o);
}

/* Build /sandbox/stats. */
json_t *
store_stats_json(const struct sb_store *st, const char *token)
{
	json_t	*o = json_object(), *req = json_object();
	json_t	*ep, *d, *u, *ch;
	char	 code[8];
	size_t	 i;
	int	 e, s;

	for (e = 0; e < SB_EP_COUNT; e++) {
		if (e == SB_EP_CONTROL)
			continue;
		ep = NULL;
		for (s = 0; s < SB_STATUS_SLOTS; s++) {
			if (st->requests[e][s] == 0)
				continue;
			if (ep == NULL)
				ep = json_object();
			snprintf(code, sizeof code, "%d", s);
			json_object_set_new(ep, code, json_integer((json_int_t)
			    st->requests[e][s]));
		}
		if (st->held[e] != 0) {
			if (ep == NULL)
				ep = json_object();
			json_object_set_new(ep, "timeout", json_integer(
			    (json_int_t)st->held[e]));
		}
		if (ep != NULL)
			json_object_set_new(req, sb_eps[e].name, ep);
	}
	json_object_set_new(o, "requests", req);
	d = json_object();
	json_object_set_new(d, "requests", json_integer((json_int_t)
	    st->delivered_requests));
	json_object_set_new(d, "recipients", json_integer((json_int_t)
	    st->delivered_recipients));
	json_object_set_new(d, "messages", json_integer((json_int_t)
	    st->delivered_messages));
	json_object_set_new(o, "delivered", d);
	d = json_object();
	json_object_set_new(d, "recipients", json_integer((json_int_t)
	    st->undelivered_recipients));
	json_object_set_new(o, "undelivered", d);
	u = json_object();
	json_object_set_new(u, "count", json_integer((json_int_t)
	    st->nreached));
	json_object_set_new(u, "known", json_integer((json_int_t)st->nusers));
	json_object_set_new(u, "max_per_user", json_integer(st->max_per_user));
	json_object_set_new(u, "duplicates", json_integer((json_int_t)
	    st->dup_users));
	json_object_set_new(u, "duplicate_deliveries", json_integer(
	    (json_int_t)st->dup_deliveries));
	json_object_set_new(o, "users", u);
	ch = json_object();
	for (i = 0; i < st->nchannels; i++) {
		if (token != NULL && strcmp(token, st->channels[i]->token) != 0)
			continue;
		json_object_set_new(ch, st->channels[i]->token,
		    store_channel_json(st->channels[i]));
	}
	json_object_set_new(o, "channels", ch);
	json_object_set_new(o, "faults_injected", json_integer((json_int_t)
	    st->faults_injected));
	d = json_object();
	json_object_set_new(d, "batches", json_integer((json_int_t)
	    st->ring_len));
	json_object_set_new(d, "recipients", json_integer((json_int_t)
	    st->ring_recipients));
	json_object_set_new(o, "recorded", d);
	return (o);
}

/* Describe one batch. */
static json_t *
store_batch_json(const struct sb_store *st, const struct sb_batch *b,
    int with_to)
{
	json_t	*o = json_object(), *to, *msgs;
	char	 s[SB_ID_STRLEN + 1];
	size_t	 i;

	json_object_set_new(o, "time", json_integer(b->time_ms));
	json_object_set_new(o, "endpoint", json_string(sb_eps[b->ep].name));
	json_object_set_new(o, "requestId", json_string(b->request_id));
	json_object_set_new(o, "retryKey", b->retry_key[0] != '\0' ?
	    json_string(b->retry_key) : json_null());
	if (b->channel < st->nchannels)
		json_object_set_new(o, "channel",
		    json_string(st->channels[b->channel]->token));
	json_object_set_new(o, "recipients", json_integer(b->nrecipients));
	if (with_to) {
		to = json_array();
		for (i = 0; i < b->nrecipients; i++) {
			sb_id_format(b->recipients + i * SB_ID_LEN, s);
			json_array_append_new(to, json_string(s));
		}
		json_object_set_new(o, "to", to);
	}
	msgs = json_loadb(b->payload->json, b->payload->len, JSON_ALLOW_NUL,
	    NULL);
	json_object_set_new(o, "messages", msgs != NULL ? msgs : json_null());
	return (o);
}

/* Tell whether a batch went to id. */
static int
store_batch_has(const struct sb_batch *b, const uint8_t *id)
{
	uint32_t	 i;

	for (i = 0; i < b->nrecipients; i++) {
		if (memcmp(b->recipients + (size_t)i * SB_ID_LEN, id,
		    SB_ID_LEN) == 0)
			return (1);
	}
	return (0);
}

/* Build /sandbox/deliveries: one user's batches, or the latest ones. */
json_t *
store_deliveries_json(const struct sb_store *st, const uint8_t *id,
    size_t limit)
{
	const struct sb_batch	*b;
	json_t			*o = json_object(), *list = json_array();
	json_t			*rev = json_array();
	char			 s[SB_ID_STRLEN + 1];
	size_t			 i, n;
	long			 u;

	/* Newest first until the limit, then put them back in order. */
	for (i = st->ring_len; i > 0 && json_array_size(rev) < limit; i--) {
		b = &st->ring[(st->ring_head + i - 1) % st->ring_cap];
		if (id != NULL && !store_batch_has(b, id))
			continue;
		json_array_append_new(rev, store_batch_json(st, b, id == NULL));
	}
	for (n = json_array_size(rev); n > 0; n--)
		json_array_append(list, json_array_get(rev, n - 1));
	json_decref(rev);
	if (id != NULL) {
		sb_id_format(id, s);
		json_object_set_new(o, "user", json_string(s));
		u = store_user_find(st, id);
		json_object_set_new(o, "count", json_integer(u >= 0 ?
		    st->users[u].count : 0));
	}
	json_object_set_new(o, "deliveries", list);
	return (o);
}
