/* SPDX-License-Identifier: ISC */
/*
 * api.c -- the Messaging API endpoints under /v2/bot/: push, multicast,
 * broadcast, reply, validate, quota, quota consumption, profile and link
 * token.  Each request is authenticated by its bearer token (which names
 * the channel), passes server_gate(), has its X-Line-Retry-Key checked,
 * its body parsed and validated, the monthly quota applied, and only then
 * is the delivery recorded in store.c and the retry key accepted.
 *
 * The order matters for retries: a key is accepted exactly when a 2xx was
 * decided for it (including an injected "after" 5xx, whose delivery did
 * happen), so a retry after a 4xx, a 429 or a "before" 5xx is processed
 * normally and a retry after an accepted attempt gets 409.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "musubi/log.h"
#include "musubi/xmalloc.h"

#include "sandbox.h"

#define API_MSG_NO_AUTH	"Authorization header required. Must follow " \
	"the scheme, 'Authorization: Bearer <ACCESS TOKEN>'"
#define API_MSG_BAD_TOKEN "Authentication failed due to the following " \
	"reason: invalid token. Confirm that the access token in the " \
	"authorization header is valid."
#define API_MSG_QUOTA	"You have reached your monthly limit."

/* A parsed X-Line-Retry-Key. */
struct api_key {
	int		 set;
	uint8_t		 bin[16];
	const char	*str;
};

/* Check the bearer token and find the channel; -1 when answered. */
static int
api_auth(struct sb_ctx *ctx)
{
	const char	*h = server_header(ctx, "Authorization");

	if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0) {
		server_reply_message(ctx, 401, API_MSG_NO_AUTH);
		return (-1);
	}
	h += 7;
	while (*h == ' ')
		h++;
	if (*h == '\0' || !config_token_allowed(ctx->sb->cfg, h)) {
		server_reply_message(ctx, 401, API_MSG_BAD_TOKEN);
		return (-1);
	}
	ctx->chan = store_channel(ctx->sb->store, h);
	return (0);
}

/* Check X-Line-Retry-Key; -1 when answered (400 or 409). */
static int
api_retry_key(struct sb_ctx *ctx, struct api_key *key)
{
	const struct sb_retry	*r;
	json_t			*o;
	char			 rid[SB_UUID_STRLEN + 1];

	memset(key, 0, sizeof *key);
	if ((key->str = server_header(ctx, "X-Line-Retry-Key")) == NULL)
		return (0);
	if (!(sb_eps[ctx->ep].flags & SB_EPF_RETRY_KEY)) {
		server_reply_message(ctx, 400, "X-Line-Retry-Key is not "
		    "supported by this endpoint; only push, multicast, "
		    "narrowcast and broadcast accept it");
		return (-1);
	}
	if (sb_uuid_parse(key->str, key->bin) != 0) {
		server_reply_message(ctx, 400, "The X-Line-Retry-Key header "
		    "must be a UUID in hexadecimal notation "
		    "(e.g. 123e4567-e89b-12d3-a456-426614174000)");
		return (-1);
	}
	key->set = 1;
	r = store_retry_find(ctx->chan, key->bin, sb_now_ms());
	if (r == NULL)
		return (0);
	sb_uuid_format(r->request_id, rid);
	server_add_header(ctx, "x-line-accepted-request-id", rid);
	o = json_object();
	json_object_set_new(o, "message",
	    json_string("The retry key is already accepted"));
	if (ctx->ep == SB_EP_PUSH)
		json_object_set_new(o, "sentMessages", store_sent_messages(
		    ctx->sb->store, r->first_msg_id, r->nmsgs));
	server_reply_json(ctx, 409, o);
	return (-1);
}

/* Read the JSON object body; NULL when answered (413 or 400). */
static json_t *
api_body(struct sb_ctx *ctx)
{
	json_error_t	 e;
	json_t		*j;
	const char	*b;
	char		*msg;
	size_t		 len;

	b = server_body(ctx, &len);
	if (len > ctx->sb->cfg->max_body) {
		server_reply_message(ctx, 413, "Request Entity Too Large");
		return (NULL);
	}
	if ((j = json_loadb(b, len, JSON_ALLOW_NUL, &e)) == NULL) {
		xasprintf(&msg, "The request body could not be parsed as JSON "
		    "(line: %d, column: %d)", e.line > 0 ? e.line : 1,
		    e.column > 0 ? e.column : 1);
		server_reply_message(ctx, 400, msg);
		free(msg);
		return (NULL);
	}
	if (!json_is_object(j)) {
		json_decref(j);
		server_reply_message(ctx, 400, "The request body could not be "
		    "parsed as JSON (line: 1, column: 1)");
		return (NULL);
	}
	return (j);
}

/* Reply 400 with collected errors; returns -1 if there were any. */
static int
api_errors(struct sb_ctx *ctx, struct sb_errors *errs)
{
	if (!sb_errors_any(errs)) {
		sb_errors_clear(errs);
		return (0);
	}
	server_reply_json(ctx, 400, sb_errors_json(errs));
	sb_errors_clear(errs);
	return (-1);
}

/* Check the monthly quota for n recipients; -1 when answered 429. */
static int
api_quota(struct sb_ctx *ctx, size_t n)
{
	const struct sb_config	*cfg = ctx->sb->cfg;

	if (cfg->quota_limited &&
	    ctx->chan->usage + (long long)n > cfg->quota_value) {
		server_reply_message(ctx, 429, API_MSG_QUOTA);
		return (-1);
	}
	return (0);
}

/* Record a send and accept its key; returns the first message id. */
static uint64_t
api_deliver(struct sb_ctx *ctx, json_t *messages, const uint8_t *ids,
    size_t nids, const struct api_key *key, int sent_messages)
{
	struct sb_store	*st = ctx->sb->store;
	struct sb_send	 s;
	uint64_t	 first;
	size_t		 nmsg = json_array_size(messages);
	char		*payload;

	payload = json_dumps(messages, JSON_COMPACT | JSON_SORT_KEYS);
	first = store_msg_ids(st, nmsg);
	memset(&s, 0, sizeof s);
	s.ep = ctx->ep;
	s.chan = ctx->chan;
	s.ids = ids;
	s.nids = nids;
	s.payload = payload != NULL ? payload : "[]";
	s.payload_len = strlen(s.payload);
	s.nmessages = nmsg;
	s.request_id = ctx->rid;
	s.retry_key = key != NULL && key->set ? key->str : NULL;
	(void)store_deliver(st, ctx->sb->cfg, &s);
	if (key != NULL && key->set)
		store_retry_accept(ctx->chan, key->bin, sb_now_ms(), ctx->rid,
		    first, sent_messages ? (uint32_t)nmsg : 0);
	free(payload);
	return (first);
}

/* POST /v2/bot/message/push */
static void
api_push(struct sb_ctx *ctx, const struct api_key *key)
{
	struct sb_errors	 errs;
	json_t			*body, *to, *messages, *o;
	uint8_t			 id[SB_ID_LEN];
	uint64_t		 first;

	if ((body = api_body(ctx)) == NULL)
		return;
	sb_errors_init(&errs);
	to = json_object_get(body, "to");
	if (to == NULL || json_is_null(to) ||
	    (json_is_string(to) && json_string_length(to) == 0))
		sb_errors_add(&errs, "to", "May not be empty");
	else if (!json_is_string(to) ||
	    sb_id_parse(json_string_value(to), id, "UCR") != 0)
		sb_errors_invalid(&errs, "to");
	messages = json_object_get(body, "messages");
	validate_messages(messages, &errs);
	validate_send_options(body, &errs);
	if (api_errors(ctx, &errs) != 0 || api_quota(ctx, 1) != 0) {
		json_decref(body);
		return;
	}
	first = api_deliver(ctx, messages, id, 1, key, 1);
	o = json_object();
	json_object_set_new(o, "sentMessages", store_sent_messages(
	    ctx->sb->store, first, json_array_size(messages)));
	json_decref(body);
	server_reply_json(ctx, 200, o);
}

/* POST /v2/bot/message/multicast */
static void
api_multicast(struct sb_ctx *ctx, const struct api_key *key)
{
	struct sb_errors	 errs;
	json_t			*body, *to, *messages, *v;
	uint8_t			*ids = NULL;
	size_t			 i, n = 0;
	char			 prop[32];

	if ((body = api_body(ctx)) == NULL)
		return;
	sb_errors_init(&errs);
	to = json_object_get(body, "to");
	if (to == NULL || json_is_null(to))
		sb_errors_add(&errs, "to", "May not be null");
	else if (!json_is_array(to))
		sb_errors_invalid(&errs, "to");
	else {
		n = json_array_size(to);
		ids = xreallocarray(NULL, n > 0 ? n : 1, SB_ID_LEN);
		json_array_foreach(to, i, v) {
			if (!json_is_string(v) || sb_id_parse(
			    json_string_value(v), ids + i * SB_ID_LEN,
			    "U") != 0) {
				snprintf(prop, sizeof prop, "to[%zu]", i);
				sb_errors_invalid(&errs, prop);
			}
		}
		if (n < 1 || n > SB_MAX_MULTICAST)
			sb_errors_add(&errs, "to", "Size must be between 1 "
			    "and %d", SB_MAX_MULTICAST);
	}
	messages = json_object_get(body, "messages");
	validate_messages(messages, &errs);
	validate_send_options(body, &errs);
	if (api_errors(ctx, &errs) != 0 || api_quota(ctx, n) != 0) {
		free(ids);
		json_decref(body);
		return;
	}
	(void)api_deliver(ctx, messages, ids, n, key, 0);
	free(ids);
	json_decref(body);
	server_reply_json(ctx, 200, json_object());
}

/* POST /v2/bot/message/broadcast: every known friend. */
static void
api_broadcast(struct sb_ctx *ctx, const struct api_key *key)
{
	struct sb_store		*st = ctx->sb->store;
	struct sb_errors	 errs;
	json_t			*body, *messages;
	uint8_t			*ids;
	size_t			 i, n = 0;

	if ((body = api_body(ctx)) == NULL)
		return;
	sb_errors_init(&errs);
	messages = json_object_get(body, "messages");
	validate_messages(messages, &errs);
	validate_send_options(body, &errs);
	if (api_errors(ctx, &errs) != 0) {
		json_decref(body);
		return;
	}
	ids = xreallocarray(NULL, st->nusers > 0 ? st->nusers : 1, SB_ID_LEN);
	for (i = 0; i < st->nusers; i++) {
		if (st->users[i].id[0] == 'U' &&
		    store_reachable(st, ctx->sb->cfg, st->users[i].id))
			memcpy(ids + SB_ID_LEN * n++, st->users[i].id,
			    SB_ID_LEN);
	}
	if (api_quota(ctx, n) == 0) {
		(void)api_deliver(ctx, messages, ids, n, key, 0);
		server_reply_json(ctx, 200, json_object());
	}
	free(ids);
	json_decref(body);
}

/* POST /v2/bot/message/reply */
static void
api_reply(struct sb_ctx *ctx)
{
	struct sb_errors	 errs;
	json_t			*body, *tok, *messages, *o;
	uint8_t			 id[SB_ID_LEN];
	char			 user[SB_ID_STRLEN + 1];
	uint64_t		 first;
	int			 r;

	if ((body = api_body(ctx)) == NULL)
		return;
	sb_errors_init(&errs);
	tok = json_object_get(body, "replyToken");
	if (tok == NULL || json_is_null(tok) ||
	    (json_is_string(tok) && json_string_length(tok) == 0))
		sb_errors_add(&errs, "replyToken", "May not be empty");
	else if (!json_is_string(tok))
		sb_errors_invalid(&errs, "replyToken");
	messages = json_object_get(body, "messages");
	validate_messages(messages, &errs);
	validate_send_options(body, &errs);
	if (api_errors(ctx, &errs) != 0) {
		json_decref(body);
		return;
	}
	r = store_reply_token_use(ctx->sb->store, json_string_value(tok),
	    sb_now_ms(), user);
	if (r < 0) {
		json_decref(body);
		server_reply_message(ctx, 400, "Invalid reply token");
		return;
	}
	if (r > 0 && sb_id_parse(user, id, "UCR") == 0)
		first = api_deliver(ctx, messages, id, 1, NULL, 0);
	else
		first = api_deliver(ctx, messages, NULL, 0, NULL, 0);
	o = json_object();
	json_object_set_new(o, "sentMessages", store_sent_messages(
	    ctx->sb->store, first, json_array_size(messages)));
	json_decref(body);
	server_reply_json(ctx, 200, o);
}

/* POST /v2/bot/message/validate/{type} */
static void
api_validate(struct sb_ctx *ctx)
{
	struct sb_errors	 errs;
	json_t			*body;

	if ((body = api_body(ctx)) == NULL)
		return;
	sb_errors_init(&errs);
	validate_messages(json_object_get(body, "messages"), &errs);
	json_decref(body);
	if (api_errors(ctx, &errs) == 0)
		server_reply_json(ctx, 200, json_object());
}

/* GET /v2/bot/message/quota */
static void
api_quota_get(struct sb_ctx *ctx)
{
	const struct sb_config	*cfg = ctx->sb->cfg;
	json_t			*o = json_object();

	json_object_set_new(o, "type", json_string(cfg->quota_limited ?
	    "limited" : "none"));
	if (cfg->quota_limited)
		json_object_set_new(o, "value", json_integer(cfg->quota_value));
	server_reply_json(ctx, 200, o);
}

/* GET /v2/bot/message/quota/consumption */
static void
api_consumption(struct sb_ctx *ctx)
{
	json_t	*o = json_object();

	json_object_set_new(o, "totalUsage", json_integer(ctx->chan->usage));
	server_reply_json(ctx, 200, o);
}

/* Parse the {userId} path segment; -1 when answered 400. */
static int
api_path_user(struct sb_ctx *ctx, const char *s, size_t len,
    uint8_t id[SB_ID_LEN], char out[SB_ID_STRLEN + 1])
{
	if (len != SB_ID_STRLEN) {
		server_reply_message(ctx, 400, "The value for the 'userId' "
		    "parameter is invalid");
		return (-1);
	}
	memcpy(out, s, len);
	out[len] = '\0';
	if (sb_id_parse(out, id, "U") != 0) {
		server_reply_message(ctx, 400, "The value for the 'userId' "
		    "parameter is invalid");
		return (-1);
	}
	return (0);
}

/* GET /v2/bot/profile/{userId} */
static void
api_profile(struct sb_ctx *ctx, const char *uid)
{
	uint8_t	 id[SB_ID_LEN];
	char	 s[SB_ID_STRLEN + 1];
	json_t	*p;

	if (api_path_user(ctx, uid, strlen(uid), id, s) != 0)
		return;
	if ((p = store_profile_json(ctx->sb->store, ctx->sb->cfg, id)) ==
	    NULL) {
		server_reply_message(ctx, 404, "Not found");
		return;
	}
	server_reply_json(ctx, 200, p);
}

/* POST /v2/bot/user/{userId}/linkToken */
static void
api_link_token(struct sb_ctx *ctx, const char *uid, size_t len)
{
	uint8_t	 id[SB_ID_LEN];
	char	 s[SB_ID_STRLEN + 1];
	json_t	*o;

	if (api_path_user(ctx, uid, len, id, s) != 0)
		return;
	o = json_object();
	json_object_set_new(o, "linkToken", json_string(
	    store_link_token_new(ctx->sb->store, ctx->chan, s)));
	server_reply_json(ctx, 200, o);
}

/* Which endpoint a path names; *method is the one it needs. */
static int
api_route(const char *p, enum evhttp_cmd_type *method, const char **arg,
    size_t *arglen)
{
	static const struct {
		const char		*path;
		int			 ep;
		enum evhttp_cmd_type	 method;
	} fixed[] = {
		{ "/v2/bot/message/push", SB_EP_PUSH, EVHTTP_REQ_POST },
		{ "/v2/bot/message/multicast", SB_EP_MULTICAST,
		    EVHTTP_REQ_POST },
		{ "/v2/bot/message/broadcast", SB_EP_BROADCAST,
		    EVHTTP_REQ_POST },
		{ "/v2/bot/message/reply", SB_EP_REPLY, EVHTTP_REQ_POST },
		{ "/v2/bot/message/validate/reply", SB_EP_VALIDATE_REPLY,
		    EVHTTP_REQ_POST },
		{ "/v2/bot/message/validate/push", SB_EP_VALIDATE_PUSH,
		    EVHTTP_REQ_POST },
		{ "/v2/bot/message/validate/multicast",
		    SB_EP_VALIDATE_MULTICAST, EVHTTP_REQ_POST },
		{ "/v2/bot/message/validate/narrowcast",
		    SB_EP_VALIDATE_NARROWCAST, EVHTTP_REQ_POST },
		{ "/v2/bot/message/validate/broadcast",
		    SB_EP_VALIDATE_BROADCAST, EVHTTP_REQ_POST },
		{ "/v2/bot/message/quota", SB_EP_QUOTA, EVHTTP_REQ_GET },
		{ "/v2/bot/message/quota/consumption", SB_EP_CONSUMPTION,
		    EVHTTP_REQ_GET },
	};
	const char	*end;
	size_t		 i;

	*arg = NULL;
	*arglen = 0;
	for (i = 0; i < nitems(fixed); i++) {
		if (strcmp(p, fixed[i].path) == 0) {
			*method = fixed[i].method;
			return (fixed[i].ep);
		}
	}
	if (strncmp(p, "/v2/bot/profile/", 16) == 0 &&
	    strchr(p + 16, '/') == NULL && p[16] != '\0') {
		*method = EVHTTP_REQ_GET;
		*arg = p + 16;
		*arglen = strlen(p + 16);
		return (SB_EP_PROFILE);
	}
	if (strncmp(p, "/v2/bot/user/", 13) == 0 &&
	    (end = strchr(p + 13, '/')) != NULL &&
	    strcmp(end, "/linkToken") == 0 && end > p + 13) {
		*method = EVHTTP_REQ_POST;
		*arg = p + 13;
		*arglen = (size_t)(end - (p + 13));
		return (SB_EP_LINK_TOKEN);
	}
	return (SB_EP_UNKNOWN);
}

/* Answer a Messaging API request. */
void
api_handle(struct sb_ctx *ctx)
{
	enum evhttp_cmd_type	 method = EVHTTP_REQ_GET;
	struct api_key		 key;
	const char		*arg;
	size_t			 arglen;
	char			*uid;

	ctx->ep = api_route(ctx->path, &method, &arg, &arglen);
	if (ctx->ep == SB_EP_UNKNOWN) {
		server_reply_message(ctx, 404, "Not found");
		return;
	}
	if (evhttp_request_get_command(ctx->req) != method) {
		server_reply_message(ctx, 405, "Method Not Allowed");
		return;
	}
	if (api_auth(ctx) != 0 ||
	    server_gate(ctx, &ctx->chan->buckets[ctx->ep]) != 0 ||
	    api_retry_key(ctx, &key) != 0)
		return;
	switch (ctx->ep) {
	case SB_EP_PUSH:
		api_push(ctx, &key);
		break;
	case SB_EP_MULTICAST:
		api_multicast(ctx, &key);
		break;
	case SB_EP_BROADCAST:
		api_broadcast(ctx, &key);
		break;
	case SB_EP_REPLY:
		api_reply(ctx);
		break;
	case SB_EP_QUOTA:
		api_quota_get(ctx);
		break;
	case SB_EP_CONSUMPTION:
		api_consumption(ctx);
		break;
	case SB_EP_PROFILE:
		uid = xstrndup(arg, arglen);
		api_profile(ctx, uid);
		free(uid);
		break;
	case SB_EP_LINK_TOKEN:
		api_link_token(ctx, arg, arglen);
		break;
	default:
		api_validate(ctx);
		break;
	}
}
