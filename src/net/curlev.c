/* SPDX-License-Identifier: ISC */
/*
 * curlev.c -- outbound HTTP over libcurl's multi interface, driven by
 * libevent.  curlev_send() gives each request its own easy handle and adds it
 * to the multi handle.  libcurl then says which sockets to watch
 * (curlev_socket_cb keeps one event per socket with curl_multi_assign) and
 * when it next wants to run (curlev_timer_cb only arms an evtimer, as libcurl
 * must not be re-entered there).  When a socket or the timer fires,
 * curl_multi_socket_action() does the work and curlev_reap() collects
 * finished transfers and runs each request's callback, exactly once and
 * always from the loop.  Connections stay open in the multi handle and are
 * reused.  Every request has a timeout and a cap on its response body; the
 * headers of the final response are kept for curlev_resp_header().
 *
 * A callback may call curlev_send() or even curlev_free(): callbacks run with
 * ce->depth raised, and curlev_free() inside one only marks the object dead;
 * the outermost entry point destroys it once the callbacks have returned.
 */
#include <sys/queue.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>
#include <event2/event.h>

#include "musubi/curlev.h"
#include "musubi/log.h"
#include "musubi/xmalloc.h"

#define CURLEV_TIMEOUT_MS	30000		/* config gave no timeout */
#define CURLEV_CONNECT_MS	10000		/* nor a connect timeout */
#define CURLEV_MAX_RESPONSE	(1024 * 1024)	/* nor a body cap */
#define CURLEV_BODY_CHUNK	4096		/* first response buffer */

/* One response header, name and value trimmed. */
struct curlev_hdr {
	char	*name;
	char	*value;
};

/* A socket libcurl asked us to watch, and its event. */
struct curlev_sock {
	curl_socket_t		 fd;
	struct event		*ev;
	TAILQ_ENTRY(curlev_sock) entry;
};
TAILQ_HEAD(curlev_socks, curlev_sock);

struct curlev_req {
	struct curlev		*ce;		/* set by curlev_send */
	CURL			*easy;
	int			 added;		/* in the multi handle */
	char			*method;
	char			*url;
	struct curl_slist	*headers;
	char			*ctype;		/* body Content-Type */
	char			*body;
	size_t			 bodylen;
	int			 has_body;
	long			 timeout_ms;	/* 0: the config's */
	size_t			 max_response;	/* 0: the config's */
	const char		*fail;		/* why it cannot start */

	curlev_done_cb		*cb;
	void			*arg;
	struct event		*defer;		/* reports fail from the loop */
	struct timespec		 start;

	char			*rbody;		/* NUL-terminated */
	size_t			 rlen;
	size_t			 rsize;
	struct curlev_hdr	*rhdrs;
	size_t			 nrhdrs;
	int			 too_large;
	char			 errbuf[CURL_ERROR_SIZE];

	TAILQ_ENTRY(curlev_req)	 entry;
};
TAILQ_HEAD(curlev_reqs, curlev_req);

struct curlev {
	struct event_base	*base;
	CURLM			*multi;
	struct event		*timer;		/* libcurl's timeout */
	struct curlev_config	 cfg;
	struct curlev_reqs	 reqs;		/* callback not yet run */
	size_t			 nreqs;
	struct curlev_socks	 socks;
	unsigned int		 depth;		/* entry points running */
	int			 dead;		/* curlev_free was called */
};

/* curlev objects alive; curl_global_* run on the first and last. */
static unsigned int	 curlev_refs;

static void	 curlev_reap(struct curlev *);
static void	 curlev_leave(struct curlev *);

/* Return the seconds since ts. */
static double
curlev_since(const struct timespec *ts)
{
	struct timespec	 now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return ((double)(now.tv_sec - ts->tv_sec) +
	    (double)(now.tv_nsec - ts->tv_nsec) / 1e9);
}

/* Tell whether s holds a character that would break a request line. */
static int
curlev_bad_chars(const char *s, const char *bad)
{
	return (s[strcspn(s, bad)] != '\0');
}

/* Drop the response headers collected so far. */
static void
curlev_clear_headers(struct curlev_req *req)
{
	size_t	 i;

	for (i = 0; i < req->nrhdrs; i++) {
		free(req->rhdrs[i].name);
		free(req->rhdrs[i].value);
	}
	free(req->rhdrs);
	req->rhdrs = NULL;
	req->nrhdrs = 0;
}

/* Return s[0..*len) without leading and trailing blanks. */
static const char *
curlev_trim(const char *s, size_t *len)
{
	while (*len > 0 && (*s == ' ' || *s == '\t')) {
		s++;
		(*len)--;
	}
	while (*len > 0 && (s[*len - 1] == ' ' || s[*len - 1] == '\t'))
		(*len)--;
	return (s);
}

/* Collect one response header line; a status line starts a new set. */
static size_t
curlev_header_cb(char *buf, size_t size, size_t nitems, void *arg)
{
	struct curlev_req	*req = arg;
	struct curlev_hdr	*h;
	size_t			 n = size * nitems, len = n, nlen, vlen;
	const char		*colon, *name, *value;
	char			*joined;

	while (len > 0 && (buf[len - 1] == '\r' || buf[len - 1] == '\n'))
		len--;
	if (len >= 5 && strncmp(buf, "HTTP/", 5) == 0) {
		/* 1xx, or a proxy's CONNECT reply: only the last set counts. */
		curlev_clear_headers(req);
		return (n);
	}
	if (len == 0)
		return (n);
	if (buf[0] == ' ' || buf[0] == '\t') {
		/* Obsolete line folding: continue the previous value. */
		if (req->nrhdrs == 0)
			return (n);
		vlen = len;
		value = curlev_trim(buf, &vlen);
		h = &req->rhdrs[req->nrhdrs - 1];
		xasprintf(&joined, "%s %.*s", h->value, (int)vlen, value);
		free(h->value);
		h->value = joined;
		return (n);
	}
	if ((colon = memchr(buf, ':', len)) == NULL)
		return (n);
	nlen = (size_t)(colon - buf);
	name = curlev_trim(buf, &nlen);
	vlen = len - (size_t)(colon + 1 - buf);
	value = curlev_trim(colon + 1, &vlen);
	if (nlen == 0)
		return (n);
	req->rhdrs = xreallocarray(req->rhdrs, req->nrhdrs + 1,
	    sizeof(*req->rhdrs));
	h = &req->rhdrs[req->nrhdrs++];
	h->name = xstrndup(name, nlen);
	h->value = xstrndup(value, vlen);
	return (n);
}

/* Append body data, or abort the transfer once it passes the cap. */
static size_t
curlev_write_cb(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct curlev_req	*req = arg;
	size_t			 n = size * nmemb, want;

	if (n > req->max_response - req->rlen) {
		req->too_large = 1;
		return (0);		/* CURLE_WRITE_ERROR */
	}
	if (req->rlen + n + 1 > req->rsize) {
		want = req->rsize == 0 ? CURLEV_BODY_CHUNK : req->rsize * 2;
		if (want < req->rlen + n + 1)
			want = req->rlen + n + 1;
		if (want > req->max_response + 1)
			want = req->max_response + 1;
		req->rbody = xreallocarray(req->rbody, want, 1);
		req->rsize = want;
	}
	memcpy(req->rbody + req->rlen, ptr, n);
	req->rlen += n;
	req->rbody[req->rlen] = '\0';
	return (n);
}

/* Run a request's callback and free it; it is out of the multi already. */
static void
curlev_finish(struct curlev_req *req, const struct curlev_resp *resp)
{
	struct curlev	*ce = req->ce;

	TAILQ_REMOVE(&ce->reqs, req, entry);
	ce->nreqs--;
	if (resp->err != NULL)
		log_debug("curlev: %s %s: %s (%.3fs)", req->method, req->url,
		    resp->err, resp->elapsed);
	else
		log_debug("curlev: %s %s: status %ld, %zu bytes (%.3fs)",
		    req->method, req->url, resp->status, resp->bodylen,
		    resp->elapsed);
	req->cb(resp, req->arg);
	curlev_req_free(req);
}

/* Report a request that did not run to completion. */
static void
curlev_fail(struct curlev_req *req, const char *err)
{
	struct curlev_resp	 resp;

	memset(&resp, 0, sizeof(resp));
	resp.body = "";
	resp.err = err;
	resp.elapsed = curlev_since(&req->start);
	resp.priv = req;
	curlev_finish(req, &resp);
}

/* Report a transfer that libcurl finished with rc. */
static void
curlev_complete(struct curlev_req *req, CURLcode rc, long status,
    double elapsed)
{
	struct curlev_resp	 resp;

	memset(&resp, 0, sizeof(resp));
	resp.status = status;
	resp.body = "";
	resp.elapsed = elapsed;
	resp.priv = req;
	if (rc == CURLE_OK) {
		if (req->rbody != NULL) {
			resp.body = req->rbody;
			resp.bodylen = req->rlen;
		}
	} else if (req->too_large || rc == CURLE_FILESIZE_EXCEEDED) {
		resp.too_large = 1;
		snprintf(req->errbuf, sizeof(req->errbuf),
		    "response body larger than %zu bytes", req->max_response);
		resp.err = req->errbuf;
	} else {
		resp.timed_out = (rc == CURLE_OPERATION_TIMEDOUT);
		if (req->errbuf[0] != '\0')
			resp.err = req->errbuf;
		else
			resp.err = curl_easy_strerror(rc);
	}
	curlev_finish(req, &resp);
}

/* Fail every request whose callback has not run yet with "aborted". */
static void
curlev_abort(struct curlev *ce)
{
	struct curlev_req	*req;

	/* A callback may send more; those land on the list and go too. */
	while ((req = TAILQ_FIRST(&ce->reqs)) != NULL) {
		if (req->added) {
			curl_multi_remove_handle(ce->multi, req->easy);
			req->added = 0;
		}
		curlev_fail(req, req->fail != NULL ? req->fail : "aborted");
	}
}

/* Free the multi handle, the events and ce itself. */
static void
curlev_destroy(struct curlev *ce)
{
	struct curlev_sock	*s;

	curlev_abort(ce);
	curl_multi_cleanup(ce->multi);
	/* Normally CURL_POLL_REMOVE has freed these already. */
	while ((s = TAILQ_FIRST(&ce->socks)) != NULL) {
		TAILQ_REMOVE(&ce->socks, s, entry);
		event_free(s->ev);
		free(s);
	}
	event_free(ce->timer);
	free(ce);
	if (--curlev_refs == 0)
		curl_global_cleanup();
}

/* Leave an entry point; destroy ce if curlev_free ran meanwhile. */
static void
curlev_leave(struct curlev *ce)
{
	if (--ce->depth == 0 && ce->dead)
		curlev_destroy(ce);
}

/* Hand a ready socket to libcurl, then reap what finished. */
static void
curlev_event_cb(evutil_socket_t fd, short what, void *arg)
{
	struct curlev	*ce = arg;
	int		 mask = 0, running;
	CURLMcode	 mc;

	if (what & EV_READ)
		mask |= CURL_CSELECT_IN;
	if (what & EV_WRITE)
		mask |= CURL_CSELECT_OUT;
	ce->depth++;
	mc = curl_multi_socket_action(ce->multi, fd, mask, &running);
	if (mc != CURLM_OK)
		log_warnx("curlev: socket %d: %s", (int)fd,
		    curl_multi_strerror(mc));
	curlev_reap(ce);
	curlev_leave(ce);
}

/* Tell libcurl its timeout expired, then reap what finished. */
static void
curlev_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct curlev	*ce = arg;
	int		 running;
	CURLMcode	 mc;

	ce->depth++;
	mc = curl_multi_socket_action(ce->multi, CURL_SOCKET_TIMEOUT, 0,
	    &running);
	if (mc != CURLM_OK)
		log_warnx("curlev: timeout: %s", curl_multi_strerror(mc));
	curlev_reap(ce);
	curlev_leave(ce);
}

/* Report, from the loop, a request that could not be started. */
static void
curlev_defer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct curlev_req	*req = arg;
	struct curlev		*ce = req->ce;

	ce->depth++;
	curlev_fail(req, req->fail);
	curlev_leave(ce);
}

/* Watch the socket libcurl names, or stop watching it (SOCKETFUNCTION). */
static int
curlev_socket_cb(CURL *e, curl_socket_t fd, int what, void *userp,
    void *sockp)
{
	struct curlev		*ce = userp;
	struct curlev_sock	*s = sockp;
	short			 flags = EV_PERSIST;

	if (s != NULL)
		event_free(s->ev);		/* also deletes it */
	if (what == CURL_POLL_REMOVE) {
		if (s != NULL) {
			TAILQ_REMOVE(&ce->socks, s, entry);
			free(s);
		}
		curl_multi_assign(ce->multi, fd, NULL);
		return (0);
	}
	if (s == NULL) {
		s = xcalloc(1, sizeof(*s));
		s->fd = fd;
		TAILQ_INSERT_TAIL(&ce->socks, s, entry);
		curl_multi_assign(ce->multi, fd, s);
	}
	if (what & CURL_POLL_IN)
		flags |= EV_READ;
	if (what & CURL_POLL_OUT)
		flags |= EV_WRITE;
	if ((s->ev = event_new(ce->base, fd, flags, curlev_event_cb, ce)) ==
	    NULL)
		fatalx("curlev: event_new");
	if (event_add(s->ev, NULL) != 0) {
		log_warnx("curlev: socket %d: event_add failed", (int)fd);
		return (-1);
	}
	return (0);
}

/* Arm the timer for libcurl's next timeout (TIMERFUNCTION); nothing else. */
static int
curlev_timer_cb(CURLM *multi, long ms, void *userp)
{
	struct curlev	*ce = userp;
	struct timeval	 tv;

	if (ms < 0) {
		evtimer_del(ce->timer);
		return (0);
	}
	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	if (evtimer_add(ce->timer, &tv) != 0) {
		log_warnx("curlev: evtimer_add failed");
		return (-1);
	}
	return (0);
}

/* Collect finished transfers and run their callbacks. */
static void
curlev_reap(struct curlev *ce)
{
	CURLMsg			*msg;
	struct curlev_req	*req;
	CURLcode		 rc;
	char			*priv;
	long			 status;
	double			 elapsed;
	int			 left;

	while (!ce->dead &&
	    (msg = curl_multi_info_read(ce->multi, &left)) != NULL) {
		if (msg->msg != CURLMSG_DONE)
			continue;
		rc = msg->data.result;
		priv = NULL;
		status = 0;
		elapsed = 0;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
		curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE,
		    &status);
		curl_easy_getinfo(msg->easy_handle, CURLINFO_TOTAL_TIME,
		    &elapsed);
		req = (struct curlev_req *)(void *)priv;
		/* msg is invalid from here on. */
		curl_multi_remove_handle(ce->multi, req->easy);
		req->added = 0;
		curlev_complete(req, rc, status, elapsed);
	}
}

/* Make a new client; NULL if libcurl cannot be set up. */
struct curlev *
curlev_new(struct event_base *base, const struct curlev_config *cfg)
{
	struct curlev	*ce;
	CURLcode	 rc;

	if (curlev_refs == 0 &&
	    (rc = curl_global_init(CURL_GLOBAL_DEFAULT)) != CURLE_OK) {
		log_warnx("curlev: curl_global_init: %s",
		    curl_easy_strerror(rc));
		return (NULL);
	}
	curlev_refs++;

	ce = xcalloc(1, sizeof(*ce));
	ce->base = base;
	if (cfg != NULL)
		ce->cfg = *cfg;
	if (ce->cfg.timeout_ms <= 0)
		ce->cfg.timeout_ms = CURLEV_TIMEOUT_MS;
	if (ce->cfg.connect_timeout_ms <= 0)
		ce->cfg.connect_timeout_ms = CURLEV_CONNECT_MS;
	if (ce->cfg.max_response == 0)
		ce->cfg.max_response = CURLEV_MAX_RESPONSE;
	TAILQ_INIT(&ce->reqs);
	TAILQ_INIT(&ce->socks);

	if ((ce->multi = curl_multi_init()) == NULL) {
		log_warnx("curlev: curl_multi_init failed");
		goto fail;
	}
	if ((ce->timer = evtimer_new(base, curlev_timeout_cb, ce)) == NULL) {
		log_warnx("curlev: evtimer_new failed");
		goto fail;
	}
	curl_multi_setopt(ce->multi, CURLMOPT_SOCKETFUNCTION, curlev_socket_cb);
	curl_multi_setopt(ce->multi, CURLMOPT_SOCKETDATA, ce);
	curl_multi_setopt(ce->multi, CURLMOPT_TIMERFUNCTION, curlev_timer_cb);
	curl_multi_setopt(ce->multi, CURLMOPT_TIMERDATA, ce);
	if (ce->cfg.max_host_connections > 0)
		curl_multi_setopt(ce->multi, CURLMOPT_MAX_HOST_CONNECTIONS,
		    ce->cfg.max_host_connections);
	if (ce->cfg.max_total_connections > 0)
		curl_multi_setopt(ce->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS,
		    ce->cfg.max_total_connections);
	return (ce);

fail:
	if (ce->multi != NULL)
		curl_multi_cleanup(ce->multi);
	free(ce);
	if (--curlev_refs == 0)
		curl_global_cleanup();
	return (NULL);
}

/* Abort transfers in flight (callbacks get "aborted") and free ce. */
void
curlev_free(struct curlev *ce)
{
	if (ce == NULL || ce->dead)
		return;
	ce->dead = 1;
	ce->depth++;
	curlev_abort(ce);
	curlev_leave(ce);	/* destroys now unless inside a callback */
}

/* Count requests whose callback has not run yet. */
size_t
curlev_inflight(const struct curlev *ce)
{
	return (ce->nreqs);
}

/* Start building a request; method and url are copied. */
struct curlev_req *
curlev_req_new(const char *method, const char *url)
{
	struct curlev_req	*req;

	req = xcalloc(1, sizeof(*req));
	req->method = xstrdup(method);
	req->url = xstrdup(url);
	if (*method == '\0' || curlev_bad_chars(method, " \t\r\n"))
		req->fail = "invalid request method";
	return (req);
}

/* Free a request, detaching its easy handle first if need be. */
void
curlev_req_free(struct curlev_req *req)
{
	if (req == NULL)
		return;
	if (req->easy != NULL) {
		if (req->added)
			curl_multi_remove_handle(req->ce->multi, req->easy);
		curl_easy_cleanup(req->easy);
	}
	if (req->defer != NULL)
		event_free(req->defer);
	curl_slist_free_all(req->headers);
	curlev_clear_headers(req);
	free(req->rbody);
	free(req->method);
	free(req->url);
	free(req->ctype);
	free(req->body);
	free(req);
}

/* Append a header line to the request's list. */
static void
curlev_add_header(struct curlev_req *req, const char *line)
{
	struct curl_slist	*l;

	if ((l = curl_slist_append(req->headers, line)) == NULL)
		fatalx("curlev: curl_slist_append");
	req->headers = l;
}

/* Add "name: value" to the request; an invalid one fails the request. */
void
curlev_req_header(struct curlev_req *req, const char *name, const char *value)
{
	char	*line;

	if (*name == '\0' || curlev_bad_chars(name, ":;\r\n \t") ||
	    curlev_bad_chars(value, "\r\n")) {
		req->fail = "invalid request header";
		return;
	}
	/* "Name;" is libcurl's spelling of a header with an empty value. */
	if (*value == '\0')
		xasprintf(&line, "%s;", name);
	else
		xasprintf(&line, "%s: %s", name, value);
	curlev_add_header(req, line);
	free(line);
}

/* Set the body (copied) and its Content-Type (may be NULL). */
void
curlev_req_body(struct curlev_req *req, const char *content_type,
    const void *body, size_t len)
{
	free(req->ctype);
	free(req->body);
	req->ctype = NULL;
	if (content_type != NULL) {
		if (curlev_bad_chars(content_type, "\r\n"))
			req->fail = "invalid request header";
		else
			req->ctype = xstrdup(content_type);
	}
	req->body = xmalloc(len + 1);		/* never zero */
	if (len > 0)
		memcpy(req->body, body, len);
	req->body[len] = '\0';
	req->bodylen = len;
	req->has_body = 1;
}

/* Override the default timeout for this request. */
void
curlev_req_timeout(struct curlev_req *req, long ms)
{
	req->timeout_ms = ms;
}

/* Override the default response body cap for this request. */
void
curlev_req_max_response(struct curlev_req *req, size_t bytes)
{
	req->max_response = bytes;
}

/* Create and configure the easy handle; req->fail says why not. */
static int
curlev_setup(struct curlev *ce, struct curlev_req *req)
{
	CURL		*e;
	CURLcode	 rc;
	char		*line;
	int		 send_body;

	if ((e = req->easy = curl_easy_init()) == NULL) {
		req->fail = "curl_easy_init failed";
		return (-1);
	}
	if (req->timeout_ms <= 0)
		req->timeout_ms = ce->cfg.timeout_ms;
	if (req->max_response == 0)
		req->max_response = ce->cfg.max_response;
	/* Keep max_response + 1 and the curl_off_t below in range. */
	if (req->max_response > SIZE_MAX / 2)
		req->max_response = SIZE_MAX / 2;

	if ((rc = curl_easy_setopt(e, CURLOPT_URL, req->url)) != CURLE_OK ||
	    (rc = curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https")) !=
	    CURLE_OK) {
		req->fail = curl_easy_strerror(rc);
		return (-1);
	}
	curl_easy_setopt(e, CURLOPT_PRIVATE, req);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, req->errbuf);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, req->timeout_ms);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
	    ce->cfg.connect_timeout_ms);
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, curlev_write_cb);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, req);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, curlev_header_cb);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, req);
	/* Fails early when Content-Length already says it is too big. */
	curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE,
	    (curl_off_t)req->max_response);

	/*
	 * GET without a body and HEAD use libcurl's own modes.  Anything else
	 * goes out as a POST with the method name swapped in, so PUT and
	 * PATCH carry a body (possibly empty) and a Content-Length.
	 */
	send_body = req->has_body || strcmp(req->method, "POST") == 0 ||
	    strcmp(req->method, "PUT") == 0 ||
	    strcmp(req->method, "PATCH") == 0;
	if (strcmp(req->method, "HEAD") == 0) {
		curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
		send_body = 0;
	} else if (strcmp(req->method, "GET") == 0 && !send_body)
		curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
	if (send_body) {
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
		    (curl_off_t)req->bodylen);
		rc = curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS,
		    req->body != NULL ? req->body : "");
		if (rc != CURLE_OK) {
			req->fail = curl_easy_strerror(rc);
			return (-1);
		}
		free(req->body);	/* libcurl has its own copy */
		req->body = NULL;
		if (req->ctype != NULL) {
			xasprintf(&line, "Content-Type: %s", req->ctype);
			curlev_add_header(req, line);
			free(line);
		} else
			curlev_add_header(req, "Content-Type:");
		curlev_add_header(req, "Expect:");
	}
	if (strcmp(req->method, "GET") != 0 &&
	    strcmp(req->method, "POST") != 0 &&
	    strcmp(req->method, "HEAD") != 0) {
		rc = curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, req->method);
		if (rc != CURLE_OK) {
			req->fail = curl_easy_strerror(rc);
			return (-1);
		}
	} else if (strcmp(req->method, "GET") == 0 && send_body)
		curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, "GET");
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, req->headers);
	return (0);
}

/* Start a request (stolen); its callback always runs later, from the loop. */
int
curlev_send(struct curlev *ce, struct curlev_req *req, curlev_done_cb *cb,
    void *arg)
{
	static const struct timeval	 now = { 0, 0 };
	CURLMcode			 mc;

	req->ce = ce;
	req->cb = cb;
	req->arg = arg;
	clock_gettime(CLOCK_MONOTONIC, &req->start);
	TAILQ_INSERT_TAIL(&ce->reqs, req, entry);
	ce->nreqs++;
	if (ce->dead) {
		/* curlev_free is running: its abort loop picks this up. */
		req->fail = "aborted";
		return (-1);
	}
	if (req->fail == NULL && curlev_setup(ce, req) == 0) {
		if ((mc = curl_multi_add_handle(ce->multi, req->easy)) ==
		    CURLM_OK) {
			req->added = 1;
			return (0);
		}
		req->fail = curl_multi_strerror(mc);
	}
	if ((req->defer = evtimer_new(ce->base, curlev_defer_cb, req)) ==
	    NULL || evtimer_add(req->defer, &now) != 0)
		fatalx("curlev: cannot defer a callback");
	return (-1);
}

/* Find a header of the final response by name, ignoring case. */
const char *
curlev_resp_header(const struct curlev_resp *resp, const char *name)
{
	const struct curlev_req	*req;
	size_t			 i;

	if (resp == NULL || (req = resp->priv) == NULL)
		return (NULL);
	for (i = 0; i < req->nrhdrs; i++) {
		if (strcasecmp(req->rhdrs[i].name, name) == 0)
			return (req->rhdrs[i].value);
	}
	return (NULL);
}
