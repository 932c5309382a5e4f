/* SPDX-License-Identifier: ISC */
/*
 * control.c -- the /sandbox/ control API that tests use to set the
 * sandbox up and look at what it recorded: health, stats, deliveries,
 * per-user delivery counts, reset, config, user registration and webhook
 * delivery.  No authentication: the sandbox listens on loopback.
 *
 * GET /sandbox/deliveries/counts may cover a million users, so it is
 * streamed as a chunked reply, a few thousand users per chunk, the next
 * chunk written when the previous one has left (libevent's chunk
 * callback).  A stream stops early, still as valid JSON, when the store is
 * reset under it, and is forgotten when its client goes away.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/http.h>

#include "musubi/log.h"
#include "musubi/xmalloc.h"

#include "sandbox.h"

#define CONTROL_CHUNK_USERS	8192

struct sb_stream {
	TAILQ_ENTRY(sb_stream)	 entry;
	struct sandbox		*sb;
	struct evhttp_request	*req;
	struct evhttp_connection *evcon;
	size_t			 pos;
	uint64_t		 generation;
	int			 any;	/* a member was written */
};

/* A webhook POST waiting for the target's answer. */
struct control_wh {
	struct sb_ctx	*ctx;
	char		*payload;
	char		*signature;
	char		*url;
};

/* Read a JSON body for the control API; NULL when answered 400. */
static json_t *
control_body(struct sb_ctx *ctx)
{
	json_error_t	 e;
	json_t		*j;
	const char	*b;
	char		*msg;
	size_t		 len;

	b = server_body(ctx, &len);
	if ((j = json_loadb(b, len, 0, &e)) == NULL) {
		xasprintf(&msg, "invalid JSON at line %d, column %d: %s",
		    e.line, e.column, e.text);
		server_reply_message(ctx, 400, msg);
		free(msg);
	}
	return (j);
}

/* GET /sandbox/stats */
static void
control_stats(struct sb_ctx *ctx)
{
	struct sandbox	*sb = ctx->sb;
	char		*token = server_query(ctx, "token");
	json_t		*o = store_stats_json(sb->store, token), *w;

	w = json_object();
	json_object_set_new(w, "sent", json_integer((json_int_t)
	    sb->webhooks->sent));
	json_object_set_new(w, "failed", json_integer((json_int_t)
	    sb->webhooks->failed));
	json_object_set_new(o, "webhooks", w);
	json_object_set_new(o, "held", json_integer((json_int_t)sb->nheld));
	free(token);
	server_reply_json(ctx, 200, o);
}

/* GET /sandbox/deliveries[?user=U...][&limit=N] */
static void
control_deliveries(struct sb_ctx *ctx)
{
	char	*user = server_query(ctx, "user");
	char	*lim = server_query(ctx, "limit");
	uint8_t	 id[SB_ID_LEN];
	long	 limit = 100;

	if (lim != NULL && ((limit = strtol(lim, NULL, 10)) <= 0))
		limit = 100;
	if (user != NULL && sb_id_parse(user, id, "UCR") != 0)
		server_reply_message(ctx, 400, "user must be a user, group or "
		    "room id");
	else
		server_reply_json(ctx, 200, store_deliveries_json(
		    ctx->sb->store, user != NULL ? id : NULL, (size_t)limit));
	free(user);
	free(lim);
}

/* Stop a stream and free it; the request is finished or gone. */
static void
control_stream_free(struct sb_stream *s)
{
	TAILQ_REMOVE(&s->sb->streams, s, entry);
	if (s->evcon != NULL)
		evhttp_connection_set_closecb(s->evcon, NULL, NULL);
	free(s);
}

static void control_stream_next(struct sb_stream *);

/* The previous chunk has been written: send the next. */
static void
control_stream_chunk_cb(struct evhttp_connection *evcon, void *arg)
{
	control_stream_next(arg);
}

/*
 * The client went away mid-stream.  libevent detaches the request from
 * the connection on EOF and then it is ours to free; a request still
 * attached is freed with the connection.
 */
static void
control_stream_close_cb(struct evhttp_connection *evcon, void *arg)
{
	struct sb_stream	*s = arg;
	struct evhttp_request	*req = s->req;

	log_debug("counts stream: client went away at user %zu", s->pos);
	s->evcon = NULL;
	control_stream_free(s);
	if (evhttp_request_get_connection(req) == NULL)
		evhttp_request_free(req);
}

/* Write the next slice of {"U...":n,...}. */
static void
control_stream_next(struct sb_stream *s)
{
	struct sb_store		*st = s->sb->store;
	struct evbuffer		*buf = evbuffer_new();
	struct evhttp_request	*req = s->req;
	const struct sb_user	*u;
	char			 id[SB_ID_STRLEN + 1];
	size_t			 end;
	int			 done;

	done = s->generation != st->generation;
	end = done ? s->pos : s->pos + CONTROL_CHUNK_USERS;
	if (end > st->nusers)
		end = st->nusers;
	for (; s->pos < end; s->pos++) {
		u = &st->users[s->pos];
		if (u->count == 0)
			continue;
		sb_id_format(u->id, id);
		evbuffer_add_printf(buf, "%s\"%s\":%u", s->any ? "," : "", id,
		    u->count);
		s->any = 1;
	}
	if (done || s->pos >= st->nusers) {
		evbuffer_add(buf, "}\n", 2);
		evhttp_send_reply_chunk(req, buf);
		evbuffer_free(buf);
		control_stream_free(s);
		evhttp_send_reply_end(req);
		return;
	}
	if (evbuffer_get_length(buf) == 0)
		evbuffer_add(buf, " ", 1);	/* keep the callback coming */
	evhttp_send_reply_chunk_with_cb(req, buf, control_stream_chunk_cb, s);
	evbuffer_free(buf);
}

/* GET /sandbox/deliveries/counts */
static void
control_counts(struct sb_ctx *ctx)
{
	struct sb_stream	*s = xcalloc(1, sizeof *s);
	struct evbuffer		*buf = evbuffer_new();

	s->sb = ctx->sb;
	s->req = ctx->req;
	s->evcon = evhttp_request_get_connection(ctx->req);
	s->generation = ctx->sb->store->generation;
	TAILQ_INSERT_TAIL(&ctx->sb->streams, s, entry);
	evhttp_connection_set_closecb(s->evcon, control_stream_close_cb, s);
	server_reply_start(ctx, "application/json; charset=UTF-8");
	evbuffer_add(buf, "{", 1);
	evhttp_send_reply_chunk_with_cb(ctx->req, buf, control_stream_chunk_cb,
	    s);
	evbuffer_free(buf);
}

/* Forget streams at exit (evhttp_free frees their requests). */
void
control_shutdown(struct sandbox *sb)
{
	struct sb_stream	*s;

	while ((s = TAILQ_FIRST(&sb->streams)) != NULL)
		control_stream_free(s);
}

/* POST /sandbox/reset */
static void
control_reset(struct sb_ctx *ctx)
{
	json_t	*o = json_object();

	store_reset(ctx->sb->store);
	login_reset(ctx->sb->login);
	ctx->sb->webhooks->sent = ctx->sb->webhooks->failed = 0;
	json_object_set_new(o, "reset", json_true());
	server_reply_json(ctx, 200, o);
}

/* PUT /sandbox/config */
static void
control_config_put(struct sb_ctx *ctx)
{
	struct sb_config	*cfg;
	json_t			*doc;
	char			*cause = NULL;

	if ((doc = control_body(ctx)) == NULL)
		return;
	cfg = config_apply(ctx->sb->cfg, doc, &cause);
	json_decref(doc);
	if (cfg == NULL) {
		server_reply_message(ctx, 400, cause);
		free(cause);
		return;
	}
	sandbox_set_config(ctx->sb, cfg);
	server_reply_json(ctx, 200, config_json(ctx->sb->cfg));
}

/* POST /sandbox/users */
static void
control_users(struct sb_ctx *ctx)
{
	json_t	*doc, *list, *u, *o;
	char	*cause = NULL, *msg;
	size_t	 i;

	if ((doc = control_body(ctx)) == NULL)
		return;
	list = json_is_array(doc) ? doc : json_object_get(doc, "users");
	if (!json_is_array(list)) {
		json_decref(doc);
		server_reply_message(ctx, 400, "expected {\"users\": [...]}");
		return;
	}
	json_array_foreach(list, i, u) {
		if (store_user_register(ctx->sb->store, u, &cause) != 0) {
			xasprintf(&msg, "users[%zu]: %s", i, cause);
			o = json_object();
			json_object_set_new(o, "message", json_string(msg));
			json_object_set_new(o, "registered", json_integer(
			    (json_int_t)i));
			server_reply_json(ctx, 400, o);
			free(msg);
			free(cause);
			json_decref(doc);
			return;
		}
	}
	o = json_object();
	json_object_set_new(o, "registered", json_integer((json_int_t)
	    json_array_size(list)));
	json_decref(doc);
	server_reply_json(ctx, 200, o);
}

/* The webhook target answered; report it to the control client. */
static void
control_webhook_done_cb(int status, const char *body, size_t len,
    const char *err, void *arg)
{
	struct control_wh	*w = arg;
	json_t			*o = json_object(), *b;

	json_object_set_new(o, "status", json_integer(status));
	if (err != NULL)
		json_object_set_new(o, "error", json_string(err));
	else {
		/* null when the target's body is not UTF-8 text */
		b = json_stringn(body, len);
		json_object_set_new(o, "body", b != NULL ? b : json_null());
	}
	json_object_set_new(o, "url", json_string(w->url));
	json_object_set_new(o, "signature", json_string(w->signature));
	json_object_set_new(o, "payload", json_string(w->payload));
	server_reply_json(w->ctx, err != NULL ? 502 : 200, o);
	free(w->ctx);
	free(w->payload);
	free(w->signature);
	free(w->url);
	free(w);
}

/* POST /sandbox/webhook */
static void
control_webhook(struct sb_ctx *ctx)
{
	struct sandbox		*sb = ctx->sb;
	struct control_wh	*w;
	const char		*url, *secret, *token, *dest, *turl = NULL;
	const char		*tsecret = NULL, *tdest = NULL;
	json_t			*doc, *events, *body;
	char			*cause = NULL;

	if ((doc = control_body(ctx)) == NULL)
		return;
	events = json_object_get(doc, "events");
	url = json_string_value(json_object_get(doc, "url"));
	secret = json_string_value(json_object_get(doc, "secret"));
	token = json_string_value(json_object_get(doc, "token"));
	dest = json_string_value(json_object_get(doc, "destination"));
	if (!json_is_array(events)) {
		server_reply_message(ctx, 400, "events must be an array");
		goto out;
	}
	if (token == NULL && (url == NULL || secret == NULL))
		token = config_only_webhook(sb->cfg);
	if (token != NULL)
		(void)config_webhook_target(sb->cfg, token, &turl, &tsecret,
		    &tdest);
	if (url == NULL)
		url = turl;
	if (secret == NULL)
		secret = tsecret;
	if (url == NULL || secret == NULL) {
		server_reply_message(ctx, 400, "no webhook target: give url "
		    "and secret, or a token whose webhook is configured");
		goto out;
	}
	if (dest == NULL)
		dest = tdest;
	if (dest == NULL)
		dest = token != NULL ? store_channel(sb->store, token)->bot_id :
		    "U00000000000000000000000000000000";
	body = webhook_body(events, dest);
	store_reply_tokens_from(sb->store, events, sb_now_ms());
	w = xcalloc(1, sizeof *w);
	w->payload = json_dumps(body, JSON_COMPACT);
	json_decref(body);
	w->signature = webhook_sign(secret, w->payload, strlen(w->payload));
	w->url = xstrdup(url);
	w->ctx = server_ctx_dup(ctx);
	if (webhook_post(sb->webhooks, url, secret, w->payload,
	    strlen(w->payload), sb->cfg->webhook_timeout_ms,
	    control_webhook_done_cb, w, &cause) != 0) {
		server_reply_message(ctx, 400, cause);
		free(cause);
		free(w->ctx);
		free(w->payload);
		free(w->signature);
		free(w->url);
		free(w);
	}
out:
	json_decref(doc);
}

/* Answer /sandbox/... */
void
control_handle(struct sb_ctx *ctx)
{
	enum evhttp_cmd_type	 m = evhttp_request_get_command(ctx->req);
	const char		*p = ctx->path + 9; /* past /sandbox/ */
	json_t			*o;

	if (strcmp(p, "health") == 0 && m == EVHTTP_REQ_GET) {
		o = json_object();
		json_object_set_new(o, "status", json_string("ok"));
		server_reply_json(ctx, 200, o);
	} else if (strcmp(p, "stats") == 0 && m == EVHTTP_REQ_GET)
		control_stats(ctx);
	else if (strcmp(p, "deliveries") == 0 && m == EVHTTP_REQ_GET)
		control_deliveries(ctx);
	else if (strcmp(p, "deliveries/counts") == 0 && m == EVHTTP_REQ_GET)
		control_counts(ctx);
	else if (strcmp(p, "reset") == 0 && m == EVHTTP_REQ_POST)
		control_reset(ctx);
	else if (strcmp(p, "config") == 0 && m == EVHTTP_REQ_GET)
		server_reply_json(ctx, 200, config_json(ctx->sb->cfg));
	else if (strcmp(p, "config") == 0 && m == EVHTTP_REQ_PUT)
		control_config_put(ctx);
	else if (strcmp(p, "users") == 0 && m == EVHTTP_REQ_POST)
		control_users(ctx);
	else if (strcmp(p, "webhook") == 0 && m == EVHTTP_REQ_POST)
		control_webhook(ctx);
	else
		server_reply_message(ctx, 404, "Not found");
}
