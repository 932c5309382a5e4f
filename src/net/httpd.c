/* SPDX-License-Identifier: ISC */
/*
 * httpd.c -- the HTTP front door.  evhttp parses requests; everything after
 * that is ours: one generic callback (httpd_request_cb) wraps each request in
 * a struct http_req, applies the limits, routes it and hands it to a handler.
 * Replies go through http_reply_*(), which add the request id, write the
 * access-log line, count metrics and free the wrapper.
 *
 * evhttp 2.1 has no connection limit or close hook for server connections,
 * so connections are tracked here: the first request seen on a connection
 * puts it in a pointer set and sets its close callback, which removes it.
 * Bodies larger than the configured limit get a JSON 413 from us; evhttp's
 * own hard cap (four times the limit) answers a plain 413 for anything
 * larger without buffering it.
 */
#include <sys/socket.h>
#include <sys/types.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/util.h>

#include "musubi/config.h"
#include "musubi/crypto.h"
#include "musubi/httpd.h"
#include "musubi/log.h"
#include "musubi/metrics.h"
#include "musubi/xmalloc.h"

#define HTTPD_MAX_SEGMENTS	16
#define HTTPD_MAX_PARAMS	8

struct httpd_route {
	int			 methods;
	char			*pattern;
	char			*segs[HTTPD_MAX_SEGMENTS];
	int			 nsegs;
	int			 rest;		/* last segment is {*name} */
	size_t			 max_body;
	http_handler		*handler;
	void			*arg;
	char			*label;		/* escaped, for metrics */
};

struct http_req {
	struct httpd		*httpd;
	struct evhttp_request	*req;
	char			 id[33];
	int			 method;
	char			*path;		/* decoded path */
	struct evkeyvalq	 query;
	int			 has_query;
	const struct httpd_route *route;
	char			*pnames[HTTPD_MAX_PARAMS];
	char			*pvalues[HTTPD_MAX_PARAMS];
	int			 nparams;
	char			 peer[64];
	struct timespec		 start;
	void			*data;
	void			(*datafree)(void *);
	int			 aborting;	/* answered by httpd_abort_pending */
	int			 aborted;	/* req is gone; handler not done */
	struct http_req		*prev, *next;	/* pending or zombie list */
};

struct httpd {
	struct event_base	*base;
	struct evhttp		*http;
	struct metrics		*metrics;
	struct httpd_route	*routes;
	size_t			 nroutes;
	struct evhttp_bound_socket *bound;
	int			 port;
	size_t			 max_body;
	size_t			 max_route_body;	/* largest route limit */
	int			 max_connections;
	int			 max_inflight;
	int			 stopping;
	size_t			 inflight;
	struct http_req		*pending;	/* requests not yet answered */
	struct http_req		*zombies;	/* aborted, handler still busy */

	/* Open connections: an open-addressing set of evcon pointers. */
	struct evhttp_connection **conns;
	size_t			 conncap;
	size_t			 nconns;
};

static void	httpd_request_cb(struct evhttp_request *, void *);
static void	httpd_conn_close_cb(struct evhttp_connection *, void *);
static void	httpd_req_free(struct http_req *);
static void	httpd_unlink(struct http_req **, struct http_req *);

/* Hash a pointer for the connection set. */
static size_t
httpd_ptrhash(const void *p, size_t cap)
{
	uintptr_t	 v = (uintptr_t)p;

	v ^= v >> 17;
	v *= 0xed5ad4bbu;
	v ^= v >> 11;
	return ((size_t)v & (cap - 1));
}

/* Find a connection's slot, or the empty slot where it would go. */
static size_t
httpd_conn_slot(const struct httpd *h, const struct evhttp_connection *c)
{
	size_t	 i = httpd_ptrhash(c, h->conncap);

	while (h->conns[i] != NULL && h->conns[i] != c)
		i = (i + 1) & (h->conncap - 1);
	return (i);
}

/* Insert into the connection set, growing it as needed. */
static void
httpd_conn_insert(struct httpd *h, struct evhttp_connection *c)
{
	struct evhttp_connection	**old = h->conns;
	size_t				  oldcap = h->conncap, i;

	if ((h->nconns + 1) * 2 > h->conncap) {
		h->conncap = oldcap ? oldcap * 2 : 256;
		h->conns = xcalloc(h->conncap, sizeof *h->conns);
		for (i = 0; i < oldcap; i++) {
			if (old[i] != NULL)
				h->conns[httpd_conn_slot(h, old[i])] = old[i];
		}
		free(old);
	}
	h->conns[httpd_conn_slot(h, c)] = c;
	h->nconns++;
}

/* Remove from the connection set (backward-shift deletion). */
static void
httpd_conn_remove(struct httpd *h, struct evhttp_connection *c)
{
	size_t	 i, j, k;

	if (h->conncap == 0)
		return;
	i = httpd_conn_slot(h, c);
	if (h->conns[i] == NULL)
		return;
	h->conns[i] = NULL;
	h->nconns--;
	j = i;
	for (;;) {
		j = (j + 1) & (h->conncap - 1);
		if (h->conns[j] == NULL)
			break;
		k = httpd_ptrhash(h->conns[j], h->conncap);
		if ((j > i && (k <= i || k > j)) ||
		    (j < i && (k <= i && k > j))) {
			h->conns[i] = h->conns[j];
			h->conns[j] = NULL;
			i = j;
		}
	}
}

/* A client connection closed. */
static void
httpd_conn_close_cb(struct evhttp_connection *evcon, void *arg)
{
	httpd_conn_remove(arg, evcon);
}

/* Create the server; call httpd_listen() to bind. */
struct httpd *
httpd_new(struct event_base *base, const struct config *cfg,
    struct metrics *metrics)
{
	struct httpd	*h = xcalloc(1, sizeof *h);

	h->base = base;
	h->metrics = metrics;
	if ((h->http = evhttp_new(base)) == NULL)
		fatalx("httpd: evhttp_new failed");
	evhttp_set_allowed_methods(h->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST |
	    EVHTTP_REQ_PUT | EVHTTP_REQ_PATCH | EVHTTP_REQ_DELETE |
	    EVHTTP_REQ_HEAD | EVHTTP_REQ_OPTIONS);
	evhttp_set_gencb(h->http, httpd_request_cb, h);
	httpd_configure(h, cfg);
	metrics_describe(metrics, "musubi_http_requests_total", "counter",
	    "HTTP requests answered, by route, method and status code.");
	metrics_describe(metrics, "musubi_http_request_duration_seconds",
	    "histogram", "Time from request to reply, by route.");
	return (h);
}

/* Apply limits from the config. */
void
httpd_configure(struct httpd *h, const struct config *cfg)
{
	struct timeval	 tv;

	h->max_body = (size_t)cfg->http_max_body;
	h->max_connections = cfg->http_max_connections;
	h->max_inflight = cfg->http_max_inflight;
	evhttp_set_max_body_size(h->http, (ev_ssize_t)(h->max_body * 4 >
	    h->max_route_body ? h->max_body * 4 : h->max_route_body));
	evhttp_set_max_headers_size(h->http, (ev_ssize_t)cfg->http_max_headers);
	tv.tv_sec = cfg->http_timeout / 1000;
	tv.tv_usec = (cfg->http_timeout % 1000) * 1000;
	evhttp_set_timeout_tv(h->http, &tv);
}

/* Free the server; every request must have been answered. */
void
httpd_free(struct httpd *h)
{
	size_t	 i;
	int	 j;

	if (h == NULL)
		return;
	httpd_abort_pending(h);
	h->stopping = 1;
	while (h->zombies != NULL) {
		struct http_req	*hr = h->zombies;

		httpd_unlink(&h->zombies, hr);
		httpd_req_free(hr);
	}
	evhttp_free(h->http);
	for (i = 0; i < h->nroutes; i++) {
		for (j = 0; j < h->routes[i].nsegs; j++)
			free(h->routes[i].segs[j]);
		free(h->routes[i].pattern);
		free(h->routes[i].label);
	}
	free(h->routes);
	free(h->conns);
	free(h);
}

/* Bind a listening socket. */
int
httpd_listen(struct httpd *h, const char *hostport, char **cause)
{
	char			*host = NULL;
	int			 port;
	struct sockaddr_storage	 ss;
	socklen_t		 sl = sizeof ss;
	evutil_socket_t		 fd;

	if (config_split_hostport(hostport, &host, &port, cause) != 0)
		return (-1);
	h->bound = evhttp_bind_socket_with_handle(h->http, host,
	    (ev_uint16_t)port);
	if (h->bound == NULL) {
		xsetcause(cause, "cannot listen on %s", hostport);
		free(host);
		return (-1);
	}
	free(host);
	fd = evhttp_bound_socket_get_fd(h->bound);
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
		if (ss.ss_family == AF_INET)
			h->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
		else if (ss.ss_family == AF_INET6)
			h->port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	}
	return (0);
}

/* Return the bound port. */
int
httpd_port(const struct httpd *h)
{
	return (h->port);
}

/* Add a route with the default body limit. */
void
httpd_route(struct httpd *h, int methods, const char *pattern,
    http_handler *handler, void *arg)
{
	httpd_route_limit(h, methods, pattern, 0, handler, arg);
}

/* Add a route. */
void
httpd_route_limit(struct httpd *h, int methods, const char *pattern,
    size_t max_body, http_handler *handler, void *arg)
{
	struct httpd_route	*r;
	char			*copy, *p, *seg;

	h->routes = xreallocarray(h->routes, h->nroutes + 1, sizeof *r);
	r = &h->routes[h->nroutes++];
	memset(r, 0, sizeof *r);
	r->methods = methods;
	r->pattern = xstrdup(pattern);
	r->max_body = max_body;
	if (max_body > h->max_route_body) {
		h->max_route_body = max_body;
		if (max_body > h->max_body * 4)
			evhttp_set_max_body_size(h->http,
			    (ev_ssize_t)max_body);
	}
	r->handler = handler;
	r->arg = arg;
	r->label = metrics_escape(pattern);
	copy = xstrdup(pattern);
	for (p = copy; (seg = strsep(&p, "/")) != NULL;) {
		if (*seg == '\0')
			continue;
		if (r->nsegs == HTTPD_MAX_SEGMENTS)
			fatalx("httpd: route %s: too many segments", pattern);
		if (strncmp(seg, "{*", 2) == 0)
			r->rest = 1;
		r->segs[r->nsegs++] = xstrdup(seg);
	}
	free(copy);
}

/* Map an evhttp command to our method bit. */
static int
httpd_method(enum evhttp_cmd_type cmd)
{
	switch (cmd) {
	case EVHTTP_REQ_GET:
		return (HTTP_GET);
	case EVHTTP_REQ_POST:
		return (HTTP_POST);
	case EVHTTP_REQ_PUT:
		return (HTTP_PUT);
	case EVHTTP_REQ_PATCH:
		return (HTTP_PATCH);
	case EVHTTP_REQ_DELETE:
		return (HTTP_DELETE);
	case EVHTTP_REQ_HEAD:
		return (HTTP_HEAD);
	default:
		return (0);
	}
}

/* Name a method bit. */
static const char *
httpd_method_name(int m)
{
	switch (m) {
	case HTTP_GET:
		return ("GET");
	case HTTP_POST:
		return ("POST");
	case HTTP_PUT:
		return ("PUT");
	case HTTP_PATCH:
		return ("PATCH");
	case HTTP_DELETE:
		return ("DELETE");
	case HTTP_HEAD:
		return ("HEAD");
	default:
		return ("OTHER");
	}
}

/* Tell whether a buffer is well-formed UTF-8 (no overlongs, surrogates). */
static int
httpd_utf8_ok(const unsigned char *s, size_t n)
{
	size_t		 i = 0, k, need;
	unsigned int	 cp, min;

	while (i < n) {
		if (s[i] < 0x80) {
			i++;
			continue;
		}
		if ((s[i] & 0xe0) == 0xc0) {
			need = 1;
			cp = s[i] & 0x1f;
			min = 0x80;
		} else if ((s[i] & 0xf0) == 0xe0) {
			need = 2;
			cp = s[i] & 0x0f;
			min = 0x800;
		} else if ((s[i] & 0xf8) == 0xf0) {
			need = 3;
			cp = s[i] & 0x07;
			min = 0x10000;
		} else
			return (0);
		for (k = 1; k <= need; k++) {
			if (i + k >= n || (s[i + k] & 0xc0) != 0x80)
				return (0);
			cp = (cp << 6) | (s[i + k] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return (0);
		i += need + 1;
	}
	return (1);
}

/* Decode one path segment; NULL if it holds a NUL, bad UTF-8 or junk. */
static char *
httpd_decode(const char *s, size_t len)
{
	char	*raw = xstrndup(s, len), *out;
	size_t	 outlen;

	out = evhttp_uridecode(raw, 0, &outlen);
	free(raw);
	if (out == NULL)
		return (NULL);
	if (strlen(out) != outlen ||
	    !httpd_utf8_ok((const unsigned char *)out, outlen)) {
		free(out);
		return (NULL);
	}
	return (out);
}

/* Try to match a route; fills params on success. */
static int
httpd_match(struct http_req *hr, const struct httpd_route *r, char **segs,
    int nsegs)
{
	int	 i;

	if (r->rest ? nsegs < r->nsegs - 1 : nsegs != r->nsegs)
		return (0);
	for (i = 0; i < r->nsegs; i++) {
		if (r->segs[i][0] == '{')
			continue;
		if (strcmp(r->segs[i], segs[i]) != 0)
			return (0);
	}
	hr->nparams = 0;
	for (i = 0; i < r->nsegs && hr->nparams < HTTPD_MAX_PARAMS; i++) {
		size_t	 n = strlen(r->segs[i]);

		if (r->segs[i][0] != '{')
			continue;
		if (r->segs[i][1] == '*') {
			/* The rest of the path, joined with '/'. */
			char	*rest = xstrdup(i < nsegs ? segs[i] : ""), *t;
			int	 j;

			for (j = i + 1; j < nsegs; j++) {
				xasprintf(&t, "%s/%s", rest, segs[j]);
				free(rest);
				rest = t;
			}
			hr->pnames[hr->nparams] = xstrndup(r->segs[i] + 2,
			    n - 3);
			hr->pvalues[hr->nparams++] = rest;
			break;
		}
		hr->pnames[hr->nparams] = xstrndup(r->segs[i] + 1, n - 2);
		hr->pvalues[hr->nparams++] = xstrdup(segs[i]);
	}
	return (1);
}

/* Pick a request id: the client's if sane, else a random one. */
static void
httpd_request_id(struct http_req *hr)
{
	const char	*v = http_req_header(hr, "X-Request-Id");
	unsigned char	 b[8];
	size_t		 i, n;

	if (v != NULL && (n = strlen(v)) > 0 && n < sizeof hr->id) {
		for (i = 0; i < n; i++) {
			if (!isalnum((unsigned char)v[i]) && v[i] != '-' &&
			    v[i] != '_' && v[i] != '.')
				break;
		}
		if (i == n) {
			memcpy(hr->id, v, n + 1);
			return;
		}
	}
	crypto_random(b, sizeof b);
	crypto_hex(b, sizeof b, hr->id);
}

/* Free a request wrapper. */
static void
httpd_req_free(struct http_req *hr)
{
	int	 i;

	for (i = 0; i < hr->nparams; i++) {
		free(hr->pnames[i]);
		free(hr->pvalues[i]);
	}
	if (hr->has_query)
		evhttp_clear_headers(&hr->query);
	if (hr->datafree != NULL && hr->data != NULL)
		hr->datafree(hr->data);
	free(hr->path);
	free(hr);
}

/* The generic callback: wrap, check, route. */
static void
httpd_request_cb(struct evhttp_request *req, void *arg)
{
	struct httpd			*h = arg;
	struct http_req			*hr;
	const struct evhttp_uri		*uri;
	struct evhttp_connection	*evcon;
	const char			*rawpath, *q, *host;
	char				*segs[HTTPD_MAX_SEGMENTS + 1];
	char				*copy = NULL, *p, *seg;
	int				 nsegs = 0, allowed = 0, i, bad = 0;
	size_t				 k, len;
	ev_uint16_t			 port;

	hr = xcalloc(1, sizeof *hr);
	hr->httpd = h;
	hr->req = req;
	clock_gettime(CLOCK_MONOTONIC, &hr->start);
	hr->method = httpd_method(evhttp_request_get_command(req));
	httpd_request_id(hr);
	hr->next = h->pending;
	if (h->pending != NULL)
		h->pending->prev = hr;
	h->pending = hr;
	h->inflight++;

	evcon = evhttp_request_get_connection(req);
	if (evcon != NULL) {
		evhttp_connection_get_peer(evcon, (char **)&host, &port);
		snprintf(hr->peer, sizeof hr->peer, "%s", host ? host : "-");
		if (h->conncap == 0 ||
		    h->conns[httpd_conn_slot(h, evcon)] == NULL) {
			httpd_conn_insert(h, evcon);
			evhttp_connection_set_closecb(evcon,
			    httpd_conn_close_cb, h);
		}
	}

	uri = evhttp_request_get_evhttp_uri(req);
	rawpath = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
	if (rawpath == NULL || *rawpath == '\0')
		rawpath = "/";
	hr->path = xstrdup(rawpath);
	if (h->stopping) {
		http_reply_header(hr, "Connection", "close");
		http_reply_error(hr, 503, "shutting_down", NULL,
		    "server is shutting down; retry");
		return;
	}
	if (h->nconns > (size_t)h->max_connections) {
		http_reply_header(hr, "Connection", "close");
		http_reply_error(hr, 503, "too_many_connections", NULL,
		    "too many open connections; retry later");
		return;
	}
	if (h->inflight > (size_t)h->max_inflight) {
		http_reply_header(hr, "Retry-After", "1");
		http_reply_error(hr, 503, "overloaded", NULL,
		    "too many requests in flight; retry later");
		return;
	}
	if (hr->method == 0) {
		http_reply_error(hr, 405, "method_not_allowed", NULL,
		    "method not allowed");
		return;
	}
	if (uri != NULL && (q = evhttp_uri_get_query(uri)) != NULL) {
		if (evhttp_parse_query_str(q, &hr->query) != 0) {
			evhttp_clear_headers(&hr->query);
			http_reply_error(hr, 400, "bad_query", NULL,
			    "malformed query string");
			return;
		}
		hr->has_query = 1;
	}

	copy = xstrdup(rawpath);
	for (p = copy; (seg = strsep(&p, "/")) != NULL;) {
		if (*seg == '\0')
			continue;
		if (nsegs == HTTPD_MAX_SEGMENTS) {
			bad = 1;
			break;
		}
		if ((segs[nsegs] = httpd_decode(seg, strlen(seg))) == NULL) {
			bad = 1;
			break;
		}
		nsegs++;
	}
	free(copy);
	if (bad) {
		for (i = 0; i < nsegs; i++)
			free(segs[i]);
		http_reply_error(hr, 404, "not_found", NULL, "no such resource");
		return;
	}

	for (k = 0; k < h->nroutes; k++) {
		const struct httpd_route *r = &h->routes[k];
		int	 m = hr->method == HTTP_HEAD ? HTTP_GET : hr->method;

		if (!httpd_match(hr, r, segs, nsegs))
			continue;
		if (!(r->methods & m)) {
			allowed |= r->methods;
			if (r->methods & HTTP_GET)
				allowed |= HTTP_HEAD;
			for (i = 0; i < hr->nparams; i++) {
				free(hr->pnames[i]);
				free(hr->pvalues[i]);
			}
			hr->nparams = 0;
			continue;
		}
		hr->route = r;
		break;
	}
	for (i = 0; i < nsegs; i++)
		free(segs[i]);

	if (hr->route == NULL) {
		if (allowed) {
			char	 allow[64] = "";
			size_t	 n = 0;
			int	 b;

			for (b = HTTP_GET; b <= HTTP_HEAD; b <<= 1) {
				if (!(allowed & b) || n >= sizeof allow)
					continue;
				n += (size_t)snprintf(allow + n,
				    sizeof allow - n, "%s%s", n ? ", " : "",
				    httpd_method_name(b));
			}
			http_reply_header(hr, "Allow", allow);
			http_reply_error(hr, 405, "method_not_allowed", NULL,
			    "%s is not allowed here (allowed: %s)",
			    httpd_method_name(hr->method), allow);
		} else
			http_reply_error(hr, 404, "not_found", NULL,
			    "no such resource");
		return;
	}
	len = evbuffer_get_length(evhttp_request_get_input_buffer(req));
	if (len > (hr->route->max_body ? hr->route->max_body : h->max_body)) {
		http_reply_header(hr, "Connection", "close");
		http_reply_error(hr, 413, "body_too_large", NULL,
		    "request body of %zu bytes is over the limit of %zu", len,
		    hr->route->max_body ? hr->route->max_body : h->max_body);
		return;
	}
	hr->route->handler(hr, hr->route->arg);
}

/* Stop accepting new connections. */
void
httpd_stop(struct httpd *h)
{
	h->stopping = 1;
	if (h->bound != NULL) {
		evhttp_del_accept_socket(h->http, h->bound);
		h->bound = NULL;
	}
}

/* Answer every waiting request with 503. */
void
httpd_abort_pending(struct httpd *h)
{
	struct http_req	*hr;

	while ((hr = h->pending) != NULL) {
		hr->aborting = 1;
		http_reply_header(hr, "Connection", "close");
		http_reply_error(hr, 503, "shutting_down", NULL,
		    "server shut down before this request completed; retry");
	}
}

/* Count requests in flight. */
size_t
httpd_inflight(const struct httpd *h)
{
	return (h->inflight);
}

/* Count open connections. */
size_t
httpd_connections(const struct httpd *h)
{
	return (h->nconns);
}

/* Return the request id. */
const char *
http_req_id(const struct http_req *hr)
{
	return (hr->id);
}

/* Return the method bit. */
int
http_req_method(const struct http_req *hr)
{
	return (hr->method);
}

/* Return the method name. */
const char *
http_req_method_name(const struct http_req *hr)
{
	return (httpd_method_name(hr->method));
}

/* Return the raw path. */
const char *
http_req_path(const struct http_req *hr)
{
	return (hr->path);
}

/* Return a path parameter. */
const char *
http_req_param(const struct http_req *hr, const char *name)
{
	int	 i;

	for (i = 0; i < hr->nparams; i++) {
		if (strcmp(hr->pnames[i], name) == 0)
			return (hr->pvalues[i]);
	}
	return (NULL);
}

/* Return a query parameter. */
const char *
http_req_query(const struct http_req *hr, const char *name)
{
	if (!hr->has_query)
		return (NULL);
	return (evhttp_find_header(&hr->query, name));
}

/* Return a request header. */
const char *
http_req_header(const struct http_req *hr, const char *name)
{
	if (hr->req == NULL)
		return (NULL);
	return (evhttp_find_header(evhttp_request_get_input_headers(hr->req),
	    name));
}

/* Return the body bytes. */
const unsigned char *
http_req_body(struct http_req *hr, size_t *len)
{
	struct evbuffer	*in;

	*len = 0;
	if (hr->req == NULL)
		return (NULL);
	in = evhttp_request_get_input_buffer(hr->req);
	*len = evbuffer_get_length(in);
	if (*len == 0)
		return (NULL);
	return (evbuffer_pullup(in, (ev_ssize_t)*len));
}

/* Return the peer address. */
const char *
http_req_peer(const struct http_req *hr)
{
	return (hr->peer);
}

/* Parse the body as a JSON object or reply 400. */
json_t *
http_req_json(struct http_req *hr)
{
	const unsigned char	*body;
	size_t			 len;
	json_t			*j;
	json_error_t		 err;

	body = http_req_body(hr, &len);
	if (body == NULL) {
		http_reply_error(hr, 400, "invalid_json", NULL,
		    "request body is empty; a JSON object is required");
		return (NULL);
	}
	j = json_loadb((const char *)body, len, JSON_REJECT_DUPLICATES, &err);
	if (j == NULL) {
		http_reply_error(hr, 400, "invalid_json", NULL,
		    "invalid JSON at line %d, column %d: %s", err.line,
		    err.column, err.text);
		return (NULL);
	}
	if (!json_is_object(j)) {
		json_decref(j);
		http_reply_error(hr, 400, "invalid_json", NULL,
		    "the request body must be a JSON object");
		return (NULL);
	}
	return (j);
}

/* Attach data, freed by freefn (if set) when the reply is sent. */
void
http_req_set_data(struct http_req *hr, void *data, void (*freefn)(void *))
{
	hr->data = data;
	hr->datafree = freefn;
}

/* Read attached data. */
void *
http_req_data(const struct http_req *hr)
{
	return (hr->data);
}

/* Return the matched route pattern. */
const char *
http_req_route(const struct http_req *hr)
{
	return (hr->route != NULL ? hr->route->pattern : "unmatched");
}

/* Add a response header. */
void
http_reply_header(struct http_req *hr, const char *name, const char *value)
{
	if (hr->req == NULL)
		return;
	evhttp_add_header(evhttp_request_get_output_headers(hr->req), name,
	    value);
}

/* Unlink a request from the list it is on. */
static void
httpd_unlink(struct http_req **head, struct http_req *hr)
{
	if (hr->prev != NULL)
		hr->prev->next = hr->next;
	else
		*head = hr->next;
	if (hr->next != NULL)
		hr->next->prev = hr->prev;
	hr->prev = hr->next = NULL;
}

/* Send the reply, log it, count it and free the wrapper. */
static void
httpd_send(struct http_req *hr, int status, struct evbuffer *body)
{
	struct httpd	*h = hr->httpd;
	struct timespec	 now;
	double		 secs;
	char		 labels[512];
	size_t		 len = body != NULL ? evbuffer_get_length(body) : 0;
	const char	*route;

	if (hr->aborted) {
		/* The client already got its 503; the handler is done now. */
		httpd_unlink(&h->zombies, hr);
		httpd_req_free(hr);
		return;
	}
	route = hr->route != NULL ? hr->route->label : "unmatched";
	http_reply_header(hr, "X-Request-Id", hr->id);
	if (h->stopping)
		http_reply_header(hr, "Connection", "close");
	evhttp_send_reply(hr->req, status, NULL,
	    hr->method == HTTP_HEAD ? NULL : body);

	clock_gettime(CLOCK_MONOTONIC, &now);
	secs = (double)(now.tv_sec - hr->start.tv_sec) +
	    (double)(now.tv_nsec - hr->start.tv_nsec) / 1e9;
	snprintf(labels, sizeof labels,
	    "route=\"%s\",method=\"%s\",code=\"%d\"", route,
	    httpd_method_name(hr->method), status);
	metrics_add(h->metrics, "musubi_http_requests_total", labels, 1);
	snprintf(labels, sizeof labels, "route=\"%s\"", route);
	metrics_observe(h->metrics, "musubi_http_request_duration_seconds",
	    labels, secs);
	if (status >= 500 || log_enabled(LOG_LEVEL_INFO)) {
		(status >= 500 ? log_warnx : log_info)(
		    "http: rid=%s %s \"%s %s\" %d %zu %.1fms", hr->id,
		    hr->peer, httpd_method_name(hr->method), hr->path, status,
		    len, secs * 1000);
	}

	httpd_unlink(&h->pending, hr);
	h->inflight--;
	if (!hr->aborting) {
		httpd_req_free(hr);
		return;
	}
	/*
	 * Answered early by httpd_abort_pending: keep the wrapper until its
	 * handler replies from the database or HTTP-client callback that
	 * still holds it; that reply only frees it.
	 */
	hr->req = NULL;
	hr->aborted = 1;
	hr->next = h->zombies;
	if (h->zombies != NULL)
		h->zombies->prev = hr;
	h->zombies = hr;
}

/* Reply with JSON. */
void
http_reply_json(struct http_req *hr, int status, json_t *body)
{
	struct evbuffer	*buf = evbuffer_new();
	char		*s;

	if (body != NULL) {
		s = json_dumps(body, JSON_COMPACT);
		json_decref(body);
		if (s == NULL)
			fatalx("httpd: json_dumps failed");
		evbuffer_add(buf, s, strlen(s));
		evbuffer_add(buf, "\n", 1);
		free(s);
		http_reply_header(hr, "Content-Type",
		    "application/json; charset=utf-8");
	}
	httpd_send(hr, status, buf);
	evbuffer_free(buf);
}

/* Reply with a JSON error. */
void
http_reply_error(struct http_req *hr, int status, const char *code,
    const char *path, const char *fmt, ...)
{
	va_list	 ap;
	char	*msg;
	json_t	*err;

	va_start(ap, fmt);
	xvasprintf(&msg, fmt, ap);
	va_end(ap);
	err = json_pack("{s:s, s:s}", "code", code, "message", msg);
	if (err == NULL)
		err = json_pack("{s:s, s:s}", "code", code, "message",
		    "(message was not valid UTF-8)");
	if (path != NULL)
		json_object_set_new(err, "path", json_string(path));
	free(msg);
	http_reply_json(hr, status, json_pack("{s:o}", "error", err));
}

/* Reply with raw bytes. */
void
http_reply_raw(struct http_req *hr, int status, const char *content_type,
    const void *body, size_t len)
{
	struct evbuffer	*buf = evbuffer_new();

	if (content_type != NULL)
		http_reply_header(hr, "Content-Type", content_type);
	if (len > 0)
		evbuffer_add(buf, body, len);
	httpd_send(hr, status, buf);
	evbuffer_free(buf);
}

/* Reply with a prepared buffer. */
void
http_reply_buffer(struct http_req *hr, int status, const char *content_type,
    struct evbuffer *buf)
{
	if (content_type != NULL)
		http_reply_header(hr, "Content-Type", content_type);
	httpd_send(hr, status, buf);
}
