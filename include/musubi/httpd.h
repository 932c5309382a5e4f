/* SPDX-License-Identifier: ISC */
/*
 * httpd.h -- musubid's HTTP server on libevent's evhttp.
 *
 * One generic callback receives every request, gives it a request id
 * (X-Request-Id, taken from the client when it is sane), matches it against
 * the route table (patterns with {name} parameters), enforces limits (body
 * and header size, open connections, requests in flight, a read timeout for
 * slow clients) and calls the route's handler.  A handler owes exactly one
 * reply: http_reply_json(), http_reply_error() or http_reply_raw(), now or
 * later from a database or HTTP-client callback.  Every error is JSON:
 *	{"error":{"code":"not_found","message":"...","path":"/rule/all/2"}}
 * The reply writes the access-log line and the request metrics.
 */
#ifndef MUSUBI_HTTPD_H
#define MUSUBI_HTTPD_H

#include <stddef.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <jansson.h>

#include "musubi/compat.h"

struct config;
struct httpd;
struct http_req;
struct metrics;

#define HTTP_GET	0x01
#define HTTP_POST	0x02
#define HTTP_PUT	0x04
#define HTTP_PATCH	0x08
#define HTTP_DELETE	0x10
#define HTTP_HEAD	0x20

/* A route handler: must reply to req exactly once, now or later. */
typedef void http_handler(struct http_req *, void *arg);

struct httpd	*httpd_new(struct event_base *, const struct config *,
		    struct metrics *);
void		 httpd_free(struct httpd *);
/* Bind and listen on host:port; 0 or -1 with cause. */
int		 httpd_listen(struct httpd *, const char *hostport,
		    char **cause);
/* The port actually bound (after listening on port 0). */
int		 httpd_port(const struct httpd *);
/* Apply the reloadable limits of a (new) config. */
void		 httpd_configure(struct httpd *, const struct config *);
/*
 * Register a route.  pattern: "/api/v1/channels/{slug}"; a final "{*rest}"
 * matches the remainder.  max_body: 0 = the configured limit.
 */
void		 httpd_route(struct httpd *, int methods, const char *pattern,
		    http_handler *, void *arg);
void		 httpd_route_limit(struct httpd *, int methods,
		    const char *pattern, size_t max_body, http_handler *,
		    void *arg);
/* Stop accepting; requests in flight and keep-alive ones get answered. */
void		 httpd_stop(struct httpd *);
/* Answer every request still waiting with 503 (shutdown deadline). */
void		 httpd_abort_pending(struct httpd *);
/* Requests being handled. */
size_t		 httpd_inflight(const struct httpd *);
size_t		 httpd_connections(const struct httpd *);

/* Request accessors; strings are borrowed until the reply. */
const char	*http_req_id(const struct http_req *);
int		 http_req_method(const struct http_req *);
const char	*http_req_method_name(const struct http_req *);
const char	*http_req_path(const struct http_req *);
/* Path parameter by name (percent-decoded); NULL if absent. */
const char	*http_req_param(const struct http_req *, const char *name);
/* Query parameter by name (decoded); NULL if absent. */
const char	*http_req_query(const struct http_req *, const char *name);
/* Request header, case-insensitive; NULL if absent. */
const char	*http_req_header(const struct http_req *, const char *name);
/* The raw body, not NUL-terminated; NULL with *len 0 if empty. */
const unsigned char *http_req_body(struct http_req *, size_t *len);
const char	*http_req_peer(const struct http_req *);
/*
 * Parse the body as a JSON object.  On failure replies 400 ("invalid_json",
 * saying where) and returns NULL.  New reference: caller decrefs.
 */
json_t		*http_req_json(struct http_req *);
/* Opaque per-request data for the layers above (auth); freefn runs at reply. */
void		 http_req_set_data(struct http_req *, void *,
		    void (*freefn)(void *));
void		*http_req_data(const struct http_req *);
/* The route pattern that matched ("unmatched" if none). */
const char	*http_req_route(const struct http_req *);

/* Add a response header (copied) before replying. */
void		 http_reply_header(struct http_req *, const char *name,
		    const char *value);
/* Reply with a JSON document; steals body (may be NULL: no body). */
void		 http_reply_json(struct http_req *, int status, json_t *body);
/* Reply with a JSON error; path may be NULL. */
void		 http_reply_error(struct http_req *, int status,
		    const char *code, const char *path, const char *fmt, ...)
		    PRINTFLIKE(5, 6);
/* Reply with raw bytes (copied). */
void		 http_reply_raw(struct http_req *, int status,
		    const char *content_type, const void *body, size_t len);
/* Reply with a prepared buffer (its contents are moved). */
void		 http_reply_buffer(struct http_req *, int status,
		    const char *content_type, struct evbuffer *);

#endif
