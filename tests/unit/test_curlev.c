/* SPDX-License-Identifier: ISC */
/*
 * test_curlev.c -- curlev against a fake HTTP server: an evhttp listener on
 * 127.0.0.1, port 0, in the same event_base as the client, so one loop
 * drives both ends.  Routes: /hello (body, padded header, peer port),
 * /echo (method, request headers and body back), /status/<n>, /slow (reply
 * after SLOW_MS from a timer), /big and /bigchunk (64 KiB, with and without
 * Content-Length).  A raw listener sends canned bytes that evhttp cannot
 * produce (an interim 1xx with headers, folded lines).  Every wait has a
 * safety timer that calls event_base_loopexit, so a bug fails a test
 * instead of hanging it.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <sys/queue.h>
#include <sys/socket.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>

#include "musubi/curlev.h"
#include "musubi/log.h"
#include "musubi/xmalloc.h"

#define SLOW_MS		800	/* /slow answers after this */
#define SAFETY_SEC	5	/* no single wait lasts longer */
#define BIG_LEN		(64 * 1024)
#define NCONC		50
#define NCHAIN		3

struct fx;

/* A /slow request the server has not answered yet. */
struct slow {
	struct fx		*fx;
	struct evhttp_request	*req;
	struct event		*ev;
	TAILQ_ENTRY(slow)	 entry;
};

/* What one callback saw; strings copied, as resp is borrowed. */
struct result {
	struct fx	*fx;
	int		 calls;
	long		 status;
	char		*body;
	size_t		 bodylen;
	char		*err;
	int		 timed_out;
	int		 too_large;
	double		 elapsed;
	const char	*want[4];	/* headers to copy */
	char		*got[4];
	int		 free_ce;	/* curlev_free from the callback */
	int		 chain;		/* send this many more, one by one */
};

struct fx {
	struct event_base	*base;
	struct evhttp		*http;
	int			 port;
	struct curlev		*ce;
	struct event		*safety;
	int			 expired;
	int			 in_send;	/* inside curlev_send */
	int			 sync_calls;	/* callbacks run from it */
	int			 done;		/* callbacks run */
	int			 srv_requests;	/* requests the server saw */
	int			 slow_pending;
	TAILQ_HEAD(, slow)	 slows;
	struct result		 chained[NCHAIN];
	int			 nchained;
	struct evconnlistener	*raw;		/* canned-reply server */
	struct bufferevent	*raw_bev;
	int			 raw_port;
};

/* What the raw server sends: a 100 with a header, then the real reply. */
static const char raw_reply[] =
    "HTTP/1.1 100 Continue\r\n"
    "X-Interim: yes\r\n"
    "\r\n"
    "HTTP/1.1 200 OK\r\n"
    "Content-Length: 2\r\n"
    "X-Final:   spaced \t\r\n"
    "X-Folded: first\r\n"
    "  second\r\n"
    "X-Dup: one\r\n"
    "X-Dup: two\r\n"
    "Connection: close\r\n"
    "\r\n"
    "ok";

typedef int fx_cond(struct fx *, int);

/* Stop waiting: the test has run too long. */
static void
safety_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fx	*fx = arg;

	fx->expired = 1;
	event_base_loopexit(fx->base, NULL);
}

/* Run the loop until cond holds, or fail after SAFETY_SEC. */
static void
fx_run(struct fx *fx, fx_cond *cond, int n)
{
	struct timeval	 tv = { SAFETY_SEC, 0 };

	fx->expired = 0;
	assert_int_equal(evtimer_add(fx->safety, &tv), 0);
	while (!cond(fx, n) && !fx->expired)
		event_base_loop(fx->base, EVLOOP_ONCE);
	evtimer_del(fx->safety);
	assert_false(fx->expired);
}

/* Run the loop for ms milliseconds, whatever happens. */
static void
fx_run_for(struct fx *fx, long ms)
{
	struct timeval	 tv = { ms / 1000, (ms % 1000) * 1000 };

	assert_int_equal(event_base_loopexit(fx->base, &tv), 0);
	event_base_dispatch(fx->base);
}

/* Tell whether n callbacks ran and the server answered every /slow. */
static int
cond_done(struct fx *fx, int n)
{
	return (fx->done >= n && fx->slow_pending == 0);
}

/* Tell whether the server has seen n requests. */
static int
cond_seen(struct fx *fx, int n)
{
	return (fx->srv_requests >= n);
}

/* Tell whether the server answered every /slow. */
static int
cond_slow_answered(struct fx *fx, int n)
{
	return (fx->slow_pending == 0);
}

/* Answer a /slow request. */
static void
srv_slow_cb(evutil_socket_t fd, short what, void *arg)
{
	struct slow	*s = arg;
	struct evbuffer	*b = evbuffer_new();

	evbuffer_add_printf(b, "slow");
	evhttp_send_reply(s->req, 200, "OK", b);
	evbuffer_free(b);
	TAILQ_REMOVE(&s->fx->slows, s, entry);
	s->fx->slow_pending--;
	event_free(s->ev);
	free(s);
}

/* Close the raw connection. */
static void
raw_close(struct fx *fx)
{
	if (fx->raw_bev != NULL)
		bufferevent_free(fx->raw_bev);
	fx->raw_bev = NULL;
}

/* Close the raw connection once the reply has gone out. */
static void
raw_write_cb(struct bufferevent *bev, void *arg)
{
	if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		raw_close(arg);
}

/* Close the raw connection on EOF or error. */
static void
raw_event_cb(struct bufferevent *bev, short what, void *arg)
{
	raw_close(arg);
}

/* Send the canned reply once the request's headers are in. */
static void
raw_read_cb(struct bufferevent *bev, void *arg)
{
	struct fx	*fx = arg;
	struct evbuffer	*in = bufferevent_get_input(bev);

	if (evbuffer_search(in, "\r\n\r\n", 4, NULL).pos < 0)
		return;
	fx->srv_requests++;
	evbuffer_drain(in, evbuffer_get_length(in));
	bufferevent_setcb(bev, NULL, raw_write_cb, raw_event_cb, fx);
	bufferevent_write(bev, raw_reply, sizeof(raw_reply) - 1);
}

/* Take one connection on the raw listener. */
static void
raw_accept_cb(struct evconnlistener *l, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	struct fx	*fx = arg;

	raw_close(fx);
	fx->raw_bev = bufferevent_socket_new(fx->base, fd,
	    BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(fx->raw_bev, raw_read_cb, NULL, raw_event_cb, fx);
	bufferevent_enable(fx->raw_bev, EV_READ | EV_WRITE);
}

/* Start the raw listener on 127.0.0.1, port 0. */
static void
raw_start(struct fx *fx)
{
	struct sockaddr_in	 sin;
	socklen_t		 len = sizeof(sin);

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fx->raw = evconnlistener_new_bind(fx->base, raw_accept_cb, fx,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, -1,
	    (struct sockaddr *)&sin, sizeof(sin));
	assert_non_null(fx->raw);
	assert_int_equal(getsockname(evconnlistener_get_fd(fx->raw),
	    (struct sockaddr *)&sin, &len), 0);
	fx->raw_port = ntohs(sin.sin_port);
}

/* Name a request's method. */
static const char *
srv_method(struct evhttp_request *req)
{
	switch (evhttp_request_get_command(req)) {
	case EVHTTP_REQ_GET:
		return ("GET");
	case EVHTTP_REQ_POST:
		return ("POST");
	case EVHTTP_REQ_PUT:
		return ("PUT");
	case EVHTTP_REQ_PATCH:
		return ("PATCH");
	case EVHTTP_REQ_DELETE:
		return ("DELETE");
	case EVHTTP_REQ_HEAD:
		return ("HEAD");
	default:
		return ("OTHER");
	}
}

/* Copy a request header to X-Echo-<name>, "none" if absent. */
static void
srv_echo_header(struct evhttp_request *req, const char *name)
{
	const char	*v;
	char		 out[128];

	v = evhttp_find_header(evhttp_request_get_input_headers(req), name);
	snprintf(out, sizeof(out), "X-Echo-%s", name);
	evhttp_add_header(evhttp_request_get_output_headers(req), out,
	    v != NULL ? v : "none");
}

/* Serve the fake routes. */
static void
srv_cb(struct evhttp_request *req, void *arg)
{
	struct fx		*fx = arg;
	const struct evhttp_uri	*uri = evhttp_request_get_evhttp_uri(req);
	const char		*path = evhttp_uri_get_path(uri);
	const char		*query = evhttp_uri_get_query(uri);
	struct evkeyvalq	*out = evhttp_request_get_output_headers(req);
	struct evbuffer		*b = evbuffer_new();
	struct slow		*s;
	struct timeval		 tv = { SLOW_MS / 1000,
				    (SLOW_MS % 1000) * 1000 };
	char			*peer, port[16];
	ev_uint16_t		 pport;
	int			 i;

	fx->srv_requests++;
	if (strcmp(path, "/hello") == 0) {
		evhttp_connection_get_peer(evhttp_request_get_connection(req),
		    &peer, &pport);
		snprintf(port, sizeof(port), "%u", (unsigned)pport);
		evhttp_add_header(out, "X-Peer-Port", port);
		evhttp_add_header(out, "X-Test-Header", "  padded value  ");
		evhttp_add_header(out, "Content-Type", "text/plain");
		evbuffer_add_printf(b, "hello, world%s%s",
		    query != NULL ? " " : "", query != NULL ? query : "");
		evhttp_send_reply(req, 200, "OK", b);
	} else if (strcmp(path, "/echo") == 0) {
		evhttp_add_header(out, "X-Echo-Method", srv_method(req));
		srv_echo_header(req, "Content-Type");
		srv_echo_header(req, "X-Req-Id");
		srv_echo_header(req, "Expect");
		srv_echo_header(req, "Content-Length");
		evbuffer_add_buffer(b, evhttp_request_get_input_buffer(req));
		evhttp_send_reply(req, 200, "OK", b);
	} else if (strncmp(path, "/status/", 8) == 0) {
		evbuffer_add_printf(b, "status %s", path + 8);
		evhttp_send_reply(req, atoi(path + 8), "Status", b);
	} else if (strcmp(path, "/slow") == 0) {
		s = xcalloc(1, sizeof(*s));
		s->fx = fx;
		s->req = req;
		s->ev = evtimer_new(fx->base, srv_slow_cb, s);
		TAILQ_INSERT_TAIL(&fx->slows, s, entry);
		fx->slow_pending++;
		evtimer_add(s->ev, &tv);
	} else if (strcmp(path, "/big") == 0) {
		for (i = 0; i < BIG_LEN / 16; i++)
			evbuffer_add(b, "0123456789abcdef", 16);
		evhttp_send_reply(req, 200, "OK", b);
	} else if (strcmp(path, "/bigchunk") == 0) {
		evhttp_send_reply_start(req, 200, "OK");
		for (i = 0; i < BIG_LEN / 16; i++) {
			evbuffer_add(b, "0123456789abcdef", 16);
			if (evbuffer_get_length(b) >= 4096)
				evhttp_send_reply_chunk(req, b);
		}
		evhttp_send_reply_end(req);
	} else
		evhttp_send_error(req, 404, NULL);
	evbuffer_free(b);
}

/* Start a base, the fake server and a client. */
static int
setup(void **state)
{
	struct fx			*fx;
	struct evhttp_bound_socket	*bound;
	struct sockaddr_in		 sin;
	socklen_t			 len = sizeof(sin);
	struct curlev_config		 cfg;

	fx = xcalloc(1, sizeof(*fx));
	TAILQ_INIT(&fx->slows);
	assert_non_null(fx->base = event_base_new());
	assert_non_null(fx->safety = evtimer_new(fx->base, safety_cb, fx));
	assert_non_null(fx->http = evhttp_new(fx->base));
	evhttp_set_allowed_methods(fx->http, EVHTTP_REQ_GET |
	    EVHTTP_REQ_POST | EVHTTP_REQ_PUT | EVHTTP_REQ_PATCH |
	    EVHTTP_REQ_DELETE | EVHTTP_REQ_HEAD);
	evhttp_set_gencb(fx->http, srv_cb, fx);
	bound = evhttp_bind_socket_with_handle(fx->http, "127.0.0.1", 0);
	assert_non_null(bound);
	assert_int_equal(getsockname(evhttp_bound_socket_get_fd(bound),
	    (struct sockaddr *)&sin, &len), 0);
	fx->port = ntohs(sin.sin_port);

	memset(&cfg, 0, sizeof(cfg));
	cfg.timeout_ms = 5000;
	cfg.connect_timeout_ms = 2000;
	cfg.max_response = 1024 * 1024;
	assert_non_null(fx->ce = curlev_new(fx->base, &cfg));
	*state = fx;
	return (0);
}

/* Free a result's copies. */
static void
result_clear(struct result *r)
{
	size_t	 i;

	free(r->body);
	free(r->err);
	for (i = 0; i < nitems(r->got); i++)
		free(r->got[i]);
	memset(r, 0, sizeof(*r));
}

/* Stop the client, answer what the server still holds, free it all. */
static int
teardown(void **state)
{
	struct fx	*fx = *state;
	struct slow	*s;
	int		 i;

	curlev_free(fx->ce);
	while ((s = TAILQ_FIRST(&fx->slows)) != NULL) {
		TAILQ_REMOVE(&fx->slows, s, entry);
		evhttp_send_error(s->req, 503, NULL);
		event_free(s->ev);
		free(s);
	}
	raw_close(fx);
	if (fx->raw != NULL)
		evconnlistener_free(fx->raw);
	evhttp_free(fx->http);
	event_free(fx->safety);
	event_base_free(fx->base);
	for (i = 0; i < NCHAIN; i++)
		result_clear(&fx->chained[i]);
	free(fx);
	return (0);
}

static void	 done_cb(const struct curlev_resp *, void *);

/* Send a request, noting that we are inside curlev_send. */
static int
fx_send(struct fx *fx, struct curlev_req *req, struct result *r)
{
	int	 rv;

	r->fx = fx;
	fx->in_send++;
	rv = curlev_send(fx->ce, req, done_cb, r);
	fx->in_send--;
	return (rv);
}

/* Make a GET request for a path on the fake server. */
static struct curlev_req *
fx_get(struct fx *fx, const char *path)
{
	struct curlev_req	*req;
	char			*url;

	xasprintf(&url, "http://127.0.0.1:%d%s", fx->port, path);
	req = curlev_req_new("GET", url);
	free(url);
	return (req);
}

/* Record a response, and do what the result asks for. */
static void
done_cb(const struct curlev_resp *resp, void *arg)
{
	struct result	*r = arg;
	struct fx	*fx = r->fx;
	size_t		 i;
	const char	*v;
	int		 chain;

	if (fx->in_send)
		fx->sync_calls++;
	fx->done++;
	if (r->calls++ > 0)
		return;
	r->status = resp->status;
	r->body = xstrndup(resp->body, resp->bodylen);
	r->bodylen = resp->bodylen;
	r->err = resp->err != NULL ? xstrdup(resp->err) : NULL;
	r->timed_out = resp->timed_out;
	r->too_large = resp->too_large;
	r->elapsed = resp->elapsed;
	for (i = 0; i < nitems(r->want) && r->want[i] != NULL; i++) {
		if ((v = curlev_resp_header(resp, r->want[i])) != NULL)
			r->got[i] = xstrdup(v);
	}
	if (r->free_ce) {
		curlev_free(fx->ce);
		fx->ce = NULL;
	}
	if (r->chain > 0 && fx->nchained < NCHAIN) {
		chain = r->chain - 1;
		r = &fx->chained[fx->nchained++];
		r->want[0] = "X-Peer-Port";
		r->chain = chain;
		assert_int_equal(fx_send(fx, fx_get(fx, "/hello"), r), 0);
	}
}

/* GET: status, body, a header found case-insensitively and trimmed. */
static void
test_curlev_get(void **state)
{
	struct fx	*fx = *state;
	struct result	 r = { .want = { "x-TEST-header", "content-type",
	    "X-Absent" } };

	assert_int_equal(fx_send(fx, fx_get(fx, "/hello"), &r), 0);
	assert_int_equal(r.calls, 0);
	assert_int_equal(curlev_inflight(fx->ce), 1);
	fx_run(fx, cond_done, 1);

	assert_int_equal(r.calls, 1);
	assert_null(r.err);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "hello, world");
	assert_int_equal(r.bodylen, strlen("hello, world"));
	assert_string_equal(r.got[0], "padded value");
	assert_string_equal(r.got[1], "text/plain");
	assert_null(r.got[2]);
	assert_false(r.timed_out);
	assert_false(r.too_large);
	assert_true(r.elapsed > 0 && r.elapsed < SAFETY_SEC);
	assert_int_equal(curlev_inflight(fx->ce), 0);
	assert_int_equal(fx->sync_calls, 0);
	result_clear(&r);
}

/* POST: JSON body and request headers reach the server; no Expect. */
static void
test_curlev_post_json(void **state)
{
	struct fx		*fx = *state;
	struct result		 r = { .want = { "X-Echo-Method",
	    "X-Echo-Content-Type", "X-Echo-X-Req-Id", "X-Echo-Expect" } };
	struct curlev_req	*req;
	char			*url, *json;
	size_t			 len, i;

	/* Big enough that libcurl would otherwise consider Expect. */
	len = 1024 * 1024 + 100;
	json = xmalloc(len + 1);
	memcpy(json, "{\"k\":\"", 6);
	for (i = 6; i < len - 2; i++)
		json[i] = 'a' + (char)(i % 26);
	memcpy(json + len - 2, "\"}", 2);
	json[len] = '\0';

	xasprintf(&url, "http://127.0.0.1:%d/echo", fx->port);
	req = curlev_req_new("POST", url);
	curlev_req_header(req, "X-Req-Id", "abc-123");
	curlev_req_body(req, "application/json", json, len);
	curlev_req_max_response(req, 2 * len);
	assert_int_equal(fx_send(fx, req, &r), 0);
	fx_run(fx, cond_done, 1);

	assert_null(r.err);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.got[0], "POST");
	assert_string_equal(r.got[1], "application/json");
	assert_string_equal(r.got[2], "abc-123");
	assert_string_equal(r.got[3], "none");
	assert_int_equal(r.bodylen, len);
	assert_memory_equal(r.body, json, len);
	assert_int_equal(fx->sync_calls, 0);
	result_clear(&r);
	free(json);
	free(url);
}

/* PUT, PATCH and DELETE go out with their method; PUT with its body. */
static void
test_curlev_methods(void **state)
{
	struct fx		*fx = *state;
	static const char	*methods[] = { "PUT", "PATCH", "DELETE" };
	struct result		 r[3];
	struct curlev_req	*req;
	char			*url;
	size_t			 i;

	memset(r, 0, sizeof(r));
	xasprintf(&url, "http://127.0.0.1:%d/echo", fx->port);
	for (i = 0; i < nitems(methods); i++) {
		r[i].want[0] = "X-Echo-Method";
		r[i].want[1] = "X-Echo-Content-Length";
		req = curlev_req_new(methods[i], url);
		if (i == 0)
			curlev_req_body(req, "text/plain", "put-body", 8);
		assert_int_equal(fx_send(fx, req, &r[i]), 0);
	}
	fx_run(fx, cond_done, 3);
	for (i = 0; i < nitems(methods); i++) {
		assert_null(r[i].err);
		assert_int_equal(r[i].status, 200);
		assert_string_equal(r[i].got[0], methods[i]);
	}
	assert_string_equal(r[0].body, "put-body");
	assert_string_equal(r[1].got[1], "0");		/* empty PATCH */
	assert_string_equal(r[2].body, "");
	for (i = 0; i < nitems(methods); i++)
		result_clear(&r[i]);
	free(url);
}

/* A user "Expect: 100-continue" gets a 100 first; the 200 is reported. */
static void
test_curlev_100_continue(void **state)
{
	struct fx		*fx = *state;
	struct result		 r = { .want = { "X-Echo-Expect",
	    "X-Echo-Method" } };
	struct curlev_req	*req;
	char			*url;

	xasprintf(&url, "http://127.0.0.1:%d/echo", fx->port);
	req = curlev_req_new("POST", url);
	curlev_req_header(req, "Expect", "100-continue");
	curlev_req_body(req, "text/plain", "after continue", 14);
	assert_int_equal(fx_send(fx, req, &r), 0);
	fx_run(fx, cond_done, 1);

	assert_null(r.err);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.got[0], "100-continue");
	assert_string_equal(r.got[1], "POST");
	assert_string_equal(r.body, "after continue");
	result_clear(&r);
	free(url);
}

/* Only the final response's headers count; folded lines are joined. */
static void
test_curlev_interim_headers(void **state)
{
	struct fx	*fx = *state;
	struct result	 r = { .want = { "X-Interim", "x-final", "X-Folded",
	    "X-DUP" } };
	char		*url;

	raw_start(fx);
	xasprintf(&url, "http://127.0.0.1:%d/raw", fx->raw_port);
	assert_int_equal(fx_send(fx, curlev_req_new("GET", url), &r), 0);
	fx_run(fx, cond_done, 1);

	assert_null(r.err);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "ok");
	assert_null(r.got[0]);
	assert_string_equal(r.got[1], "spaced");
	assert_string_equal(r.got[2], "first second");
	assert_string_equal(r.got[3], "one");
	result_clear(&r);
	free(url);
}

/* 4xx and 5xx are responses: err stays NULL, the body is there. */
static void
test_curlev_error_statuses(void **state)
{
	struct fx	*fx = *state;
	struct result	 r404 = { 0 }, r503 = { 0 };

	assert_int_equal(fx_send(fx, fx_get(fx, "/status/404"), &r404), 0);
	assert_int_equal(fx_send(fx, fx_get(fx, "/status/503"), &r503), 0);
	fx_run(fx, cond_done, 2);

	assert_null(r404.err);
	assert_int_equal(r404.status, 404);
	assert_string_equal(r404.body, "status 404");
	assert_null(r503.err);
	assert_int_equal(r503.status, 503);
	assert_string_equal(r503.body, "status 503");
	result_clear(&r404);
	result_clear(&r503);
}

/* A reply slower than the request's timeout sets timed_out. */
static void
test_curlev_timeout(void **state)
{
	struct fx		*fx = *state;
	struct result		 r = { 0 };
	struct curlev_req	*req;

	req = fx_get(fx, "/slow");
	curlev_req_timeout(req, 200);
	assert_int_equal(fx_send(fx, req, &r), 0);
	fx_run(fx, cond_done, 1);	/* and the late reply goes out */

	assert_int_equal(r.calls, 1);
	assert_non_null(r.err);
	assert_true(r.timed_out);
	assert_false(r.too_large);
	assert_int_equal(r.status, 0);
	assert_true(r.elapsed >= 0.15 && r.elapsed < SLOW_MS / 1000.0);
	result_clear(&r);
}

/* Without a per-request timeout, the config's applies. */
static void
test_curlev_config_timeout(void **state)
{
	struct fx		*fx = *state;
	struct result		 r = { 0 };
	struct curlev_config	 cfg = { .timeout_ms = 150 };

	curlev_free(fx->ce);
	assert_non_null(fx->ce = curlev_new(fx->base, &cfg));
	assert_int_equal(fx_send(fx, fx_get(fx, "/slow"), &r), 0);
	fx_run(fx, cond_done, 1);

	assert_true(r.timed_out);
	assert_non_null(r.err);
	assert_true(r.elapsed < SLOW_MS / 1000.0);
	result_clear(&r);
}

/* A body over the cap sets too_large, with or without Content-Length. */
static void
test_curlev_too_large(void **state)
{
	struct fx		*fx = *state;
	struct result		 r1 = { 0 }, r2 = { 0 }, r3 = { 0 };
	struct curlev_req	*req;

	req = fx_get(fx, "/big");
	curlev_req_max_response(req, 1024);
	assert_int_equal(fx_send(fx, req, &r1), 0);
	req = fx_get(fx, "/bigchunk");
	curlev_req_max_response(req, 1024);
	assert_int_equal(fx_send(fx, req, &r2), 0);
	req = fx_get(fx, "/big");		/* exactly at the cap is fine */
	curlev_req_max_response(req, BIG_LEN);
	assert_int_equal(fx_send(fx, req, &r3), 0);
	fx_run(fx, cond_done, 3);

	assert_true(r1.too_large);
	assert_non_null(r1.err);
	assert_false(r1.timed_out);
	assert_int_equal(r1.bodylen, 0);
	assert_true(r2.too_large);
	assert_non_null(r2.err);
	assert_int_equal(r2.bodylen, 0);
	assert_false(r3.too_large);
	assert_null(r3.err);
	assert_int_equal(r3.bodylen, BIG_LEN);
	result_clear(&r1);
	result_clear(&r2);
	result_clear(&r3);
}

/* Nothing listens on the port: err set, status 0. */
static void
test_curlev_refused(void **state)
{
	struct fx		*fx = *state;
	struct result		 r = { 0 };
	struct sockaddr_in	 sin;
	socklen_t		 len = sizeof(sin);
	char			*url;
	int			 s;

	/* Bound but not listening: the port is ours and refuses. */
	assert_true((s = socket(AF_INET, SOCK_STREAM, 0)) >= 0);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(s, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(getsockname(s, (struct sockaddr *)&sin, &len), 0);
	xasprintf(&url, "http://127.0.0.1:%d/", ntohs(sin.sin_port));
	assert_int_equal(fx_send(fx, curlev_req_new("GET", url), &r), 0);
	fx_run(fx, cond_done, 1);
	close(s);

	assert_int_equal(r.calls, 1);
	assert_non_null(r.err);
	assert_int_equal(r.status, 0);
	assert_false(r.timed_out);
	assert_false(r.too_large);
	assert_int_equal(fx->sync_calls, 0);
	result_clear(&r);
	free(url);
}

/* 50 requests at once, through 8 connections, each answered once. */
static void
test_curlev_concurrent(void **state)
{
	struct fx		*fx = *state;
	struct result		*r;
	struct curlev_config	 cfg = { .timeout_ms = 5000,
	    .max_host_connections = 8 };
	char			 path[64], want[64];
	int			 i;

	curlev_free(fx->ce);
	assert_non_null(fx->ce = curlev_new(fx->base, &cfg));
	r = xcalloc(NCONC, sizeof(*r));
	for (i = 0; i < NCONC; i++) {
		snprintf(path, sizeof(path), "/hello?i=%d", i);
		assert_int_equal(fx_send(fx, fx_get(fx, path), &r[i]), 0);
	}
	assert_int_equal(curlev_inflight(fx->ce), NCONC);
	fx_run(fx, cond_done, NCONC);
	fx_run_for(fx, 100);		/* any second callback shows up */

	assert_int_equal(fx->done, NCONC);
	assert_int_equal(fx->srv_requests, NCONC);
	assert_int_equal(fx->sync_calls, 0);
	assert_int_equal(curlev_inflight(fx->ce), 0);
	for (i = 0; i < NCONC; i++) {
		snprintf(want, sizeof(want), "hello, world i=%d", i);
		assert_int_equal(r[i].calls, 1);
		assert_null(r[i].err);
		assert_int_equal(r[i].status, 200);
		assert_string_equal(r[i].body, want);
		result_clear(&r[i]);
	}
	free(r);
}

/* Sending from a callback works, and reuses the kept-alive connection. */
static void
test_curlev_keepalive_chain(void **state)
{
	struct fx	*fx = *state;
	struct result	 r = { .want = { "X-Peer-Port" }, .chain = NCHAIN };
	int		 i;

	assert_int_equal(fx_send(fx, fx_get(fx, "/hello"), &r), 0);
	fx_run(fx, cond_done, 1 + NCHAIN);

	assert_int_equal(fx->nchained, NCHAIN);
	assert_null(r.err);
	assert_non_null(r.got[0]);
	for (i = 0; i < NCHAIN; i++) {
		assert_int_equal(fx->chained[i].calls, 1);
		assert_null(fx->chained[i].err);
		assert_int_equal(fx->chained[i].status, 200);
		/* Same client port: same TCP connection. */
		assert_string_equal(fx->chained[i].got[0], r.got[0]);
	}
	assert_int_equal(fx->sync_calls, 0);
	result_clear(&r);
}

/* Requests libcurl refuses fail later, from the loop, never inside send. */
static void
test_curlev_refused_by_curl(void **state)
{
	struct fx		*fx = *state;
	struct result		 r1 = { 0 }, r2 = { 0 }, r3 = { 0 };
	struct curlev_req	*req;
	char			*url;
	size_t			 len = 8 * 1000 * 1000 + 64;

	/* Longer than libcurl's CURL_MAX_INPUT_LENGTH. */
	url = xmalloc(len + 1);
	memset(url, 'a', len);
	url[len] = '\0';
	memcpy(url, "http://127.0.0.1/", 17);
	assert_int_equal(fx_send(fx, curlev_req_new("GET", url), &r1), -1);
	free(url);

	req = fx_get(fx, "/echo");
	curlev_req_header(req, "X-Bad", "a\r\nInjected: 1");
	assert_int_equal(fx_send(fx, req, &r2), -1);

	/* Accepted, but libcurl fails it: still from the loop. */
	assert_int_equal(fx_send(fx, curlev_req_new("GET",
	    "ftp://127.0.0.1/x"), &r3), 0);

	assert_int_equal(r1.calls + r2.calls + r3.calls, 0);
	assert_int_equal(curlev_inflight(fx->ce), 3);
	fx_run(fx, cond_done, 3);

	assert_int_equal(r1.calls, 1);
	assert_non_null(r1.err);
	assert_int_equal(r1.status, 0);
	assert_int_equal(r2.calls, 1);
	assert_non_null(r2.err);
	assert_int_equal(r3.calls, 1);
	assert_non_null(r3.err);
	assert_int_equal(fx->srv_requests, 0);
	assert_int_equal(fx->sync_calls, 0);
	result_clear(&r1);
	result_clear(&r2);
	result_clear(&r3);
}

/* curlev_free with requests in flight: each callback gets "aborted". */
static void
test_curlev_free_inflight(void **state)
{
	struct fx	*fx = *state;
	struct result	 r[5];
	int		 i;

	memset(r, 0, sizeof(r));
	for (i = 0; i < 4; i++)
		assert_int_equal(fx_send(fx, fx_get(fx, "/slow"), &r[i]), 0);
	fx_run(fx, cond_seen, 4);
	/* One more that has not even connected. */
	assert_int_equal(fx_send(fx, fx_get(fx, "/slow"), &r[4]), 0);
	assert_int_equal(curlev_inflight(fx->ce), 5);

	curlev_free(fx->ce);
	fx->ce = NULL;
	for (i = 0; i < 5; i++) {
		assert_int_equal(r[i].calls, 1);
		assert_string_equal(r[i].err, "aborted");
		assert_int_equal(r[i].status, 0);
	}
	/* The server answers into closed connections; nothing may leak. */
	fx_run(fx, cond_slow_answered, 0);
	assert_int_equal(fx->done, 5);
	for (i = 0; i < 5; i++)
		result_clear(&r[i]);
}

/* curlev_free from inside a callback aborts the rest, then frees. */
static void
test_curlev_free_from_callback(void **state)
{
	struct fx	*fx = *state;
	struct result	 fast = { .free_ce = 1 }, slow1 = { 0 }, slow2 = { 0 };

	assert_int_equal(fx_send(fx, fx_get(fx, "/slow"), &slow1), 0);
	assert_int_equal(fx_send(fx, fx_get(fx, "/slow"), &slow2), 0);
	assert_int_equal(fx_send(fx, fx_get(fx, "/hello"), &fast), 0);
	fx_run(fx, cond_done, 3);

	assert_null(fx->ce);
	assert_null(fast.err);
	assert_int_equal(fast.status, 200);
	assert_int_equal(slow1.calls, 1);
	assert_string_equal(slow1.err, "aborted");
	assert_int_equal(slow2.calls, 1);
	assert_string_equal(slow2.err, "aborted");
	result_clear(&fast);
	result_clear(&slow1);
	result_clear(&slow2);
}

/* Run the tests. */
int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_curlev_get, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_curlev_post_json, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_curlev_methods, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_curlev_100_continue,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_curlev_interim_headers,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_curlev_error_statuses,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_curlev_timeout, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_curlev_config_timeout,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_curlev_too_large, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_curlev_refused, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_curlev_concurrent, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_curlev_keepalive_chain,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_curlev_refused_by_curl,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_curlev_free_inflight,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_curlev_free_from_callback, setup, teardown),
	};

	/* Talk to the fake server directly, whatever the environment says. */
	unsetenv("http_proxy");
	unsetenv("HTTP_PROXY");
	unsetenv("https_proxy");
	unsetenv("HTTPS_PROXY");
	unsetenv("all_proxy");
	unsetenv("ALL_PROXY");
	log_set_level(LOG_LEVEL_ERROR);
	return (cmocka_run_group_tests(tests, NULL, NULL));
}
