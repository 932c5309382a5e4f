/* SPDX-License-Identifier: ISC */
/*
 * test_httpd.c -- the HTTP server on a real event_base, bound to
 * 127.0.0.1:0, driven by a tiny blocking client.
 *
 * The server runs in the test's thread; each request is made from a second
 * thread with plain sockets (struct job), so the tests can send exactly the
 * bytes they want and read exactly what came back, headers included.  While
 * a job runs, the test thread spins the loop (a 5 ms tick keeps it waking up
 * to notice the job is done).  Every wait has a safety deadline and every
 * client socket a receive timeout, so a bug fails a test instead of hanging
 * it.  The client thread never calls cmocka: it records what happened and
 * the test thread asserts on it.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <sys/socket.h>
#include <sys/time.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>

#include "musubi/config.h"
#include "musubi/httpd.h"
#include "musubi/log.h"
#include "musubi/metrics.h"

#define SAFETY_SEC	5	/* no wait lasts longer */
#define LATER_MS	100	/* /later replies after this */
#define MAX_BODY	1024	/* http_max_body in these tests */
#define SMALL_MAX	16	/* route limit of /small */

/* One client exchange, run in its own thread. */
struct job {
	int		 port;
	int		 fd;		/* -1: connect; else reuse */
	char		*req;		/* raw request bytes */
	size_t		 reqlen;
	int		 keep;		/* read one response, keep fd open */

	/* Results. */
	int		 connect_failed;
	char		 err[160];
	char		*raw;		/* whole response, NUL-terminated */
	size_t		 rawlen;
	int		 status;
	const char	*body;		/* into raw */
	size_t		 bodylen;
	json_t		*json;		/* parsed body, if JSON */

	pthread_t	 th;
	atomic_int	 done;
};

struct fx {
	struct event_base	*base;
	struct config		 cfg;
	struct metrics		*metrics;
	struct httpd		*h;
	int			 port;
	struct event		*tick;
	struct event		*safety;
	int			 expired;
	struct http_req		*held;		/* by /hold, not answered */
	int			 handled;	/* handler calls */
};

/* ---- the client thread --------------------------------------------- */

/* Find the end of the header block in buf; offset of the body or 0. */
static size_t
header_end(const char *buf, size_t len)
{
	size_t	 i;

	for (i = 3; i < len; i++) {
		if (buf[i - 3] == '\r' && buf[i - 2] == '\n' &&
		    buf[i - 1] == '\r' && buf[i] == '\n')
			return (i + 1);
	}
	return (0);
}

/* Content-Length of a header block, or -1. */
static long
content_length(const char *hdrs, size_t len)
{
	const char	*p = hdrs, *end = hdrs + len;

	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));

		if (nl == NULL)
			break;
		if ((size_t)(nl - p) > 15 &&
		    strncasecmp(p, "Content-Length:", 15) == 0)
			return (strtol(p + 15, NULL, 10));
		p = nl + 1;
	}
	return (-1);
}

/* Connect, send, read the reply: runs in the client thread. */
static void *
job_run(void *arg)
{
	struct job		*j = arg;
	struct sockaddr_in	 sin;
	struct timeval		 tv = { SAFETY_SEC, 0 };
	size_t			 cap = 4096, off, hend = 0;
	ssize_t			 n;
	long			 clen = -1;

	if (j->fd < 0) {
		j->fd = socket(AF_INET, SOCK_STREAM, 0);
		memset(&sin, 0, sizeof sin);
		sin.sin_family = AF_INET;
		sin.sin_port = htons((uint16_t)j->port);
		sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		setsockopt(j->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
		if (connect(j->fd, (struct sockaddr *)&sin, sizeof sin) != 0) {
			j->connect_failed = 1;
			snprintf(j->err, sizeof j->err, "connect: %s",
			    strerror(errno));
			close(j->fd);
			j->fd = -1;
			goto out;
		}
	}
	for (off = 0; off < j->reqlen; off += (size_t)n) {
		n = send(j->fd, j->req + off, j->reqlen - off, MSG_NOSIGNAL);
		if (n <= 0) {
			snprintf(j->err, sizeof j->err, "send: %s",
			    strerror(errno));
			break;
		}
	}
	j->raw = malloc(cap);
	j->rawlen = 0;
	for (;;) {
		if (j->rawlen + 1 >= cap)
			j->raw = realloc(j->raw, cap *= 2);
		n = recv(j->fd, j->raw + j->rawlen, cap - j->rawlen - 1, 0);
		if (n < 0) {
			snprintf(j->err, sizeof j->err, "recv: %s",
			    strerror(errno));
			break;
		}
		if (n == 0)
			break;
		j->rawlen += (size_t)n;
		if (hend == 0 && (hend = header_end(j->raw, j->rawlen)) != 0)
			clen = content_length(j->raw, hend);
		if (j->keep && hend != 0 && clen >= 0 &&
		    j->rawlen >= hend + (size_t)clen)
			break;
	}
	j->raw[j->rawlen] = '\0';
	if (hend == 0) {
		if (j->err[0] == '\0')
			snprintf(j->err, sizeof j->err, "no complete header "
			    "block in %zu bytes", j->rawlen);
		goto out;
	}
	if (sscanf(j->raw, "HTTP/1.%*d %d", &j->status) != 1)
		snprintf(j->err, sizeof j->err, "bad status line");
	j->body = j->raw + hend;
	j->bodylen = j->rawlen - hend;
	if (!j->keep) {
		close(j->fd);
		j->fd = -1;
	}
out:
	atomic_store(&j->done, 1);
	return (NULL);
}

/* ---- the test thread ------------------------------------------------ */

/* Wake the loop now and then, so waits notice finished jobs. */
static void
tick_cb(evutil_socket_t fd, short what, void *arg)
{
}

/* Give up waiting. */
static void
safety_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fx	*fx = arg;

	fx->expired = 1;
}

typedef int fx_cond(struct fx *, void *);

static struct job *job_start(struct fx *, int, int, const char *, ...)
    PRINTFLIKE(4, 5);
static struct job *exchange(struct fx *, const char *, ...) PRINTFLIKE(2, 3);

/* Spin the loop until cond holds, failing after SAFETY_SEC. */
static void
fx_run(struct fx *fx, fx_cond *cond, void *arg)
{
	struct timeval	 tv = { SAFETY_SEC, 0 };

	fx->expired = 0;
	assert_int_equal(evtimer_add(fx->safety, &tv), 0);
	while (!cond(fx, arg) && !fx->expired)
		event_base_loop(fx->base, EVLOOP_ONCE);
	evtimer_del(fx->safety);
	if (fx->expired)
		fail_msg("timed out waiting");
}

/* Spin the loop for ms milliseconds. */
static void
fx_run_for(struct fx *fx, long ms)
{
	struct timeval	 tv = { ms / 1000, (ms % 1000) * 1000 };

	event_base_loopexit(fx->base, &tv);
	event_base_dispatch(fx->base);
}

static int
job_done(struct fx *fx, void *arg)
{
	return (atomic_load(&((struct job *)arg)->done));
}

static int
held(struct fx *fx, void *arg)
{
	return (fx->held != NULL);
}

static int
conns_are(struct fx *fx, void *arg)
{
	return (httpd_connections(fx->h) == *(size_t *)arg);
}

/* Start a job sending req (printf-style) on fd (-1: a new connection). */
static struct job *
job_start(struct fx *fx, int fd, int keep, const char *fmt, ...)
{
	struct job	*j = calloc(1, sizeof *j);
	va_list		 ap;
	int		 n;

	assert_non_null(j);
	j->port = fx->port;
	j->fd = fd;
	j->keep = keep;
	va_start(ap, fmt);
	n = vasprintf(&j->req, fmt, ap);
	va_end(ap);
	assert_true(n >= 0);
	j->reqlen = (size_t)n;
	atomic_init(&j->done, 0);
	assert_int_equal(pthread_create(&j->th, NULL, job_run, j), 0);
	return (j);
}

/* Wait for a job and parse its body as JSON when it looks like it. */
static void
job_wait(struct fx *fx, struct job *j)
{
	fx_run(fx, job_done, j);
	assert_int_equal(pthread_join(j->th, NULL), 0);
	if (j->body != NULL && j->bodylen > 0 && j->body[0] == '{')
		j->json = json_loadb(j->body, j->bodylen, 0, NULL);
}

/* Run one request to the end on a new connection that closes. */
static struct job *
exchange(struct fx *fx, const char *fmt, ...)
{
	struct job	*j = calloc(1, sizeof *j);
	va_list		 ap;
	int		 n;

	assert_non_null(j);
	j->port = fx->port;
	j->fd = -1;
	va_start(ap, fmt);
	n = vasprintf(&j->req, fmt, ap);
	va_end(ap);
	assert_true(n >= 0);
	j->reqlen = (size_t)n;
	atomic_init(&j->done, 0);
	assert_int_equal(pthread_create(&j->th, NULL, job_run, j), 0);
	job_wait(fx, j);
	if (j->err[0] != '\0')
		fail_msg("client: %s", j->err);
	return (j);
}

/* POST body to path on a new connection that closes. */
static struct job *
post(struct fx *fx, const char *path, const char *body)
{
	return (exchange(fx, "POST %s HTTP/1.1\r\nHost: x\r\n"
	    "Content-Type: application/json\r\nContent-Length: %zu\r\n"
	    "Connection: close\r\n\r\n%s", path, strlen(body), body));
}

static void
job_free(struct job *j)
{
	if (j == NULL)
		return;
	if (j->fd >= 0)
		close(j->fd);
	json_decref(j->json);
	free(j->raw);
	free(j->req);
	free(j);
}

/* A response header's value (copied into a static buffer) or NULL. */
static const char *
job_header(const struct job *j, const char *name)
{
	static char	 val[512];
	const char	*p = j->raw, *end = j->body;
	size_t		 nl = strlen(name), n;

	while (p < end) {
		const char *eol = strstr(p, "\r\n");

		if (eol == NULL || eol >= end)
			break;
		if ((size_t)(eol - p) > nl && strncasecmp(p, name, nl) == 0 &&
		    p[nl] == ':') {
			p += nl + 1;
			while (*p == ' ')
				p++;
			n = (size_t)(eol - p);
			if (n >= sizeof val)
				n = sizeof val - 1;
			memcpy(val, p, n);
			val[n] = '\0';
			return (val);
		}
		p = eol + 2;
	}
	return (NULL);
}

/* The error code of a JSON error reply, or "". */
static const char *
error_code(const struct job *j)
{
	const char	*s = NULL;

	if (j->json == NULL ||
	    json_unpack(j->json, "{s:{s:s}}", "error", "code", &s) != 0)
		return ("");
	return (s);
}

/* The error message of a JSON error reply, or "". */
static const char *
error_message(const struct job *j)
{
	const char	*s = NULL;

	if (j->json == NULL ||
	    json_unpack(j->json, "{s:{s:s}}", "error", "message", &s) != 0)
		return ("");
	return (s);
}

/* A string member of a JSON reply, or NULL. */
static const char *
json_str(const struct job *j, const char *key)
{
	json_t	*v;

	if (j->json == NULL || (v = json_object_get(j->json, key)) == NULL)
		return (NULL);
	return (json_string_value(v));
}

/* Assert a JSON error reply with this status and code. */
static void
assert_error(const struct job *j, int status, const char *code)
{
	const char	*ct = job_header(j, "Content-Type");

	if (j->status != status)
		fail_msg("status %d, want %d: %s", j->status, status, j->raw);
	assert_non_null(ct);
	assert_true(strncmp(ct, "application/json", 16) == 0);
	assert_non_null(j->json);
	assert_string_equal(error_code(j), code);
	assert_true(strlen(error_message(j)) > 0);
}

/* ---- handlers ------------------------------------------------------- */

/* Reply with what the server parsed out of the request. */
static void
echo_handler(struct http_req *req, void *arg)
{
	struct fx	*fx = arg;
	json_t		*o = json_object();
	const char	*v;

	fx->handled++;
	json_object_set_new(o, "method",
	    json_string(http_req_method_name(req)));
	json_object_set_new(o, "path", json_string(http_req_path(req)));
	json_object_set_new(o, "route", json_string(http_req_route(req)));
	json_object_set_new(o, "id", json_string(http_req_id(req)));
	json_object_set_new(o, "peer", json_string(http_req_peer(req)));
	if ((v = http_req_param(req, "id")) != NULL)
		json_object_set_new(o, "param_id", json_string(v));
	if ((v = http_req_param(req, "rest")) != NULL)
		json_object_set_new(o, "param_rest", json_string(v));
	if ((v = http_req_param(req, "kind")) != NULL)
		json_object_set_new(o, "param_kind", json_string(v));
	if ((v = http_req_query(req, "name")) != NULL)
		json_object_set_new(o, "q_name", json_string(v));
	if ((v = http_req_query(req, "absent")) != NULL)
		json_object_set_new(o, "q_absent", json_string(v));
	if ((v = http_req_header(req, "X-Test")) != NULL)
		json_object_set_new(o, "h_test", json_string(v));
	http_reply_json(req, 200, o);
}

/* Parse the body as a JSON object and send it back. */
static void
json_handler(struct http_req *req, void *arg)
{
	struct fx	*fx = arg;
	json_t		*body;

	fx->handled++;
	if ((body = http_req_json(req)) == NULL)
		return;
	http_reply_json(req, 200, json_pack("{s:o}", "got", body));
}

/* Reply with the body's length. */
static void
small_handler(struct http_req *req, void *arg)
{
	struct fx	*fx = arg;
	size_t		 len;

	fx->handled++;
	(void)http_req_body(req, &len);
	http_reply_json(req, 200, json_pack("{s:I}", "len", (json_int_t)len));
}

/* The /later timer fired: answer now. */
static void
later_cb(evutil_socket_t fd, short what, void *arg)
{
	http_reply_json(arg, 200, json_pack("{s:b}", "deferred", 1));
}

/* Reply LATER_MS from now, from a timer. */
static void
later_handler(struct http_req *req, void *arg)
{
	struct fx	*fx = arg;
	struct timeval	 tv = { 0, LATER_MS * 1000 };

	fx->handled++;
	assert_int_equal(event_base_once(fx->base, -1, EV_TIMEOUT, later_cb,
	    req, &tv), 0);
}

/* Keep the request; the test answers it (or aborts it). */
static void
hold_handler(struct http_req *req, void *arg)
{
	struct fx	*fx = arg;

	fx->handled++;
	fx->held = req;
}

/* Reply with raw text. */
static void
raw_handler(struct http_req *req, void *arg)
{
	static const char text[] = "plain text\n";

	http_reply_raw(req, 200, "text/plain", text, sizeof text - 1);
}

/* ---- fixture -------------------------------------------------------- */

static int
setup(void **state)
{
	struct fx	*fx = calloc(1, sizeof *fx);
	struct timeval	 tv = { 0, 5000 };
	char		*cause = NULL;

	if (fx == NULL)
		return (-1);
	if (config_load(NULL, &fx->cfg, &cause) != 0) {
		fprintf(stderr, "config_load: %s\n", cause);
		return (-1);
	}
	fx->cfg.http_max_body = MAX_BODY;
	fx->base = event_base_new();
	fx->metrics = metrics_new();
	fx->h = httpd_new(fx->base, &fx->cfg, fx->metrics);
	httpd_route(fx->h, HTTP_GET, "/hello", echo_handler, fx);
	httpd_route(fx->h, HTTP_GET | HTTP_POST, "/things", echo_handler, fx);
	httpd_route(fx->h, HTTP_GET, "/items/{id}", echo_handler, fx);
	httpd_route(fx->h, HTTP_GET, "/items/{id}/{kind}", echo_handler, fx);
	httpd_route(fx->h, HTTP_GET, "/files/{*rest}", echo_handler, fx);
	httpd_route(fx->h, HTTP_POST, "/json", json_handler, fx);
	httpd_route_limit(fx->h, HTTP_POST, "/small", SMALL_MAX,
	    small_handler, fx);
	httpd_route(fx->h, HTTP_GET, "/later", later_handler, fx);
	httpd_route(fx->h, HTTP_GET, "/hold", hold_handler, fx);
	httpd_route(fx->h, HTTP_GET, "/raw", raw_handler, fx);
	if (httpd_listen(fx->h, "127.0.0.1:0", &cause) != 0) {
		fprintf(stderr, "httpd_listen: %s\n", cause);
		return (-1);
	}
	fx->port = httpd_port(fx->h);
	fx->tick = event_new(fx->base, -1, EV_PERSIST, tick_cb, fx);
	fx->safety = evtimer_new(fx->base, safety_cb, fx);
	if (fx->port <= 0 || event_add(fx->tick, &tv) != 0)
		return (-1);
	*state = fx;
	return (0);
}

static int
teardown(void **state)
{
	struct fx	*fx = *state;

	if (fx->held != NULL)
		http_reply_json(fx->held, 200, NULL);
	httpd_free(fx->h);
	event_free(fx->tick);
	event_free(fx->safety);
	metrics_free(fx->metrics);
	event_base_free(fx->base);
	config_free(&fx->cfg);
	free(fx);
	return (0);
}

/* ---- tests ---------------------------------------------------------- */

static void
test_httpd_listens_on_ephemeral_port(void **state)
{
	struct fx	*fx = *state;

	assert_true(fx->port > 0 && fx->port < 65536);
	assert_int_equal(httpd_connections(fx->h), 0);
	assert_int_equal(httpd_inflight(fx->h), 0);
}

static void
test_httpd_listen_rejects_bad_address(void **state)
{
	struct fx	*fx = *state;
	struct httpd	*h = httpd_new(fx->base, &fx->cfg, fx->metrics);
	char		*cause = NULL;

	assert_int_equal(httpd_listen(h, "127.0.0.1", &cause), -1);
	assert_non_null(cause);
	free(cause);
	cause = NULL;
	/* The fixture's port is taken. */
	{
		char	 addr[64];

		snprintf(addr, sizeof addr, "127.0.0.1:%d", fx->port);
		assert_int_equal(httpd_listen(h, addr, &cause), -1);
		assert_non_null(cause);
		free(cause);
	}
	httpd_free(h);
}

static void
test_httpd_simple_get_json(void **state)
{
	struct fx	*fx = *state;
	struct job	*j;

	j = exchange(fx, "GET /hello HTTP/1.1\r\nHost: x\r\n"
	    "X-Test: yes\r\nConnection: close\r\n\r\n");
	assert_int_equal(j->status, 200);
	assert_non_null(j->json);
	assert_string_equal(job_header(j, "Content-Type"),
	    "application/json; charset=utf-8");
	assert_string_equal(json_str(j, "method"), "GET");
	assert_string_equal(json_str(j, "route"), "/hello");
	assert_string_equal(json_str(j, "h_test"), "yes");
	assert_string_equal(json_str(j, "peer"), "127.0.0.1");
	job_free(j);
}

static void
test_httpd_route_param_extracted(void **state)
{
	struct fx	*fx = *state;
	struct job	*j;

	j = exchange(fx, "GET /items/42/widget HTTP/1.1\r\nHost: x\r\n"
	    "Connection: close\r\n\r\n");
	assert_int_equal(j->status, 200);
	assert_string_equal(json_str(j, "route"), "/items/{id}/{kind}");
	assert_string_equal(json_str(j, "param_id"), "42");
	assert_string_equal(json_str(j, "param_kind"), "widget");
	job_free(j);
}

static void
test_httpd_route_param_percent_decoded(void **state)
{
	struct fx	*fx = *state;
	struct job	*j;

	/* %2F decodes inside the segment: it does not split the path. */
	j = exchange(fx, "GET /items/caf%%C3%%A9%%2Fx%%20y+z HTTP/1.1\r\n"
	    "Host: x\r\nConnection: close\r\n\r\n");
	assert_int_equal(j->status, 200);
	assert_string_equal(json_str(j, "route"), "/items/{id}");
	assert_string_equal(json_str(j, "param_id"), "caf\xc3\xa9/x y+z");
	/* http_req_path is the raw path. */
	assert_string_equal(json_str(j, "path"),
	    "/items/caf%C3%A9%2Fx%20y+z");
	job_free(j);
}

static void
test_httpd_route_param_with_nul_is_404(void **state)
{
	struct fx	*fx = *state;
	struct job	*j;

	j = exchange(fx, "GET /items/a%%00b HTTP/1.1\r\nHost: x\r\n"
	    "Connection: close\r\n\r\n");
	assert_error(j, 404, "not_found");
	assert_int_equal(fx->handled, 0);
	job_free(j);
}

static void
test_httpd_rest_param_takes_remainder(void **state)
{
	struct fx	*fx = *state;
	struct job	*j;

	j = exchange(fx, "GET /files/a/b%%20c/d.txt HTTP/1.1\r\nHost: x\r\n"
	    "Connection: close\r\n\r\n");
	assert_int_equal(j->status, 200);
	assert_string_equal(json_str(j, "route"), "/files/{*rest}");
	assert_string_equal(json_str(j, "param_rest"), "a/b c/d.txt");
	job_free(j);
}

static void
test_httpd_rest_param_may_be_empty(void **state)
{
	struct fx	*fx = *state;
	struct job	*j;

	j = exchange(fx, "GET /files HTTP/1.1\r\nHost: x\r\n"
	    "Connection: close\r\n\r\n");
	assert_int_equal(j->status, 200);
	assert_string_equal(json_str(j, "param_rest"), "");
	job_free(j);
}

static void
test_httpd_trailing_slash_matches(void **state)
{
	struct fx	*fx = *state;
	struct job	*j;

	j = exchange(fx, "GET /hello/ HTTP/1.1\r\nHost: x\r\n"
	    "Connection: close\r\n\r\n");
	assert_int_equal(j->status, 200);
	assert_string_equal(json_str(j, "route"), "/hello");
	job_free(j);
}

static void
test_httpd_unknown_path_404_json(void **state)
{
	struct fx	*fx = *state;
	struct job	*j;

	j = exchange(fx, "GET /no/such/thing HTTP/1.1\r\nHost: x\r\n"
	    "Connection: close\r\n\r\n");
	assert_error(j, 404, "not_found");
	assert_non_null(job_header(j, "X-Request-Id"));
	assert_int_equal(fx->handled, 0);
	assert_int_equal(metrics_get(fx->metrics,
	    "musubi_http_requests_total",
	    "route=\"unmatched\",method=\"GET\",code=\"404\""), 1);
	job_free(j);
}

static void
test_httpd_param_route_needs_exact_segment_count(void **state)
{
	struct fx	*fx = *state;
	struct job	*j;

	j = exchange(fx, "GET /items/1/2/3 HTTP/1.1\r\nHost: x\r\n"
	    "Connection: close\r\n\r\n");
	assert_error(j, 404, "not_found");
	job_free(j);
}

static void
test_httpd_wrong_method_405_with_allow(void **state)
{
	struct fx	*fx = *state;
	struct job	*j;

	j = exchange(fx, "DELETE /things HTTP/1.1\r\nHost: x\r\n"
	    "Connection: close\r\n\r\n");
	assert_error(j, 405, "method_not_allowed");
	assert_non_null(job_header(j, "Allow"));
	assert_string_equal(job_header(j, "Allow"), "GET, POST, HEAD");
	assert_int_equal(fx->handled, 0);
	job_free(j);
}

static void
test_httpd_wrong_method_on_param_route_405(void **state)
{
	struct fx	*fx = *state;
	struct job	*j;

	j = exchange(fx, "POST /items/7 HTTP/1.1\r\nHost: x\r\n"
	    "Content-Length: 0\r\nConnection: close\r\n\r\n");
	assert_error(j, 405, "method_not_allowed");
	assert_string_equal(job_header(j, "Allow"), "GET, HEAD");
	job_free(j);
}

static void
test_httpd_body_over_limit_413_json(void **state)
{
	struct fx	*fx = *state;
	struct job	*j;
	char		*body = malloc(MAX_BODY + 2);

	memset(body, 'x', MAX_BODY + 1);
	body[MAX_BODY + 1] = '\0';
	j = post(fx, "/json", body);
	assert_error(j, 413, "body_too_large");
	assert_int_equal(fx->handled, 0);
	job_free(j);
	free(body);
}

static void
test_httpd_body_at_limit_accepted(void **state)
{
	struct fx	*fx = *state;
	struct job	*j;
	char		*body = malloc(MAX_BODY + 1);

	/* A JSON object of exactly MAX_BODY bytes. */
	memset(body, ' ', MAX_BODY);
	body[0] = '{';
	body[MAX_BODY - 1] = '}';
	body[MAX_BODY] = '\0';
	j = post(fx, "/json", body);
	assert_int_equal(j->status, 200);
	job_free(j);
	free(body);
}

static void
test_httpd_route_limit_413(void **state)
{
	struct fx	*fx = *state;
	struct job	*j;

	j = post(fx, "/small", "01234567890123456");
	assert_error(j, 413, "body_too_large");
	job_free(j);
	j = post(fx, "/small", "0123456789012345");
	assert_int_equal(j->status, 200);
	assert_int_equal(json_integer_value(json_object_get(j->json, "len")),
	    SMALL_MAX);
	job_free(j);
}

static void
test_httpd_json_valid_object_parsed(void **state)
{
	struct fx	*fx = *state;
	struct job	*j;

	j = post(fx, "/json", "{\"a\": [1, \"\xe7\xb5\x90\"]}");
	assert_int_equal(j->status, 200);
	assert_non_null(j->json);
	assert_int_equal(json_integer_value(json_array_get(json_object_get(
	    json_object_get(j->json, "got"), "a"), 0)), 1);
	job_free(j);
}

static void
test_httpd_json_empty_body_400(void **state)
{
	struct fx	*fx = *state;
	struct job	*j;

	j = exchange(fx, "POST /json HTTP/1.1\r\nHost: x\r\n"
	    "Content-Length: 0\r\nConnection: close\r\n\r\n");
	assert_error(j, 400, "invalid_json");
	assert_non_null(strstr(error_message(j), "empty"));
	job_free(j);
}

static void
test_httpd_json_syntax_error_400_says_where(void **state)
{
	struct fx	*fx = *state;
	struct job	*j;
	const char	*body = "{\"slug\": \"a\",\n \"name\": }";

	j = post(fx, "/json", body);
	assert_error(j, 400, "invalid_json");
	if (strstr(error_message(j), "line 2, column") == NULL)
		fail_msg("message: %s", error_message(j));
	job_free(j);
}

static void
test_httpd_json_non_object_400(void **state)
{
	struct fx	*fx = *state;
	struct job	*j;

	j = post(fx, "/json", "[1, 2]");
	assert_error(j, 400, "invalid_json");
	assert_non_null(strstr(error_message(j), "JSON object"));
	job_free(j);
}

static void
test_httpd_json_duplicate_keys_400(void **state)
{
	struct fx	*fx = *state;
	struct job	*j;

	j = post(fx, "/json", "{\"a\":1, \"a\":2}");
	assert_error(j, 400, "invalid_json");
	job_free(j);
}

static void
test_httpd_deferred_reply_from_timer(void **state)
{
	struct fx	*fx = *state;
	struct job	*j;
	struct timespec	 t0, t1;
	long		 ms;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	j = exchange(fx, "GET /later HTTP/1.1\r\nHost: x\r\n"
	    "Connection: close\r\n\r\n");
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ms = (t1.tv_sec - t0.tv_sec) * 1000 +
	    (t1.tv_nsec - t0.tv_nsec) / 1000000;
	assert_int_equal(j->status, 200);
	assert_true(json_is_true(json_object_get(j->json, "deferred")));
	assert_true(ms >= LATER_MS - 10);
	assert_int_equal(httpd_inflight(fx->h), 0);
	job_free(j);
}

static void
test_httpd_inflight_counts_pending_request(void **state)
{
	struct fx	*fx = *state;
	struct job	*j;

	j = job_start(fx, -1, 0, "GET /hold HTTP/1.1\r\nHost: x\r\n"
	    "Connection: close\r\n\r\n");
	fx_run(fx, held, NULL);
	assert_int_equal(httpd_inflight(fx->h), 1);
	http_reply_json(fx->held, 202, json_pack("{s:s}", "ok", "late"));
	fx->held = NULL;
	job_wait(fx, j);
	assert_int_equal(j->status, 202);
	assert_int_equal(httpd_inflight(fx->h), 0);
	job_free(j);
}

static void
test_httpd_request_id_echoed(void **state)
{
	struct fx	*fx = *state;
	struct job	*j;

	j = exchange(fx, "GET /hello HTTP/1.1\r\nHost: x\r\n"
	    "X-Request-Id: abc-123_x.Y\r\nConnection: close\r\n\r\n");
	assert_int_equal(j->status, 200);
	assert_string_equal(job_header(j, "X-Request-Id"), "abc-123_x.Y");
	assert_string_equal(json_str(j, "id"), "abc-123_x.Y");
	job_free(j);
}

/* Assert a generated request id: 16 lowercase hex digits. */
static void
assert_generated_id(const char *id)
{
	size_t	 i;

	assert_non_null(id);
	assert_int_equal(strlen(id), 16);
	for (i = 0; i < 16; i++)
		assert_non_null(strchr("0123456789abcdef", id[i]));
}

static void
test_httpd_request_id_generated_when_absent(void **state)
{
	struct fx	*fx = *state;
	struct job	*j, *k;

	j = exchange(fx, "GET /hello HTTP/1.1\r\nHost: x\r\n"
	    "Connection: close\r\n\r\n");
	k = exchange(fx, "GET /hello HTTP/1.1\r\nHost: x\r\n"
	    "Connection: close\r\n\r\n");
	assert_generated_id(json_str(j, "id"));
	assert_generated_id(json_str(k, "id"));
	assert_string_not_equal(json_str(j, "id"), json_str(k, "id"));
	assert_string_equal(job_header(j, "X-Request-Id"), json_str(j, "id"));
	job_free(j);
	job_free(k);
}

static void
test_httpd_request_id_unsafe_replaced(void **state)
{
	struct fx	*fx = *state;
	struct job	*j;

	j = exchange(fx, "GET /hello HTTP/1.1\r\nHost: x\r\n"
	    "X-Request-Id: bad id;rm\r\nConnection: close\r\n\r\n");
	assert_generated_id(job_header(j, "X-Request-Id"));
	job_free(j);
	/* 33 characters: one too many. */
	j = exchange(fx, "GET /hello HTTP/1.1\r\nHost: x\r\n"
	    "X-Request-Id: 0123456789abcdef0123456789abcdef0\r\n"
	    "Connection: close\r\n\r\n");
	assert_generated_id(job_header(j, "X-Request-Id"));
	job_free(j);
}

static void
test_httpd_error_reply_carries_request_id(void **state)
{
	struct fx	*fx = *state;
	struct job	*j;

	j = exchange(fx, "GET /nope HTTP/1.1\r\nHost: x\r\n"
	    "X-Request-Id: err-1\r\nConnection: close\r\n\r\n");
	assert_error(j, 404, "not_found");
	assert_string_equal(job_header(j, "X-Request-Id"), "err-1");
	job_free(j);
}

static void
test_httpd_query_parameters_decoded(void **state)
{
	struct fx	*fx = *state;
	struct job	*j;

	j = exchange(fx, "GET /hello?name=a%%20b%%26c&x=1 HTTP/1.1\r\n"
	    "Host: x\r\nConnection: close\r\n\r\n");
	assert_int_equal(j->status, 200);
	assert_string_equal(json_str(j, "q_name"), "a b&c");
	assert_null(json_str(j, "q_absent"));
	assert_string_equal(json_str(j, "path"), "/hello");
	job_free(j);
}

static void
test_httpd_no_query_gives_null(void **state)
{
	struct fx	*fx = *state;
	struct job	*j;

	j = exchange(fx, "GET /hello HTTP/1.1\r\nHost: x\r\n"
	    "Connection: close\r\n\r\n");
	assert_null(json_str(j, "q_name"));
	job_free(j);
}

static void
test_httpd_malformed_query_400(void **state)
{
	struct fx	*fx = *state;
	struct job	*j;

	j = exchange(fx, "GET /hello?novalue HTTP/1.1\r\nHost: x\r\n"
	    "Connection: close\r\n\r\n");
	assert_error(j, 400, "bad_query");
	assert_int_equal(fx->handled, 0);
	job_free(j);
}

static void
test_httpd_head_gets_no_body(void **state)
{
	struct fx	*fx = *state;
	struct job	*j;

	j = exchange(fx, "HEAD /hello HTTP/1.1\r\nHost: x\r\n"
	    "Connection: close\r\n\r\n");
	assert_int_equal(j->status, 200);
	assert_int_equal(j->bodylen, 0);
	assert_non_null(job_header(j, "X-Request-Id"));
	assert_int_equal(fx->handled, 1);
	assert_int_equal(metrics_get(fx->metrics,
	    "musubi_http_requests_total",
	    "route=\"/hello\",method=\"HEAD\",code=\"200\""), 1);
	job_free(j);
}

static void
test_httpd_head_error_gets_no_body(void **state)
{
	struct fx	*fx = *state;
	struct job	*j;

	j = exchange(fx, "HEAD /nope HTTP/1.1\r\nHost: x\r\n"
	    "Connection: close\r\n\r\n");
	assert_int_equal(j->status, 404);
	assert_int_equal(j->bodylen, 0);
	job_free(j);
}

static void
test_httpd_raw_reply(void **state)
{
	struct fx	*fx = *state;
	struct job	*j;

	j = exchange(fx, "GET /raw HTTP/1.1\r\nHost: x\r\n"
	    "Connection: close\r\n\r\n");
	assert_int_equal(j->status, 200);
	assert_string_equal(job_header(j, "Content-Type"), "text/plain");
	assert_int_equal(j->bodylen, 11);
	assert_memory_equal(j->body, "plain text\n", 11);
	job_free(j);
}

static void
test_httpd_reply_counts_metrics(void **state)
{
	struct fx	*fx = *state;
	struct job	*j;
	struct evbuffer	*buf;

	job_free(exchange(fx, "GET /items/1 HTTP/1.1\r\nHost: x\r\n"
	    "Connection: close\r\n\r\n"));
	job_free(exchange(fx, "GET /items/2 HTTP/1.1\r\nHost: x\r\n"
	    "Connection: close\r\n\r\n"));
	j = exchange(fx, "PUT /items/2 HTTP/1.1\r\nHost: x\r\n"
	    "Content-Length: 0\r\nConnection: close\r\n\r\n");
	job_free(j);
	/* Labelled by the route pattern, never by the raw path. */
	assert_int_equal(metrics_get(fx->metrics,
	    "musubi_http_requests_total",
	    "route=\"/items/{id}\",method=\"GET\",code=\"200\""), 2);
	assert_int_equal(metrics_get(fx->metrics,
	    "musubi_http_requests_total",
	    "route=\"unmatched\",method=\"PUT\",code=\"405\""), 1);
	assert_int_equal(metrics_get(fx->metrics,
	    "musubi_http_request_duration_seconds",
	    "route=\"/items/{id}\""), 2);
	buf = evbuffer_new();
	metrics_render(fx->metrics, buf);
	assert_true(evbuffer_get_length(buf) > 0);
	evbuffer_free(buf);
}

static void
test_httpd_abort_pending_answers_503(void **state)
{
	struct fx	*fx = *state;
	struct job	*j;
	struct http_req	*req;

	j = job_start(fx, -1, 0, "GET /hold HTTP/1.1\r\nHost: x\r\n"
	    "X-Request-Id: held-1\r\n\r\n");
	fx_run(fx, held, NULL);
	req = fx->held;
	httpd_abort_pending(fx->h);
	job_wait(fx, j);
	assert_error(j, 503, "shutting_down");
	assert_string_equal(job_header(j, "Connection"), "close");
	assert_string_equal(job_header(j, "X-Request-Id"), "held-1");
	assert_int_equal(httpd_inflight(fx->h), 0);
	/*
	 * The handler finishes later: its reply must only free the wrapper.
	 * The request is still readable until then, minus the libevent side.
	 */
	assert_string_equal(http_req_id(req), "held-1");
	assert_null(http_req_header(req, "Host"));
	http_reply_header(req, "X-Late", "1");
	http_reply_error(req, 500, "late", NULL, "too late");
	fx->held = NULL;
	assert_int_equal(metrics_get(fx->metrics,
	    "musubi_http_requests_total",
	    "route=\"/hold\",method=\"GET\",code=\"503\""), 1);
	assert_int_equal(metrics_get(fx->metrics,
	    "musubi_http_requests_total",
	    "route=\"/hold\",method=\"GET\",code=\"500\""), 0);
	fx_run_for(fx, 20);
	job_free(j);
}

static void
test_httpd_abort_pending_then_free_releases_zombie(void **state)
{
	struct fx	*fx = *state;
	struct job	*j;

	j = job_start(fx, -1, 0, "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n");
	fx_run(fx, held, NULL);
	httpd_abort_pending(fx->h);
	job_wait(fx, j);
	assert_int_equal(j->status, 503);
	/* No late reply: httpd_free (in teardown) must free the wrapper. */
	fx->held = NULL;
	job_free(j);
}

static void
test_httpd_abort_pending_with_nothing_pending(void **state)
{
	struct fx	*fx = *state;

	httpd_abort_pending(fx->h);
	assert_int_equal(httpd_inflight(fx->h), 0);
}

static void
test_httpd_stop_refuses_new_and_answers_keepalive_503(void **state)
{
	struct fx	*fx = *state;
	struct job	*j, *k;
	int		 fd;

	j = job_start(fx, -1, 1, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
	job_wait(fx, j);
	assert_int_equal(j->status, 200);
	fd = j->fd;
	j->fd = -1;
	httpd_stop(fx->h);
	k = job_start(fx, fd, 0, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
	job_wait(fx, k);
	assert_error(k, 503, "shutting_down");
	assert_string_equal(job_header(k, "Connection"), "close");
	job_free(k);
	/* The listener is gone. */
	k = job_start(fx, -1, 0, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
	job_wait(fx, k);
	assert_true(k->connect_failed);
	job_free(k);
	job_free(j);
}

static void
test_httpd_inflight_limit_503(void **state)
{
	struct fx	*fx = *state;
	struct job	*j, *k;

	fx->cfg.http_max_inflight = 1;
	httpd_configure(fx->h, &fx->cfg);
	j = job_start(fx, -1, 0, "GET /hold HTTP/1.1\r\nHost: x\r\n"
	    "Connection: close\r\n\r\n");
	fx_run(fx, held, NULL);
	k = exchange(fx, "GET /hello HTTP/1.1\r\nHost: x\r\n"
	    "Connection: close\r\n\r\n");
	assert_error(k, 503, "overloaded");
	assert_string_equal(job_header(k, "Retry-After"), "1");
	job_free(k);
	http_reply_json(fx->held, 200, NULL);
	fx->held = NULL;
	job_wait(fx, j);
	assert_int_equal(j->status, 200);
	job_free(j);
	k = exchange(fx, "GET /hello HTTP/1.1\r\nHost: x\r\n"
	    "Connection: close\r\n\r\n");
	assert_int_equal(k->status, 200);
	job_free(k);
}

static void
test_httpd_connection_limit_503(void **state)
{
	struct fx	*fx = *state;
	struct job	*a, *b;
	size_t		 want;

	fx->cfg.http_max_connections = 1;
	httpd_configure(fx->h, &fx->cfg);
	a = job_start(fx, -1, 1, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
	job_wait(fx, a);
	assert_int_equal(a->status, 200);
	b = exchange(fx, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
	assert_error(b, 503, "too_many_connections");
	assert_string_equal(job_header(b, "Connection"), "close");
	job_free(b);
	want = 1;
	fx_run(fx, conns_are, &want);
	job_free(a);
	want = 0;
	fx_run(fx, conns_are, &want);
}

static void
test_httpd_connections_return_to_zero(void **state)
{
	struct fx	*fx = *state;
	struct job	*j[3];
	size_t		 want;
	int		 i;

	for (i = 0; i < 3; i++) {
		j[i] = job_start(fx, -1, 1, "GET /hello HTTP/1.1\r\n"
		    "Host: x\r\n\r\n");
		job_wait(fx, j[i]);
		assert_int_equal(j[i]->status, 200);
	}
	assert_int_equal(httpd_connections(fx->h), 3);
	/* A second request on a kept-alive connection is not counted twice. */
	{
		struct job	*k;

		k = job_start(fx, j[0]->fd, 1, "GET /hello HTTP/1.1\r\n"
		    "Host: x\r\n\r\n");
		job_wait(fx, k);
		assert_int_equal(k->status, 200);
		k->fd = -1;
		job_free(k);
	}
	assert_int_equal(httpd_connections(fx->h), 3);
	for (i = 0; i < 3; i++)
		job_free(j[i]);		/* closes the client socket */
	want = 0;
	fx_run(fx, conns_are, &want);
	assert_int_equal(httpd_inflight(fx->h), 0);
}

static void
test_httpd_idle_connection_times_out(void **state)
{
	struct fx	*fx = *state;
	struct job	*j;
	size_t		 want = 0;

	fx->cfg.http_timeout = 200;
	httpd_configure(fx->h, &fx->cfg);
	j = job_start(fx, -1, 1, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
	job_wait(fx, j);
	assert_int_equal(j->status, 200);
	assert_int_equal(httpd_connections(fx->h), 1);
	/* The client keeps its socket open but says nothing more. */
	fx_run(fx, conns_are, &want);
	job_free(j);
}

static void
test_httpd_client_gone_before_deferred_reply(void **state)
{
	struct fx	*fx = *state;
	struct job	*j;
	size_t		 want = 0;

	/* The client sends and hangs up at once; the reply comes later. */
	j = job_start(fx, -1, 1, "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n");
	fx_run(fx, held, NULL);
	shutdown(j->fd, SHUT_RDWR);
	fx_run_for(fx, 50);
	http_reply_json(fx->held, 200, json_pack("{s:s}", "to", "nobody"));
	fx->held = NULL;
	job_wait(fx, j);
	fx_run(fx, conns_are, &want);
	assert_int_equal(httpd_inflight(fx->h), 0);
	job_free(j);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
		T(test_httpd_listens_on_ephemeral_port),
		T(test_httpd_listen_rejects_bad_address),
		T(test_httpd_simple_get_json),
		T(test_httpd_route_param_extracted),
		T(test_httpd_route_param_percent_decoded),
		T(test_httpd_route_param_with_nul_is_404),
		T(test_httpd_rest_param_takes_remainder),
		T(test_httpd_rest_param_may_be_empty),
		T(test_httpd_trailing_slash_matches),
		T(test_httpd_unknown_path_404_json),
		T(test_httpd_param_route_needs_exact_segment_count),
		T(test_httpd_wrong_method_405_with_allow),
		T(test_httpd_wrong_method_on_param_route_405),
		T(test_httpd_body_over_limit_413_json),
		T(test_httpd_body_at_limit_accepted),
		T(test_httpd_route_limit_413),
		T(test_httpd_json_valid_object_parsed),
		T(test_httpd_json_empty_body_400),
		T(test_httpd_json_syntax_error_400_says_where),
		T(test_httpd_json_non_object_400),
		T(test_httpd_json_duplicate_keys_400),
		T(test_httpd_deferred_reply_from_timer),
		T(test_httpd_inflight_counts_pending_request),
		T(test_httpd_request_id_echoed),
		T(test_httpd_request_id_generated_when_absent),
		T(test_httpd_request_id_unsafe_replaced),
		T(test_httpd_error_reply_carries_request_id),
		T(test_httpd_query_parameters_decoded),
		T(test_httpd_no_query_gives_null),
		T(test_httpd_malformed_query_400),
		T(test_httpd_head_gets_no_body),
		T(test_httpd_head_error_gets_no_body),
		T(test_httpd_raw_reply),
		T(test_httpd_reply_counts_metrics),
		T(test_httpd_abort_pending_answers_503),
		T(test_httpd_abort_pending_then_free_releases_zombie),
		T(test_httpd_abort_pending_with_nothing_pending),
		T(test_httpd_stop_refuses_new_and_answers_keepalive_503),
		T(test_httpd_inflight_limit_503),
		T(test_httpd_connection_limit_503),
		T(test_httpd_connections_return_to_zero),
		T(test_httpd_idle_connection_times_out),
		T(test_httpd_client_gone_before_deferred_reply),
#undef T
	};
	const struct config_key_info	*k;
	size_t				 n, i, c;
	char				 env[128];

	/* Defaults only: no MUSUBI_<KEY> from the caller's environment. */
	k = config_key_info(&n);
	for (i = 0; i < n; i++) {
		snprintf(env, sizeof env, "MUSUBI_%s", k[i].name);
		for (c = 7; env[c] != '\0'; c++)
			env[c] = (char)toupper((unsigned char)env[c]);
		unsetenv(env);
	}
	signal(SIGPIPE, SIG_IGN);
	log_set_level(LOG_LEVEL_ERROR);
	return (cmocka_run_group_tests(tests, NULL, NULL));
}
