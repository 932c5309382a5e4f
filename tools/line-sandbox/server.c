/* SPDX-License-Identifier: ISC */
/*
 * server.c -- the HTTP front of the sandbox.  Every request gets a fresh
 * x-line-request-id and is routed to control.c (/sandbox/...), login.c
 * (LINE Login paths) or api.c (everything else).  Before an endpoint does
 * its work it passes server_gate(): the per-channel token bucket and the
 * configured fault injection, drawn from the seedable PRNG.
 *
 * Replies may leave later than the handler returns: an injected latency
 * parks the finished reply on a timer, and an injected timeout holds the
 * request with no answer at all.  A held request watches its socket with
 * MSG_PEEK (libevent stops reading a connection while its request is
 * being served, so it would not notice) and frees the connection when the
 * client gives up.  Both kinds sit on sb->pending so that exit frees them
 * before evhttp_free() frees the requests themselves.  One log line and
 * one counter per request, with the status that was sent.
 */
#include <sys/socket.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/bufferevent.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "musubi/crypto.h"
#include "musubi/log.h"
#include "musubi/xmalloc.h"

#include "sandbox.h"

struct sb_pending {
	TAILQ_ENTRY(sb_pending)	 entry;
	struct sandbox		*sb;
	struct evhttp_request	*req;
	struct evhttp_connection *evcon;
	struct event		*ev;
	struct evbuffer		*buf;	/* delayed reply, or NULL */
	int			 status;
	int			 held;
};

/* Name an HTTP method. */
static const char *
server_method(struct evhttp_request *req)
{
	switch (evhttp_request_get_command(req)) {
	case EVHTTP_REQ_GET:
		return ("GET");
	case EVHTTP_REQ_POST:
		return ("POST");
	case EVHTTP_REQ_PUT:
		return ("PUT");
	case EVHTTP_REQ_DELETE:
		return ("DELETE");
	case EVHTTP_REQ_HEAD:
		return ("HEAD");
	case EVHTTP_REQ_PATCH:
		return ("PATCH");
	case EVHTTP_REQ_OPTIONS:
		return ("OPTIONS");
	default:
		return ("OTHER");
	}
}

/* Route one request. */
void
server_request_cb(struct evhttp_request *req, void *arg)
{
	struct sb_ctx	 ctx;

	memset(&ctx, 0, sizeof ctx);
	ctx.sb = arg;
	ctx.req = req;
	ctx.start_us = sb_mono_us();
	ctx.uri = evhttp_request_get_evhttp_uri(req);
	ctx.path = ctx.uri != NULL ? evhttp_uri_get_path(ctx.uri) : NULL;
	if (ctx.path == NULL || *ctx.path == '\0')
		ctx.path = "/";
	ctx.method = server_method(req);
	ctx.ep = SB_EP_UNKNOWN;
	crypto_uuid(ctx.rid);
	if (strncmp(ctx.path, "/sandbox/", 9) == 0) {
		ctx.ep = SB_EP_CONTROL;
		control_handle(&ctx);
		return;
	}
	if (login_handle(&ctx) == 0)
		return;
	api_handle(&ctx);
}

/* Copy a context for a reply sent from a later callback. */
struct sb_ctx *
server_ctx_dup(const struct sb_ctx *ctx)
{
	struct sb_ctx	*c = xmalloc(sizeof *c);

	*c = *ctx;
	return (c);
}

/* Find a request header. */
const char *
server_header(struct sb_ctx *ctx, const char *name)
{
	return (evhttp_find_header(evhttp_request_get_input_headers(ctx->req),
	    name));
}

/* Add a response header. */
void
server_add_header(struct sb_ctx *ctx, const char *name, const char *value)
{
	evhttp_add_header(evhttp_request_get_output_headers(ctx->req), name,
	    value);
}

/* The raw request body. */
const char *
server_body(struct sb_ctx *ctx, size_t *len)
{
	struct evbuffer	*in = evhttp_request_get_input_buffer(ctx->req);

	*len = evbuffer_get_length(in);
	if (*len == 0)
		return ("");
	return ((const char *)evbuffer_pullup(in, -1));
}

/* One query parameter. */
char *
server_query(struct sb_ctx *ctx, const char *name)
{
	struct evkeyvalq	 q;
	const char		*query, *v;
	char			*out = NULL;

	if (ctx->uri == NULL || (query = evhttp_uri_get_query(ctx->uri)) ==
	    NULL)
		return (NULL);
	TAILQ_INIT(&q);
	if (evhttp_parse_query_str(query, &q) == 0 &&
	    (v = evhttp_find_header(&q, name)) != NULL)
		out = xstrdup(v);
	evhttp_clear_headers(&q);
	return (out);
}

/* Count and log a request with the status it got. */
void
server_log(struct sb_ctx *ctx, int status)
{
	double	 ms = (double)(sb_mono_us() - ctx->start_us) / 1000.0;

	store_count(ctx->sb->store, ctx->ep, status);
	log_info("rid=%s %s %s %d %.1fms%s", ctx->rid, ctx->method, ctx->path,
	    status, ms, ctx->injected ? " (injected)" : "");
}

/* Unlink and free a pending entry; the request is not touched. */
static void
server_pending_free(struct sb_pending *p)
{
	TAILQ_REMOVE(&p->sb->pending, p, entry);
	if (p->held) {
		evhttp_connection_set_closecb(p->evcon, NULL, NULL);
		p->sb->nheld--;
	}
	if (p->ev != NULL)
		event_free(p->ev);
	if (p->buf != NULL)
		evbuffer_free(p->buf);
	free(p);
}

/* Send a reply whose injected latency is over. */
static void
server_delay_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sb_pending	*p = arg;
	struct evhttp_request	*req = p->req;
	struct evbuffer		*buf = p->buf;
	int			 status = p->status;

	p->buf = NULL;
	server_pending_free(p);
	evhttp_send_reply(req, status, NULL, buf);
	evbuffer_free(buf);
}

/*
 * The held request's connection is going away under us.  A request that
 * libevent detached from it (client EOF) is ours to free; one still
 * attached goes with the connection.
 */
static void
server_hold_close_cb(struct evhttp_connection *evcon, void *arg)
{
	struct sb_pending	*p = arg;
	struct evhttp_request	*req = p->req;

	server_pending_free(p);
	if (evhttp_request_get_connection(req) == NULL)
		evhttp_request_free(req);
}

/* Check whether the client of a held request has hung up. */
static void
server_hold_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sb_pending		*p = arg;
	struct evhttp_connection	*evcon = p->evcon;
	char				 c;
	ssize_t				 n;

	n = recv(fd, &c, 1, MSG_PEEK);
	if (n > 0) {
		/* A pipelined request: stop watching, keep holding. */
		event_del(p->ev);
		return;
	}
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK ||
	    errno == EINTR))
		return;
	log_debug("held request: client went away");
	server_pending_free(p);
	evhttp_connection_free(evcon);	/* frees the request too */
}

/* Hold a request: never answer it. */
static void
server_hold(struct sb_ctx *ctx)
{
	struct sandbox		*sb = ctx->sb;
	struct sb_pending	*p = xcalloc(1, sizeof *p);
	evutil_socket_t		 fd;

	p->sb = sb;
	p->req = ctx->req;
	p->held = 1;
	p->evcon = evhttp_request_get_connection(ctx->req);
	fd = bufferevent_getfd(evhttp_connection_get_bufferevent(p->evcon));
	p->ev = event_new(sb->base, fd, EV_READ | EV_PERSIST,
	    server_hold_read_cb, p);
	if (p->ev == NULL || event_add(p->ev, NULL) != 0)
		log_warnx("held request: cannot watch the client socket");
	evhttp_connection_set_closecb(p->evcon, server_hold_close_cb, p);
	TAILQ_INSERT_TAIL(&sb->pending, p, entry);
	sb->nheld++;
	sb->store->held[ctx->ep]++;
	log_info("rid=%s %s %s held (injected timeout)", ctx->rid, ctx->method,
	    ctx->path);
}

/* Send (or park) a finished reply. */
static void
server_send(struct sb_ctx *ctx, int status, struct evbuffer *buf)
{
	struct sb_pending	*p;
	struct timeval		 tv;

	server_add_header(ctx, "x-line-request-id", ctx->rid);
	server_log(ctx, status);
	if (ctx->latency_ms <= 0) {
		evhttp_send_reply(ctx->req, status, NULL, buf);
		evbuffer_free(buf);
		return;
	}
	p = xcalloc(1, sizeof *p);
	p->sb = ctx->sb;
	p->req = ctx->req;
	p->buf = buf;
	p->status = status;
	p->ev = evtimer_new(ctx->sb->base, server_delay_cb, p);
	TAILQ_INSERT_TAIL(&ctx->sb->pending, p, entry);
	tv.tv_sec = ctx->latency_ms / 1000;
	tv.tv_usec = (ctx->latency_ms % 1000) * 1000;
	if (p->ev == NULL || evtimer_add(p->ev, &tv) != 0) {
		log_warnx("rid=%s: cannot delay the reply", ctx->rid);
		p->buf = NULL;
		server_pending_free(p);
		evhttp_send_reply(ctx->req, status, NULL, buf);
		evbuffer_free(buf);
	}
}

/* The body of an injected failure. */
static json_t *
server_fault_body(int status)
{
	const char	*msg;
	json_t		*o = json_object();

	switch (status) {
	case 429:
		msg = "Too many requests";
		break;
	case 500:
		msg = "Internal server error";
		break;
	case 502:
		msg = "Bad gateway";
		break;
	case 503:
		msg = "Service unavailable";
		break;
	case 504:
		msg = "Gateway timeout";
		break;
	default:
		msg = "Injected failure";
		break;
	}
	json_object_set_new(o, "message", json_string(msg));
	return (o);
}

/* Reply with JSON, applying "after" faults to successes. */
void
server_reply_json(struct sb_ctx *ctx, int status, json_t *body)
{
	struct evbuffer	*buf = evbuffer_new();
	char		*s, n[16];

	if (status >= 200 && status < 300 && ctx->after_hold) {
		json_decref(body);
		server_hold(ctx);
		evbuffer_free(buf);
		return;
	}
	if (status >= 200 && status < 300 && ctx->after_status != 0) {
		json_decref(body);
		status = ctx->after_status;
		body = server_fault_body(status);
	}
	if (status == 429 && ctx->sb->cfg->retry_after > 0) {
		snprintf(n, sizeof n, "%d", ctx->sb->cfg->retry_after);
		server_add_header(ctx, "Retry-After", n);
	}
	if (body != NULL) {
		s = json_dumps(body, JSON_COMPACT);
		if (s != NULL) {
			evbuffer_add(buf, s, strlen(s));
			free(s);
		}
		json_decref(body);
		server_add_header(ctx, "Content-Type",
		    "application/json; charset=UTF-8");
	}
	server_send(ctx, status, buf);
}

/* Reply {"message": msg}. */
void
server_reply_message(struct sb_ctx *ctx, int status, const char *msg)
{
	json_t	*o = json_object();

	json_object_set_new(o, "message", json_string(msg));
	server_reply_json(ctx, status, o);
}

/* Reply with an OAuth error. */
void
server_reply_oauth(struct sb_ctx *ctx, int status, const char *error,
    const char *desc)
{
	json_t	*o = json_object();

	json_object_set_new(o, "error", json_string(error));
	json_object_set_new(o, "error_description", json_string(desc));
	server_reply_json(ctx, status, o);
}

/* Reply with a redirect. */
void
server_reply_redirect(struct sb_ctx *ctx, const char *location)
{
	server_add_header(ctx, "Location", location);
	server_add_header(ctx, "Cache-Control", "no-store");
	server_send(ctx, 302, evbuffer_new());
}

/* Begin a chunked reply. */
void
server_reply_start(struct sb_ctx *ctx, const char *ctype)
{
	server_add_header(ctx, "Content-Type", ctype);
	server_add_header(ctx, "x-line-request-id", ctx->rid);
	server_log(ctx, 200);
	evhttp_send_reply_start(ctx->req, 200, NULL);
}

/* Count one injected fault. */
static void
server_fault_used(struct sandbox *sb, struct sb_ctx *ctx, struct sb_fault *f)
{
	if (f->count > 0)
		f->count--;
	sb->store->faults_injected++;
	ctx->injected = 1;
}

/* Rate limit, then maybe inject a fault. */
int
server_gate(struct sb_ctx *ctx, struct sb_bucket *bucket)
{
	struct sandbox	*sb = ctx->sb;
	struct sb_fault	*f;
	int		 status;

	if (bucket != NULL && store_take(bucket, &sb->cfg->rates[ctx->ep]) !=
	    0) {
		server_reply_message(ctx, 429, "Too many requests");
		return (-1);
	}
	f = config_fault(sb->cfg, ctx->ep);
	if (!f->set)
		return (0);
	ctx->latency_ms = f->latency_ms;
	if (f->count == 0)
		return (0);
	if (f->timeout_rate > 0 && sb_rng_double(&sb->rng) < f->timeout_rate) {
		server_fault_used(sb, ctx, f);
		if (f->after) {
			ctx->after_hold = 1;
			return (0);
		}
		server_hold(ctx);
		return (-1);
	}
	if (f->rate > 0 && sb_rng_double(&sb->rng) < f->rate) {
		server_fault_used(sb, ctx, f);
		status = f->statuses[sb_rng_next(&sb->rng) % f->nstatuses];
		if (status >= 500 && f->after) {
			ctx->after_status = status;
			return (0);
		}
		server_reply_json(ctx, status, server_fault_body(status));
		return (-1);
	}
	return (0);
}

/* Drop delayed and held requests without answering them. */
void
server_shutdown(struct sandbox *sb)
{
	struct sb_pending	*p;

	while ((p = TAILQ_FIRST(&sb->pending)) != NULL)
		server_pending_free(p);
}
