/* SPDX-License-Identifier: ISC */
/*
 * chancache.c -- a small TTL cache of channels, filled from PostgreSQL on a
 * miss.  Concurrent misses for the same key each run their own query; that
 * is rare and harmless, and keeps this module simple.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "musubi/chancache.h"
#include "musubi/db.h"
#include "musubi/xmalloc.h"

#define CHANCACHE_MAX	4096

struct chancache_entry {
	struct channel_info	 info;	/* info.id 0: known not to exist */
	char			*key;	/* slug, or "#<id>" */
	long long		 expires;	/* ms, monotonic */
	struct chancache_entry	*next;
};

struct chancache {
	struct db		*db;
	struct chancache_entry	*entries;
	size_t			 n;
};

struct chancache_lookup {
	struct chancache	*cc;
	char			*key;
	chancache_cb		*cb;
	void			*arg;
};

/* Milliseconds on the monotonic clock. */
static long long
chancache_now(void)
{
	struct timespec	 ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
}

/* Create an empty cache. */
struct chancache *
chancache_new(struct db *db)
{
	struct chancache	*cc = xcalloc(1, sizeof *cc);

	cc->db = db;
	return (cc);
}

/* Free one entry. */
static void
chancache_entry_free(struct chancache_entry *e)
{
	free((char *)e->info.slug);
	free((char *)e->info.secret);
	free((char *)e->info.token);
	free((char *)e->info.timezone);
	free(e->key);
	free(e);
}

/* Forget everything. */
void
chancache_flush(struct chancache *cc)
{
	struct chancache_entry	*e, *n;

	for (e = cc->entries; e != NULL; e = n) {
		n = e->next;
		chancache_entry_free(e);
	}
	cc->entries = NULL;
	cc->n = 0;
}

/* Free the cache. */
void
chancache_free(struct chancache *cc)
{
	if (cc == NULL)
		return;
	chancache_flush(cc);
	free(cc);
}

/* Find a live entry, dropping expired ones on the way. */
static struct chancache_entry *
chancache_find(struct chancache *cc, const char *key)
{
	struct chancache_entry	**pp, *e;
	long long		  now = chancache_now();

	for (pp = &cc->entries; (e = *pp) != NULL;) {
		if (e->expires <= now) {
			*pp = e->next;
			chancache_entry_free(e);
			cc->n--;
			continue;
		}
		if (strcmp(e->key, key) == 0)
			return (e);
		pp = &e->next;
	}
	return (NULL);
}

/* A lookup query finished. */
static void
chancache_query_cb(const PGresult *res, const char *err, void *arg)
{
	struct chancache_lookup	*l = arg;
	struct chancache	*cc = l->cc;
	struct chancache_entry	*e;

	if (err != NULL) {
		l->cb(NULL, err, l->arg);
		goto out;
	}
	if ((e = chancache_find(cc, l->key)) == NULL) {
		if (cc->n >= CHANCACHE_MAX)
			chancache_flush(cc);
		e = xcalloc(1, sizeof *e);
		e->key = xstrdup(l->key);
		if (PQntuples(res) > 0) {
			e->info.id = db_int(res, 0, 0);
			e->info.slug = xstrdup(db_value(res, 0, 1));
			e->info.secret = xstrdup(db_value(res, 0, 2));
			e->info.token = xstrdup(db_value(res, 0, 3));
			e->info.timezone = xstrdup(db_value(res, 0, 4));
		}
		e->expires = chancache_now() + (PQntuples(res) > 0 ?
		    CHANCACHE_TTL_MS : CHANCACHE_MISS_TTL_MS);
		e->next = cc->entries;
		cc->entries = e;
		cc->n++;
	}
	l->cb(e->info.id != 0 ? &e->info : NULL, NULL, l->arg);
out:
	free(l->key);
	free(l);
}

/* Look up by a key, querying on a miss. */
static void
chancache_lookup(struct chancache *cc, const char *key, const char *sql,
    struct db_params *p, chancache_cb *cb, void *arg)
{
	struct chancache_entry	*e;
	struct chancache_lookup	*l;

	if ((e = chancache_find(cc, key)) != NULL) {
		db_params_free(p);
		cb(e->info.id != 0 ? &e->info : NULL, NULL, arg);
		return;
	}
	l = xcalloc(1, sizeof *l);
	l->cc = cc;
	l->key = xstrdup(key);
	l->cb = cb;
	l->arg = arg;
	db_query(cc->db, sql, p, chancache_query_cb, l);
}

/* Look a channel up by slug. */
void
chancache_get(struct chancache *cc, const char *slug, chancache_cb *cb,
    void *arg)
{
	struct db_params	*p = db_params_new();

	db_params_text(p, slug);
	chancache_lookup(cc, slug, "SELECT id, slug, channel_secret, "
	    "access_token, timezone FROM channels WHERE slug = $1", p, cb,
	    arg);
}

/* Look a channel up by id. */
void
chancache_get_id(struct chancache *cc, int64_t id, chancache_cb *cb,
    void *arg)
{
	struct db_params	*p = db_params_new();
	char			 key[32];

	snprintf(key, sizeof key, "#%lld", (long long)id);
	db_params_int(p, id);
	chancache_lookup(cc, key, "SELECT id, slug, channel_secret, "
	    "access_token, timezone FROM channels WHERE id = $1", p, cb, arg);
}
