/* SPDX-License-Identifier: ISC */
/*
 * track.c -- the click redirect and the page-view beacon (see track.h).
 * Neither waits for PostgreSQL on the request path when the link is cached:
 * a click is a token check, a cache hit, a queued record and a 302.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <event2/http.h>

#include "musubi/app.h"
#include "musubi/config.h"
#include "musubi/crypto.h"
#include "musubi/db.h"
#include "musubi/httpd.h"
#include "musubi/log.h"
#include "musubi/metrics.h"
#include "musubi/token.h"
#include "musubi/track.h"
#include "musubi/xmalloc.h"

#define TRACK_LINK_TTL_MS	60000
#define TRACK_LINK_BUCKETS	1024
#define TRACK_LINK_MAX		100000

struct track_link {
	int64_t			 channel_id;
	int64_t			 id;
	char			*destination;	/* NULL: no such link */
	char			*campaign;	/* utm_campaign value */
	long long		 expires;
	struct track_link	*next;
};

struct track_chunk {
	json_t			*rows;
	struct track_chunk	*next;
};

struct track_queue {
	const char		*fn;		/* SQL function */
	const char		*metric;	/* label value */
	struct track_chunk	*head, *tail;
	size_t			 n;
	int			 flushing;
};

struct track {
	struct app		*app;
	unsigned char		 key[TOKEN_KEY_LEN];
	struct track_link	*links[TRACK_LINK_BUCKETS];
	size_t			 nlinks;
	struct track_queue	 clicks;
	struct track_queue	 views;
	struct event		*flush_ev;
	int			 stopping;
};

struct track_click {
	struct track		*tr;
	struct http_req		*req;
	struct token		 tok;
};

static const char track_404[] =
    "<!doctype html><html lang=\"ja\"><meta charset=\"utf-8\">"
    "<meta name=\"viewport\" content=\"width=device-width\">"
    "<title>リンクが無効です</title>"
    "<body style=\"font-family:sans-serif;margin:3em auto;max-width:30em\">"
    "<h1>リンクが無効です</h1><p>このリンクは無効か、期限切れです。</p>"
    "<p>This link is not valid.</p></body></html>\n";

static const unsigned char track_gif[] = {
	0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80,
	0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0x21, 0xf9, 0x04,
	0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00, 0x01,
	0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
};

static void	track_click_cb(struct http_req *, void *);
static void	track_pv_cb(struct http_req *, void *);
static void	track_flush_cb(evutil_socket_t, short, void *);

/* Milliseconds on the monotonic clock. */
static long long
track_now_ms(void)
{
	struct timespec	 ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
}

/* Milliseconds since the epoch. */
static long long
track_epoch_ms(void)
{
	struct timespec	 ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ((long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
}

/* Load the shared token key, creating it on first start. */
int
track_load_key(PGconn *conn, unsigned char key[TOKEN_KEY_LEN], char **cause)
{
	unsigned char	 fresh[TOKEN_KEY_LEN];
	char		 hex[2 * TOKEN_KEY_LEN + 3];
	const char	*params[1] = { hex };
	PGresult	*res;
	unsigned char	*raw;
	size_t		 len;

	crypto_random(fresh, sizeof fresh);
	hex[0] = '\\';
	hex[1] = 'x';
	crypto_hex(fresh, sizeof fresh, hex + 2);
	res = PQexecParams(conn, "INSERT INTO instance_keys (name, key) "
	    "VALUES ('tracking', $1::bytea) ON CONFLICT (name) DO NOTHING",
	    1, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		xsetcause(cause, "%s", PQresultErrorMessage(res));
		PQclear(res);
		return (-1);
	}
	PQclear(res);
	res = PQexec(conn, "SELECT key FROM instance_keys "
	    "WHERE name = 'tracking'");
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
		xsetcause(cause, "cannot read the tracking key: %s",
		    PQresultErrorMessage(res));
		PQclear(res);
		return (-1);
	}
	raw = PQunescapeBytea((const unsigned char *)PQgetvalue(res, 0, 0),
	    &len);
	PQclear(res);
	if (raw == NULL || len != TOKEN_KEY_LEN) {
		PQfreemem(raw);
		xsetcause(cause, "the stored tracking key is malformed");
		return (-1);
	}
	memcpy(key, raw, TOKEN_KEY_LEN);
	PQfreemem(raw);
	return (0);
}

/* Create the tracker and register its routes. */
struct track *
track_new(struct app *app, const unsigned char key[TOKEN_KEY_LEN])
{
	struct track	*tr = xcalloc(1, sizeof *tr);

	tr->app = app;
	memcpy(tr->key, key, TOKEN_KEY_LEN);
	tr->clicks.fn = "SELECT musubi_record_clicks($1::jsonb)";
	tr->clicks.metric = "click";
	tr->views.fn = "SELECT musubi_record_page_views($1::jsonb)";
	tr->views.metric = "page_view";
	tr->flush_ev = evtimer_new(app->base, track_flush_cb, tr);
	httpd_route(app->httpd, HTTP_GET, "/c/{token}", track_click_cb, tr);
	httpd_route(app->httpd, HTTP_GET | HTTP_POST, "/t/pv", track_pv_cb,
	    tr);
	httpd_route(app->httpd, HTTP_GET, "/t/pv.gif", track_pv_cb, tr);
	metrics_describe(app->metrics, "musubi_track_events_total", "counter",
	    "Clicks and page views, by kind and stage (queued, stored, "
	    "rejected).");
	metrics_describe(app->metrics, "musubi_track_dropped_total",
	    "counter", "Tracking records dropped because the buffer was full "
	    "while PostgreSQL was unavailable.");
	return (tr);
}

/* Arm the flush timer. */
static void
track_arm(struct track *tr, long ms)
{
	struct timeval	 tv = { ms / 1000, (ms % 1000) * 1000 };

	if (!evtimer_pending(tr->flush_ev, NULL) &&
	    evtimer_add(tr->flush_ev, &tv) != 0)
		log_warnx("track: cannot arm the flush timer");
}

/* Start flushing. */
int
track_start(struct track *tr)
{
	track_arm(tr, TRACK_FLUSH_MS);
	return (0);
}

/* Flush what is left; no more timers after that. */
void
track_stop(struct track *tr)
{
	tr->stopping = 1;
	evtimer_del(tr->flush_ev);
	track_flush_cb(-1, 0, tr);
}

/* Tell whether records are buffered or being written. */
int
track_busy(const struct track *tr)
{
	return (tr->clicks.flushing || tr->views.flushing ||
	    (tr->clicks.n > 0 && db_is_ready(tr->app->db)) ||
	    (tr->views.n > 0 && db_is_ready(tr->app->db)));
}

/* Free a queue's chunks. */
static void
track_queue_free(struct track *tr, struct track_queue *q)
{
	struct track_chunk	*c, *n;

	if (q->n > 0)
		log_warnx("track: %zu %s records not written at exit", q->n,
		    q->metric);
	for (c = q->head; c != NULL; c = n) {
		n = c->next;
		json_decref(c->rows);
		free(c);
	}
	q->head = q->tail = NULL;
	q->n = 0;
}

/* Free the tracker. */
void
track_free(struct track *tr)
{
	struct track_link	*l, *n;
	size_t			 i;

	if (tr == NULL)
		return;
	track_queue_free(tr, &tr->clicks);
	track_queue_free(tr, &tr->views);
	for (i = 0; i < TRACK_LINK_BUCKETS; i++) {
		for (l = tr->links[i]; l != NULL; l = n) {
			n = l->next;
			free(l->destination);
			free(l->campaign);
			free(l);
		}
	}
	event_free(tr->flush_ev);
	explicit_bzero(tr->key, sizeof tr->key);
	free(tr);
}

/* Queue one record; drops the oldest chunk when the buffer is full. */
static void
track_queue_add(struct track *tr, struct track_queue *q, json_t *row)
{
	struct track_chunk	*c = q->tail;
	char			 label[64];

	if (c == NULL || json_array_size(c->rows) >= TRACK_BATCH_MAX ||
	    (c == q->head && q->flushing)) {
		c = xcalloc(1, sizeof *c);
		c->rows = json_array();
		if (q->tail != NULL)
			q->tail->next = c;
		else
			q->head = c;
		q->tail = c;
	}
	json_array_append_new(c->rows, row);
	q->n++;
	snprintf(label, sizeof label, "kind=\"%s\",stage=\"queued\"",
	    q->metric);
	metrics_add(tr->app->metrics, "musubi_track_events_total", label, 1);
	if (q->n > TRACK_BUFFER_MAX && q->head != NULL &&
	    q->head != q->tail && !(q->flushing)) {
		c = q->head;
		q->head = c->next;
		q->n -= json_array_size(c->rows);
		snprintf(label, sizeof label, "kind=\"%s\"", q->metric);
		metrics_add(tr->app->metrics, "musubi_track_dropped_total",
		    label, json_array_size(c->rows));
		log_warnx("track: buffer full; dropped %zu %s records",
		    json_array_size(c->rows), q->metric);
		json_decref(c->rows);
		free(c);
	}
	if (json_array_size(q->tail->rows) >= TRACK_BATCH_MAX)
		track_arm(tr, 0);
}

struct track_flush {
	struct track		*tr;
	struct track_queue	*q;
};

/*
 * Would the same batch succeed later?  Class 40 (deadlock, serialization),
 * 53 (out of resources), 57 (cancelled, shutting down), 58 (system error),
 * 55P03 (lock not available): yes.  Data errors (22, 23...): no.
 */
static int
track_transient(const char *st)
{
	return (strncmp(st, "40", 2) == 0 || strncmp(st, "53", 2) == 0 ||
	    strncmp(st, "57", 2) == 0 || strncmp(st, "58", 2) == 0 ||
	    strcmp(st, "55P03") == 0);
}

/* A batch was written, or not. */
static void
track_flushed_cb(const PGresult *res, const char *err, void *arg)
{
	struct track_flush	*f = arg;
	struct track		*tr = f->tr;
	struct track_queue	*q = f->q;
	struct track_chunk	*c = q->head;
	char			 label[64];

	free(f);
	q->flushing = 0;
	if (err != NULL) {
		/* Keep the chunk at the head and try again later. */
		log_warnx("track: writing %zu %s records failed: %s",
		    json_array_size(c->rows), q->metric, err);
		if (res != NULL && !track_transient(db_sqlstate(res))) {
			/* The server refused the data itself: drop it. */
			q->head = c->next;
			if (q->tail == c)
				q->tail = NULL;
			q->n -= json_array_size(c->rows);
			snprintf(label, sizeof label, "kind=\"%s\"", q->metric);
			metrics_add(tr->app->metrics,
			    "musubi_track_dropped_total", label,
			    json_array_size(c->rows));
			json_decref(c->rows);
			free(c);
		}
		if (!tr->stopping)
			track_arm(tr, 1000);
		return;
	}
	snprintf(label, sizeof label, "kind=\"%s\",stage=\"stored\"",
	    q->metric);
	metrics_add(tr->app->metrics, "musubi_track_events_total", label,
	    (uint64_t)db_int(res, 0, 0));
	q->head = c->next;
	if (q->tail == c)
		q->tail = NULL;
	q->n -= json_array_size(c->rows);
	json_decref(c->rows);
	free(c);
	if (q->head != NULL)
		track_arm(tr, 0);
}

/* Write the oldest chunk of a queue. */
static void
track_flush_queue(struct track *tr, struct track_queue *q)
{
	struct track_flush	*f;
	struct db_params	*p;
	char			*s;

	if (q->flushing || q->head == NULL || !db_is_ready(tr->app->db))
		return;
	if ((s = json_dumps(q->head->rows, JSON_COMPACT)) == NULL)
		fatalx("track: json_dumps failed");
	p = db_params_new();
	db_params_text(p, s);
	free(s);
	f = xcalloc(1, sizeof *f);
	f->tr = tr;
	f->q = q;
	q->flushing = 1;
	db_query(tr->app->db, q->fn, p, track_flushed_cb, f);
}

/* Timer: write what is buffered. */
static void
track_flush_cb(evutil_socket_t fd, short what, void *arg)
{
	struct track	*tr = arg;

	track_flush_queue(tr, &tr->clicks);
	track_flush_queue(tr, &tr->views);
	if (!tr->stopping)
		track_arm(tr, TRACK_FLUSH_MS);
}

/* The /c/ URL of a link. */
char *
track_click_url(const struct track *tr, int64_t channel_id, int64_t link_id,
    int64_t friend_id, int64_t run_id)
{
	struct token	 t;
	char		*tok, *url;

	memset(&t, 0, sizeof t);
	t.kind = TOKEN_CLICK;
	t.channel_id = channel_id;
	t.link_id = link_id;
	t.friend_id = friend_id;
	t.run_id = run_id;
	tok = token_encode(tr->key, &t);
	xasprintf(&url, "%s/c/%s", tr->app->cfg->public_url, tok);
	free(tok);
	return (url);
}

/* Find a cached link. */
static struct track_link *
track_link_find(struct track *tr, int64_t channel_id, int64_t id)
{
	struct track_link	**pp, *l;
	long long		  now = track_now_ms();
	size_t			  b = (size_t)(((uint64_t)id * 31 +
	    (uint64_t)channel_id) % TRACK_LINK_BUCKETS);

	for (pp = &tr->links[b]; (l = *pp) != NULL;) {
		if (l->expires <= now) {
			*pp = l->next;
			free(l->destination);
			free(l->campaign);
			free(l);
			tr->nlinks--;
			continue;
		}
		if (l->channel_id == channel_id && l->id == id)
			return (l);
		pp = &l->next;
	}
	return (NULL);
}

/* Does the query of url already have a parameter called name? */
static int
track_has_param(const char *url, const char *name)
{
	const char	*hash = strchr(url, '#'), *q, *p;
	size_t		 n = strlen(name);

	q = memchr(url, '?', hash != NULL ? (size_t)(hash - url) : strlen(url));
	if (q == NULL)
		return (0);
	for (p = q + 1; *p != '\0' && *p != '#';) {
		if (strncmp(p, name, n) == 0 && p[n] == '=')
			return (1);
		while (*p != '\0' && *p != '&' && *p != '#')
			p++;
		if (*p == '&')
			p++;
	}
	return (0);
}

/* Build the redirect target: destination + utm + attribution token. */
static char *
track_target(const char *dest, const char *campaign, const char *attr)
{
	const char	*hash = strchr(dest, '#');
	size_t		 base = hash != NULL ? (size_t)(hash - dest) :
	    strlen(dest);
	char		*enc, *extra = xstrdup(""), *tmp, *out;
	char		 sep;

	sep = memchr(dest, '?', base) != NULL ? '&' : '?';
	if (!track_has_param(dest, "utm_source")) {
		xasprintf(&tmp, "%sutm_source=line&", extra);
		free(extra);
		extra = tmp;
	}
	if (!track_has_param(dest, "utm_medium")) {
		xasprintf(&tmp, "%sutm_medium=message&", extra);
		free(extra);
		extra = tmp;
	}
	if (campaign != NULL && *campaign != '\0' &&
	    !track_has_param(dest, "utm_campaign")) {
		enc = evhttp_encode_uri(campaign);
		xasprintf(&tmp, "%sutm_campaign=%s&", extra, enc);
		free(enc);
		free(extra);
		extra = tmp;
	}
	xasprintf(&out, "%.*s%c%s" TRACK_PARAM "=%s%s", (int)base, dest, sep,
	    extra, attr, hash != NULL ? hash : "");
	free(extra);
	return (out);
}

/* Hash a client address with the key: 16 hex digits, not reversible. */
static void
track_ip_hash(const struct track *tr, const char *ip, char out[17])
{
	unsigned char	 mac[32];

	crypto_hmac_sha256(tr->key, sizeof tr->key, ip, strlen(ip), mac);
	crypto_hex(mac, 8, out);
}

/* Redirect and queue the click. */
static void
track_redirect(struct track_click *tc, const struct track_link *l)
{
	struct track	*tr = tc->tr;
	struct http_req	*req = tc->req;
	struct token	 a = tc->tok;
	char		*attr, *target, iph[17];
	const char	*ua = http_req_header(req, "User-Agent");
	json_t		*row;

	a.kind = TOKEN_ATTRIBUTION;
	a.issued_at = (int64_t)(track_epoch_ms() / 1000);
	attr = token_encode(tr->key, &a);
	target = track_target(l->destination, l->campaign, attr);
	track_ip_hash(tr, http_req_peer(req), iph);
	row = json_pack("{s:I, s:I, s:I, s:I, s:I, s:s?, s:s}",
	    "c", (json_int_t)a.channel_id, "l", (json_int_t)a.link_id,
	    "f", (json_int_t)a.friend_id, "r", (json_int_t)a.run_id,
	    "t", (json_int_t)track_epoch_ms(), "ua", NULL, "ip", iph);
	if (ua != NULL) {
		char	*u = xstrndup(ua, 300);
		json_t	*s = json_string(u);

		if (s != NULL)
			json_object_set_new(row, "ua", s);
		free(u);
	}
	track_queue_add(tr, &tr->clicks, row);
	http_reply_header(req, "Location", target);
	http_reply_header(req, "Cache-Control", "no-store");
	http_reply_header(req, "Referrer-Policy", "no-referrer");
	http_reply_raw(req, 302, NULL, NULL, 0);
	free(target);
	free(attr);
}

/* Answer a bad click. */
static void
track_not_found(struct track *tr, struct http_req *req)
{
	metrics_add(tr->app->metrics, "musubi_track_events_total",
	    "kind=\"click\",stage=\"rejected\"", 1);
	http_reply_header(req, "Cache-Control", "no-store");
	http_reply_raw(req, 404, "text/html; charset=utf-8", track_404,
	    sizeof track_404 - 1);
}

/* The link was read from PostgreSQL. */
static void
track_link_cb(const PGresult *res, const char *err, void *arg)
{
	struct track_click	*tc = arg;
	struct track		*tr = tc->tr;
	struct track_link	*l;
	size_t			 b;

	if (err != NULL) {
		log_warnx("track: rid=%s link lookup: %s",
		    http_req_id(tc->req), err);
		http_reply_header(tc->req, "Retry-After", "1");
		http_reply_raw(tc->req, 503, "text/plain; charset=utf-8",
		    "temporarily unavailable; please retry\n", 38);
		free(tc);
		return;
	}
	if ((l = track_link_find(tr, tc->tok.channel_id,
	    tc->tok.link_id)) == NULL) {
		if (tr->nlinks >= TRACK_LINK_MAX)
			log_warnx("track: link cache full");
		else {
			l = xcalloc(1, sizeof *l);
			l->channel_id = tc->tok.channel_id;
			l->id = tc->tok.link_id;
			if (PQntuples(res) > 0) {
				l->destination = xstrdup(db_value(res, 0, 0));
				l->campaign = xstrdup(db_value(res, 0, 1));
			}
			l->expires = track_now_ms() + TRACK_LINK_TTL_MS;
			b = (size_t)(((uint64_t)l->id * 31 +
			    (uint64_t)l->channel_id) % TRACK_LINK_BUCKETS);
			l->next = tr->links[b];
			tr->links[b] = l;
			tr->nlinks++;
		}
	}
	if (PQntuples(res) == 0)
		track_not_found(tr, tc->req);
	else if (l != NULL)
		track_redirect(tc, l);
	else {
		struct track_link	 tmp;

		memset(&tmp, 0, sizeof tmp);
		tmp.destination = (char *)db_value(res, 0, 0);
		tmp.campaign = (char *)db_value(res, 0, 1);
		track_redirect(tc, &tmp);
	}
	free(tc);
}

/* GET /c/{token} */
static void
track_click_cb(struct http_req *req, void *arg)
{
	struct track		*tr = arg;
	struct track_click	*tc;
	struct track_link	*l;
	struct db_params	*p;
	struct token		 tok;

	if (token_decode(tr->key, http_req_param(req, "token"), TOKEN_CLICK,
	    &tok) != 0) {
		track_not_found(tr, req);
		return;
	}
	tc = xcalloc(1, sizeof *tc);
	tc->tr = tr;
	tc->req = req;
	tc->tok = tok;
	if ((l = track_link_find(tr, tok.channel_id, tok.link_id)) != NULL) {
		if (l->destination == NULL)
			track_not_found(tr, req);
		else
			track_redirect(tc, l);
		free(tc);
		return;
	}
	p = db_params_new();
	db_params_int(p, tok.channel_id);
	db_params_int(p, tok.link_id);
	db_query(tr->app->db, "SELECT destination, coalesce(utm_campaign, "
	    "name) FROM links WHERE channel_id = $1 AND id = $2", p,
	    track_link_cb, tc);
}

/* GET|POST /t/pv and /t/pv.gif: a page view from the shop. */
static void
track_pv_cb(struct http_req *req, void *arg)
{
	struct track	*tr = arg;
	struct token	 tok;
	const char	*t = http_req_query(req, "t");
	const char	*u = http_req_query(req, "u");
	const char	*r = http_req_query(req, "r");
	int		 gif = strcmp(http_req_path(req), "/t/pv.gif") == 0;
	json_t		*row, *us, *rs;

	http_reply_header(req, "Access-Control-Allow-Origin", "*");
	http_reply_header(req, "Cache-Control", "no-store");
	if (t != NULL && u != NULL && strlen(u) <= 2000 &&
	    (strncmp(u, "https://", 8) == 0 || strncmp(u, "http://", 7) == 0) &&
	    (r == NULL || strlen(r) <= 2000) &&
	    token_decode(tr->key, t, TOKEN_ATTRIBUTION, &tok) == 0 &&
	    (us = json_string(u)) != NULL) {
		rs = r != NULL && *r != '\0' ? json_string(r) : NULL;
		row = json_pack("{s:I, s:I, s:I, s:I, s:o, s:o, s:I}",
		    "c", (json_int_t)tok.channel_id,
		    "f", (json_int_t)tok.friend_id,
		    "l", (json_int_t)tok.link_id, "r", (json_int_t)tok.run_id,
		    "u", us, "ref", rs != NULL ? rs : json_null(),
		    "t", (json_int_t)track_epoch_ms());
		track_queue_add(tr, &tr->views, row);
	} else
		metrics_add(tr->app->metrics, "musubi_track_events_total",
		    "kind=\"page_view\",stage=\"rejected\"", 1);
	if (gif)
		http_reply_raw(req, 200, "image/gif", track_gif,
		    sizeof track_gif);
	else
		http_reply_raw(req, 204, NULL, NULL, 0);
}
