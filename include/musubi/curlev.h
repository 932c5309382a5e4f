/* SPDX-License-Identifier: ISC */
/*
 * curlev.h -- outbound HTTP: libcurl's multi interface driven by libevent.
 *
 * curlev_send() adds a request to the multi handle; libcurl tells us which
 * sockets to watch (curlev_socket_cb) and when to wake it (curlev_timer_cb),
 * and finished transfers are reaped and their callbacks run from the loop.
 * Every request has a timeout and a response-size cap.  Nothing blocks.
 */
#ifndef MUSUBI_CURLEV_H
#define MUSUBI_CURLEV_H

#include <stddef.h>

#include <event2/event.h>

#include "musubi/compat.h"

struct curlev;
struct curlev_req;

struct curlev_resp {
	long		 status;	/* HTTP status; 0 if no response */
	const char	*body;		/* NUL-terminated; "" if none */
	size_t		 bodylen;
	const char	*err;		/* NULL when a response arrived */
	int		 timed_out;	/* transport timeout */
	int		 too_large;	/* body exceeded the cap */
	double		 elapsed;	/* seconds */
	const void	*priv;		/* headers; use curlev_resp_header */
};

/* Called once per request, from the loop; resp and its strings are borrowed. */
typedef void curlev_done_cb(const struct curlev_resp *, void *arg);

struct curlev_config {
	long		 timeout_ms;		/* default per request */
	long		 connect_timeout_ms;
	size_t		 max_response;		/* default body cap, bytes */
	long		 max_host_connections;	/* 0 = libcurl default */
	long		 max_total_connections;	/* 0 = libcurl default */
};

struct curlev	*curlev_new(struct event_base *, const struct curlev_config *);
/* Abort transfers in flight; their callbacks run with err "aborted". */
void		 curlev_free(struct curlev *);
/* Transfers in flight. */
size_t		 curlev_inflight(const struct curlev *);

/* A request under construction: method "GET", "POST", ...; url copied. */
struct curlev_req *curlev_req_new(const char *method, const char *url);
void		 curlev_req_free(struct curlev_req *);
/* Add a request header ("Name", "value"); both copied. */
void		 curlev_req_header(struct curlev_req *, const char *name,
		    const char *value);
/* Set the request body (copied) and its Content-Type. */
void		 curlev_req_body(struct curlev_req *, const char *content_type,
		    const void *body, size_t len);
void		 curlev_req_timeout(struct curlev_req *, long ms);
void		 curlev_req_max_response(struct curlev_req *, size_t bytes);

/*
 * Start a request; steals req.  The callback is never called from inside
 * curlev_send().  Returns 0, or -1 if libcurl refused it (callback still
 * runs, with err set).
 */
int		 curlev_send(struct curlev *, struct curlev_req *,
		    curlev_done_cb *, void *arg);

/* Response header by name, case-insensitive; borrowed, NULL if absent. */
const char	*curlev_resp_header(const struct curlev_resp *, const char *name);

#endif
