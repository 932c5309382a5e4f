/* SPDX-License-Identifier: ISC */
/*
 * api.c -- authentication and dispatch for /api/v1, plus /healthz, /readyz
 * and /metrics.  A request to an API route first has its key checked
 * (api_dispatch_cb -> api_key_cb), then, for channel routes, its {slug}
 * resolved (api_channel_cb); only then does the route's handler run, with
 * a struct api_ctx that lives until the reply is sent.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/buffer.h>

#include "musubi/api.h"
#include "musubi/app.h"
#include "musubi/config.h"
#include "musubi/crypto.h"
#include "musubi/db.h"
#include "musubi/httpd.h"
#include "musubi/log.h"
#include "musubi/metrics.h"
#include "musubi/migrate.h"
#include "musubi/xmalloc.h"

#define API_KEY_PREFIX		"msk_"
#define API_KEY_MAXLEN		200
#define API_CACHE_BUCKETS	256
#define API_CACHE_MAX		10000

struct api_key_entry {
	unsigned char		 hash[32];
	int64_t			 key_id;
	int			 admin;
	int64_t			 channel_id;
	char			*channel_slug;
	struct timespec		 expires;
	struct api_key_entry	*next;
};

struct api_route_entry {
	struct api		*api;
	enum api_scope		 scope;
	api_handler		*handler;
};

struct api {
	struct app		*app;
	struct api_route_entry	**routes;
	size_t			 nroutes;
	struct api_key_entry	*cache[API_CACHE_BUCKETS];
	size_t			 ncached;
};

struct api_call {
	struct api_ctx			 ctx;	/* first: freed through it */
	const struct api_route_entry	*route;
	unsigned char			 hash[32];
};

static void	api_healthz(struct http_req *, void *);
static void	api_readyz(struct http_req *, void *);
static void	api_metrics(struct http_req *, void *);
static void	api_collect_cb(struct evbuffer *, void *);

/* Hash an API key. */
void
api_key_hash(const char *key, unsigned char out[32])
{
	crypto_sha256(key, strlen(key), out);
}

/* Generate a new API key. */
char *
api_key_generate(void)
{
	char	*tok = crypto_token(32), *key;

	xasprintf(&key, API_KEY_PREFIX "%s", tok);
	free(tok);
	return (key);
}

/* Create the API and register the operational and resource routes. */
struct api *
api_new(struct app *app)
{
	struct api	*api = xcalloc(1, sizeof *api);

	api->app = app;
	httpd_route(app->httpd, HTTP_GET, "/healthz", api_healthz, api);
	httpd_route(app->httpd, HTTP_GET, "/readyz", api_readyz, api);
	httpd_route(app->httpd, HTTP_GET, "/metrics", api_metrics, api);
	metrics_collector(app->metrics, api_collect_cb, api);
	api_channels_init(api);
	api_links_init(api);
	api_campaigns_init(api);
	api_identity_init(api);
	api_friends_init(api);
	api_segments_init(api);
	api_shops_init(api);
	api_sources_init(api);
	return (api);
}

/* Drop every cached key. */
void
api_flush_cache(struct api *api)
{
	struct api_key_entry	*e, *n;
	size_t			 i;

	for (i = 0; i < API_CACHE_BUCKETS; i++) {
		for (e = api->cache[i]; e != NULL; e = n) {
			n = e->next;
			free(e->channel_slug);
			free(e);
		}
		api->cache[i] = NULL;
	}
	api->ncached = 0;
}

/* Free the API. */
void
api_free(struct api *api)
{
	size_t	 i;

	if (api == NULL)
		return;
	api_flush_cache(api);
	for (i = 0; i < api->nroutes; i++)
		free(api->routes[i]);
	free(api->routes);
	free(api);
}

/* Free a call context. */
static void
api_call_free(void *arg)
{
	struct api_call	*call = arg;

	free(call->ctx.channel_slug);
	free(call->ctx.channel_tz);
	free(call);
}

/* Find a cached, unexpired key. */
static struct api_key_entry *
api_cache_find(struct api *api, const unsigned char hash[32])
{
	struct api_key_entry	*e;
	struct timespec		 now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	for (e = api->cache[hash[0]]; e != NULL; e = e->next) {
		if (memcmp(e->hash, hash, 32) != 0)
			continue;
		if (now.tv_sec > e->expires.tv_sec ||
		    (now.tv_sec == e->expires.tv_sec &&
		    now.tv_nsec >= e->expires.tv_nsec))
			return (NULL);
		return (e);
	}
	return (NULL);
}

/* Remember a verified key for api_key_cache_ttl. */
static void
api_cache_put(struct api *api, const struct api_call *call)
{
	struct api_key_entry	*e, **pp;
	long			 ttl = api->app->cfg->api_key_cache_ttl;

	if (ttl <= 0)
		return;
	if (api->ncached >= API_CACHE_MAX)
		api_flush_cache(api);
	for (pp = &api->cache[call->hash[0]]; *pp != NULL; pp = &(*pp)->next) {
		if (memcmp((*pp)->hash, call->hash, 32) == 0) {
			e = *pp;
			*pp = e->next;
			free(e->channel_slug);
			free(e);
			api->ncached--;
			break;
		}
	}
	e = xcalloc(1, sizeof *e);
	memcpy(e->hash, call->hash, 32);
	e->key_id = call->ctx.key_id;
	e->admin = call->ctx.admin;
	e->channel_id = call->ctx.key_channel_id;
	e->channel_slug = call->ctx.channel_slug != NULL && !call->ctx.admin ?
	    xstrdup(call->ctx.channel_slug) : NULL;
	clock_gettime(CLOCK_MONOTONIC, &e->expires);
	e->expires.tv_sec += ttl / 1000;
	e->expires.tv_nsec += (ttl % 1000) * 1000000;
	if (e->expires.tv_nsec >= 1000000000) {
		e->expires.tv_sec++;
		e->expires.tv_nsec -= 1000000000;
	}
	e->next = api->cache[call->hash[0]];
	api->cache[call->hash[0]] = e;
	api->ncached++;
}

/* Reply for a failed database call. */
void
api_db_error(struct http_req *req, const char *what, const char *err)
{
	log_warnx("api: rid=%s %s: %s", http_req_id(req), what, err);
	http_reply_header(req, "Retry-After", "1");
	http_reply_error(req, 503, "database_unavailable", NULL,
	    "the database is unavailable; retry later");
}

/* The channel named in the path was looked up. */
static void
api_channel_cb(const PGresult *res, const char *err, void *arg)
{
	struct api_call	*call = arg;
	struct http_req	*req = call->ctx.req;

	if (err != NULL) {
		api_db_error(req, "channel lookup", err);
		return;
	}
	if (PQntuples(res) == 0) {
		http_reply_error(req, 404, "not_found", NULL,
		    "no such channel: %s", http_req_param(req, "slug"));
		return;
	}
	call->ctx.channel_id = db_int(res, 0, 0);
	free(call->ctx.channel_slug);
	call->ctx.channel_slug = xstrdup(db_value(res, 0, 1));
	call->ctx.channel_tz = xstrdup(db_value(res, 0, 2));
	call->route->handler(&call->ctx);
}

/* The key is known: check its scope, then resolve the channel. */
static void
api_authorized(struct api_call *call)
{
	struct http_req		*req = call->ctx.req;
	const char		*slug;
	struct db_params	*p;

	switch (call->route->scope) {
	case API_ADMIN:
		if (!call->ctx.admin) {
			http_reply_error(req, 403, "forbidden", NULL,
			    "this API key is limited to channel %s; this "
			    "route needs an admin key",
			    call->ctx.channel_slug);
			return;
		}
		break;
	case API_ANY:
		break;
	case API_CHANNEL_ADMIN:
		if (!call->ctx.admin) {
			http_reply_error(req, 403, "forbidden", NULL,
			    "this API key is limited to channel %s; this "
			    "route needs an admin key",
			    call->ctx.channel_slug);
			return;
		}
		/* FALLTHROUGH */
	case API_CHANNEL:
		slug = http_req_param(req, "slug");
		if (!call->ctx.admin && strcmp(slug,
		    call->ctx.channel_slug) != 0) {
			http_reply_error(req, 403, "forbidden", NULL,
			    "this API key is limited to channel %s",
			    call->ctx.channel_slug);
			return;
		}
		p = db_params_new();
		db_params_text(p, slug);
		db_query(call->ctx.app->db,
		    "SELECT id, slug, timezone FROM channels WHERE slug = $1",
		    p, api_channel_cb, call);
		return;
	}
	call->route->handler(&call->ctx);
}

/* The key was looked up in PostgreSQL. */
static void
api_key_cb(const PGresult *res, const char *err, void *arg)
{
	struct api_call	*call = arg;
	struct http_req	*req = call->ctx.req;

	if (err != NULL) {
		api_db_error(req, "api key lookup", err);
		return;
	}
	if (PQntuples(res) == 0) {
		http_reply_header(req, "WWW-Authenticate", "Bearer");
		http_reply_error(req, 401, "unauthorized", NULL,
		    "invalid or revoked API key");
		return;
	}
	call->ctx.key_id = db_int(res, 0, 0);
	call->ctx.admin = strcmp(db_value(res, 0, 1), "admin") == 0;
	call->ctx.key_channel_id = db_int(res, 0, 2);
	if (!call->ctx.admin && db_value(res, 0, 3) != NULL)
		call->ctx.channel_slug = xstrdup(db_value(res, 0, 3));
	api_cache_put(call->route->api, call);
	api_authorized(call);
}

/* Authenticate, then dispatch to the route's handler. */
static void
api_dispatch_cb(struct http_req *req, void *arg)
{
	const struct api_route_entry	*route = arg;
	struct api			*api = route->api;
	struct api_call			*call;
	struct api_key_entry		*e;
	struct db_params		*p;
	const char			*auth, *key;

	auth = http_req_header(req, "Authorization");
	if (auth == NULL || strncasecmp(auth, "Bearer ", 7) != 0) {
		http_reply_header(req, "WWW-Authenticate", "Bearer");
		http_reply_error(req, 401, "unauthorized", NULL,
		    "an API key is required: Authorization: Bearer KEY");
		return;
	}
	key = auth + 7;
	while (*key == ' ')
		key++;
	if (*key == '\0' || strlen(key) > API_KEY_MAXLEN) {
		http_reply_header(req, "WWW-Authenticate", "Bearer");
		http_reply_error(req, 401, "unauthorized", NULL,
		    "invalid or revoked API key");
		return;
	}
	call = xcalloc(1, sizeof *call);
	call->ctx.app = api->app;
	call->ctx.req = req;
	call->route = route;
	api_key_hash(key, call->hash);
	http_req_set_data(req, call, api_call_free);

	if ((e = api_cache_find(api, call->hash)) != NULL) {
		call->ctx.key_id = e->key_id;
		call->ctx.admin = e->admin;
		call->ctx.key_channel_id = e->channel_id;
		if (e->channel_slug != NULL)
			call->ctx.channel_slug = xstrdup(e->channel_slug);
		api_authorized(call);
		return;
	}
	p = db_params_new();
	db_params_bytea(p, call->hash, sizeof call->hash);
	db_query(api->app->db,
	    "SELECT k.id, k.scope, coalesce(k.channel_id, 0), c.slug "
	    "FROM api_keys k LEFT JOIN channels c ON c.id = k.channel_id "
	    "WHERE k.key_hash = $1 AND k.revoked_at IS NULL",
	    p, api_key_cb, call);
}

/* Register an authenticated route. */
void
api_route(struct api *api, int methods, const char *pattern,
    enum api_scope scope, api_handler *handler)
{
	struct api_route_entry	*r = xcalloc(1, sizeof *r);

	r->api = api;
	r->scope = scope;
	r->handler = handler;
	api->routes = xreallocarray(api->routes, api->nroutes + 1,
	    sizeof *api->routes);
	api->routes[api->nroutes++] = r;
	httpd_route(api->app->httpd, methods, pattern, api_dispatch_cb, r);
}

/* GET /healthz: the process is alive. */
static void
api_healthz(struct http_req *req, void *arg)
{
	http_reply_json(req, 200, json_pack("{s:s, s:s}", "status", "ok",
	    "version", MUSUBI_VERSION));
}

/* The schema version was read for /readyz. */
static void
api_readyz_cb(const PGresult *res, const char *err, void *arg)
{
	struct http_req	*req = arg;
	int64_t		 have;
	int		 want = migrate_latest();

	if (err != NULL) {
		http_reply_header(req, "Retry-After", "1");
		http_reply_error(req, 503, "database_unavailable", NULL,
		    "database not reachable: %s", err);
		return;
	}
	have = db_int(res, 0, 0);
	if (have < want) {
		http_reply_error(req, 503, "migrations_pending", NULL,
		    "database schema is at version %lld; this musubid needs "
		    "%d", (long long)have, want);
		return;
	}
	http_reply_json(req, 200, json_pack("{s:s, s:s, s:I}", "status",
	    "ready", "database", "ok", "schema_version", (json_int_t)have));
}

/* GET /readyz: the database answers and the schema is current. */
static void
api_readyz(struct http_req *req, void *arg)
{
	struct api	*api = arg;

	if (api->app->stopping) {
		http_reply_error(req, 503, "shutting_down", NULL,
		    "musubid is shutting down");
		return;
	}
	db_query(api->app->db, MIGRATE_CURRENT_SQL, NULL, api_readyz_cb, req);
}

/* GET /metrics: Prometheus text format. */
static void
api_metrics(struct http_req *req, void *arg)
{
	struct api	*api = arg;
	struct evbuffer	*buf = evbuffer_new();

	metrics_render(api->app->metrics, buf);
	http_reply_buffer(req, 200, "text/plain; version=0.0.4", buf);
	evbuffer_free(buf);
}

/* Read this process's resident memory from /proc, in bytes. */
static long
api_rss(void)
{
	FILE	*f;
	long	 pages = 0, rss = 0;

	if ((f = fopen("/proc/self/statm", "r")) == NULL)
		return (0);
	if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
		rss = 0;
	fclose(f);
	return (rss * 4096);
}

/* Add the gauges owned by other modules at scrape time. */
static void
api_collect_cb(struct evbuffer *buf, void *arg)
{
	struct api	*api = arg;
	struct db_stats	 st;

	db_get_stats(api->app->db, &st);
	evbuffer_add_printf(buf,
	    "# HELP musubi_db_connections PostgreSQL connections by state.\n"
	    "# TYPE musubi_db_connections gauge\n"
	    "musubi_db_connections{state=\"configured\"} %d\n"
	    "musubi_db_connections{state=\"open\"} %d\n"
	    "musubi_db_connections{state=\"busy\"} %d\n"
	    "# HELP musubi_db_queue_length Queries waiting for a connection.\n"
	    "# TYPE musubi_db_queue_length gauge\n"
	    "musubi_db_queue_length %zu\n"
	    "# HELP musubi_db_queries_total Queries completed.\n"
	    "# TYPE musubi_db_queries_total counter\n"
	    "musubi_db_queries_total %llu\n"
	    "# HELP musubi_db_query_errors_total Queries answered with an "
	    "error.\n"
	    "# TYPE musubi_db_query_errors_total counter\n"
	    "musubi_db_query_errors_total %llu\n"
	    "# HELP musubi_db_connects_total Successful connections.\n"
	    "# TYPE musubi_db_connects_total counter\n"
	    "musubi_db_connects_total %llu\n"
	    "# HELP musubi_db_connect_failures_total Failed connection "
	    "attempts.\n"
	    "# TYPE musubi_db_connect_failures_total counter\n"
	    "musubi_db_connect_failures_total %llu\n",
	    st.size, st.connected, st.busy, st.queued,
	    (unsigned long long)st.queries, (unsigned long long)st.errors,
	    (unsigned long long)st.connects,
	    (unsigned long long)st.connect_failures);
	evbuffer_add_printf(buf,
	    "# HELP musubi_http_connections Open client connections.\n"
	    "# TYPE musubi_http_connections gauge\n"
	    "musubi_http_connections %zu\n"
	    "# HELP musubi_http_inflight Requests being handled.\n"
	    "# TYPE musubi_http_inflight gauge\n"
	    "musubi_http_inflight %zu\n"
	    "# HELP process_resident_memory_bytes Resident memory size.\n"
	    "# TYPE process_resident_memory_bytes gauge\n"
	    "process_resident_memory_bytes %ld\n",
	    httpd_connections(api->app->httpd),
	    httpd_inflight(api->app->httpd), api_rss());
}

/* Reject keys not in the allowed list. */
int
api_reject_unknown(struct http_req *req, json_t *obj,
    const char *const *allowed)
{
	const char	*key;
	json_t		*v;
	size_t		 i;
	char		 path[300];

	json_object_foreach(obj, key, v) {
		for (i = 0; allowed[i] != NULL; i++) {
			if (strcmp(allowed[i], key) == 0)
				break;
		}
		if (allowed[i] == NULL) {
			snprintf(path, sizeof path, "/%.200s", key);
			http_reply_error(req, 422, "unknown_field", path,
			    "unknown field \"%.200s\"", key);
			return (-1);
		}
	}
	return (0);
}

/* Read a string field with length limits (in characters). */
int
api_string(struct http_req *req, json_t *obj, const char *key, int required,
    size_t minlen, size_t maxlen, const char **out)
{
	json_t		*v = json_object_get(obj, key);
	char		 path[128];
	const char	*s;
	size_t		 n = 0;

	snprintf(path, sizeof path, "/%s", key);
	*out = NULL;
	if (v == NULL || json_is_null(v)) {
		if (required) {
			http_reply_error(req, 422, "required", path,
			    "%s is required", key);
			return (-1);
		}
		return (0);
	}
	if (!json_is_string(v)) {
		http_reply_error(req, 422, "invalid_type", path,
		    "%s must be a string", key);
		return (-1);
	}
	for (s = json_string_value(v); *s != '\0'; s++) {
		if (((unsigned char)*s & 0xc0) != 0x80)
			n++;
	}
	if (n < minlen || n > maxlen) {
		http_reply_error(req, 422, "invalid_length", path,
		    "%s must be %zu to %zu characters long", key, minlen,
		    maxlen);
		return (-1);
	}
	if (strlen(json_string_value(v)) != json_string_length(v)) {
		http_reply_error(req, 422, "invalid_value", path,
		    "%s must not contain NUL characters", key);
		return (-1);
	}
	*out = json_string_value(v);
	return (0);
}
