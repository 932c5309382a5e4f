/* SPDX-License-Identifier: ISC */
/*
 * config.c -- table-driven configuration in the manner of pgbouncer's CF_ABS
 * rows and tmux's options table.  Each key has a type, a default, a help
 * line and flags; the same table drives parsing, environment overrides,
 * reload rules and `musubid -h`.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "musubi/config.h"
#include "musubi/log.h"
#include "musubi/xmalloc.h"

enum config_type {
	CONFIG_STRING,
	CONFIG_INT,
	CONFIG_DURATION,
	CONFIG_SIZE,
};

#define CONFIG_NORELOAD	0x1
#define CONFIG_SECRET	0x2

struct config_key {
	const char		*name;
	enum config_type	 type;
	size_t			 off;
	const char		*def;
	long			 min;
	long			 max;
	int			 flags;
	const char		*help;
	int			(*check)(const char *, char **);
};

static int	config_check_listen(const char *, char **);
static int	config_check_level(const char *, char **);
static int	config_check_url(const char *, char **);

#define OFF(f) offsetof(struct config, f)

static const struct config_key config_keys[] = {
	{ "listen", CONFIG_STRING, OFF(listen), "127.0.0.1:8080", 0, 0,
	  CONFIG_NORELOAD, "address and port the HTTP server listens on",
	  config_check_listen },
	{ "database_url", CONFIG_STRING, OFF(database_url),
	  "dbname=musubi", 0, 0, CONFIG_NORELOAD | CONFIG_SECRET,
	  "PostgreSQL conninfo string or URI", NULL },
	{ "db_pool_size", CONFIG_INT, OFF(db_pool_size), "8", 1, 256,
	  CONFIG_NORELOAD, "PostgreSQL connections kept open", NULL },
	{ "db_queue_max", CONFIG_INT, OFF(db_queue_max), "20000", 1, 10000000,
	  CONFIG_NORELOAD, "queries that may wait for a connection", NULL },
	{ "db_connect_timeout", CONFIG_DURATION, OFF(db_connect_timeout),
	  "5s", 100, 600000, CONFIG_NORELOAD,
	  "give up on a connection attempt after this long", NULL },
	{ "db_statement_timeout", CONFIG_DURATION, OFF(db_statement_timeout),
	  "30s", 0, 3600000, CONFIG_NORELOAD,
	  "server-side statement_timeout (0 = none)", NULL },
	{ "db_startup_wait", CONFIG_DURATION, OFF(db_startup_wait), "30s",
	  0, 3600000, CONFIG_NORELOAD,
	  "at start, keep retrying PostgreSQL this long before giving up", NULL },
	{ "log_level", CONFIG_STRING, OFF(log_level), "info", 0, 0, 0,
	  "debug, info, warn or error", config_check_level },
	{ "http_max_body", CONFIG_SIZE, OFF(http_max_body), "1m", 1024,
	  64L * 1024 * 1024, 0, "largest request body accepted (413 above)", NULL },
	{ "http_max_headers", CONFIG_SIZE, OFF(http_max_headers), "16k", 1024,
	  1024 * 1024, 0, "largest request header block accepted", NULL },
	{ "http_timeout", CONFIG_DURATION, OFF(http_timeout), "30s", 100,
	  3600000, 0, "close a connection idle or stalled this long", NULL },
	{ "http_max_connections", CONFIG_INT, OFF(http_max_connections),
	  "4096", 1, 1000000, 0, "open client connections (503 above)", NULL },
	{ "http_max_inflight", CONFIG_INT, OFF(http_max_inflight), "8192", 1,
	  1000000, 0, "requests handled at once (503 above)", NULL },
	{ "shutdown_timeout", CONFIG_DURATION, OFF(shutdown_timeout), "10s",
	  0, 600000, 0, "on SIGTERM, wait this long for work in flight", NULL },
	{ "api_key_cache_ttl", CONFIG_DURATION, OFF(api_key_cache_ttl), "5s",
	  0, 3600000, 0,
	  "how long a verified API key is trusted without asking PostgreSQL", NULL },
	{ "intake_max_commits", CONFIG_INT, OFF(intake_max_commits), "1", 1,
	  64, CONFIG_NORELOAD,
	  "webhook group commits in flight at once; fewer means larger "
	  "batches", NULL },
	{ "line_api_base", CONFIG_STRING, OFF(line_api_base),
	  "https://api.line.me", 0, 0, 0,
	  "LINE Messaging API base URL (line-sandbox in tests and the demo)",
	  config_check_url },
	{ "line_access_base", CONFIG_STRING, OFF(line_access_base),
	  "https://access.line.me", 0, 0, 0,
	  "LINE's user-facing base URL (account-link dialog, LINE Login); "
	  "line-sandbox in tests and the demo", config_check_url },
	{ "line_api_timeout", CONFIG_DURATION, OFF(line_api_timeout), "10s",
	  100, 600000, CONFIG_NORELOAD, "timeout of one request to the LINE API", NULL },
	{ "public_url", CONFIG_STRING, OFF(public_url), "", 0, 0, 0,
	  "external base URL of musubid, for links it hands out "
	  "(default: http://<listen>)", config_check_url },
	{ "line_multicast_rps", CONFIG_INT, OFF(line_multicast_rps), "200", 0,
	  100000, 0, "multicast requests/s per channel, shared by every "
	  "musubid (0 = no limit)", NULL },
	{ "line_push_rps", CONFIG_INT, OFF(line_push_rps), "2000", 0, 100000,
	  0, "push requests/s per channel, shared by every musubid "
	  "(0 = no limit)", NULL },
	{ "send_concurrency", CONFIG_INT, OFF(send_concurrency), "64", 1, 4096,
	  0, "campaign requests to LINE in flight at once", NULL },
	{ "send_lease", CONFIG_DURATION, OFF(send_lease), "60s", 1000,
	  3600000, 0, "a claimed batch or run preparation is this process's "
	  "for this long; after a crash, others resume it then (keep it "
	  "above line_api_timeout)", NULL },
	{ "campaign_poll", CONFIG_DURATION, OFF(campaign_poll), "1s", 10,
	  60000, 0, "how often the campaign scheduler looks for due runs",
	  NULL },
};

/* Check a host:port value. */
static int
config_check_listen(const char *v, char **cause)
{
	char	*host = NULL;
	int	 port;

	if (config_split_hostport(v, &host, &port, cause) != 0)
		return (-1);
	free(host);
	return (0);
}

/* Check a log level name. */
static int
config_check_level(const char *v, char **cause)
{
	enum log_level	 lvl;

	if (log_level_parse(v, &lvl) != 0) {
		xsetcause(cause, "unknown level %s (use debug, info, warn or "
		    "error)", v);
		return (-1);
	}
	return (0);
}

/* Check an http(s) base URL (empty allowed). */
static int
config_check_url(const char *v, char **cause)
{
	if (*v != '\0' && strncmp(v, "http://", 7) != 0 &&
	    strncmp(v, "https://", 8) != 0) {
		xsetcause(cause, "must start with http:// or https://: %s", v);
		return (-1);
	}
	return (0);
}

/* Return the table as public descriptions. */
const struct config_key_info *
config_key_info(size_t *n)
{
	static struct config_key_info info[nitems(config_keys)];
	size_t	 i;

	for (i = 0; i < nitems(config_keys); i++) {
		info[i].name = config_keys[i].name;
		info[i].def = config_keys[i].def;
		info[i].help = config_keys[i].help;
		info[i].reload = !(config_keys[i].flags & CONFIG_NORELOAD);
		info[i].secret = !!(config_keys[i].flags & CONFIG_SECRET);
	}
	*n = nitems(config_keys);
	return (info);
}

/* Parse a duration into milliseconds. */
int
config_parse_duration(const char *s, long *ms, char **cause)
{
	char	*end;
	long	 n, mult = 1000;

	errno = 0;
	n = strtol(s, &end, 10);
	if (end == s || n < 0 || errno != 0) {
		xsetcause(cause, "bad duration: %s", s);
		return (-1);
	}
	if (strcmp(end, "ms") == 0)
		mult = 1;
	else if (*end == '\0' || strcmp(end, "s") == 0)
		mult = 1000;
	else if (strcmp(end, "m") == 0)
		mult = 60 * 1000;
	else if (strcmp(end, "h") == 0)
		mult = 3600 * 1000;
	else {
		xsetcause(cause, "bad duration unit: %s (use ms, s, m or h)",
		    s);
		return (-1);
	}
	if (n > LONG_MAX / mult) {
		xsetcause(cause, "duration too large: %s", s);
		return (-1);
	}
	*ms = n * mult;
	return (0);
}

/* Parse a size in bytes with an optional k or m suffix. */
int
config_parse_size(const char *s, long *bytes, char **cause)
{
	char	*end;
	long	 n, mult = 1;

	errno = 0;
	n = strtol(s, &end, 10);
	if (end == s || n < 0 || errno != 0) {
		xsetcause(cause, "bad size: %s", s);
		return (-1);
	}
	if (*end == 'k' || *end == 'K')
		mult = 1024;
	else if (*end == 'm' || *end == 'M')
		mult = 1024 * 1024;
	else if (*end != '\0') {
		xsetcause(cause, "bad size unit: %s (use k or m)", s);
		return (-1);
	}
	if (*end != '\0' && end[1] != '\0' && strcasecmp(end + 1, "b") != 0) {
		xsetcause(cause, "bad size unit: %s (use k or m)", s);
		return (-1);
	}
	if (n > LONG_MAX / mult) {
		xsetcause(cause, "size too large: %s", s);
		return (-1);
	}
	*bytes = n * mult;
	return (0);
}

/* Split host:port. */
int
config_split_hostport(const char *s, char **host, int *port, char **cause)
{
	const char	*colon;
	char		*end;
	long		 p;

	if (s[0] == '[') {
		const char *close = strchr(s, ']');

		if (close == NULL || close[1] != ':') {
			xsetcause(cause, "bad address: %s", s);
			return (-1);
		}
		*host = xstrndup(s + 1, (size_t)(close - s - 1));
		colon = close + 1;
	} else {
		if ((colon = strrchr(s, ':')) == NULL || colon == s) {
			xsetcause(cause, "bad address: %s (want host:port)", s);
			return (-1);
		}
		*host = xstrndup(s, (size_t)(colon - s));
	}
	errno = 0;
	p = strtol(colon + 1, &end, 10);
	if (*end != '\0' || end == colon + 1 || p < 0 || p > 65535 ||
	    errno != 0) {
		xsetcause(cause, "bad port in %s", s);
		free(*host);
		*host = NULL;
		return (-1);
	}
	*port = (int)p;
	return (0);
}

/* Store one value into the struct, checking type and range. */
static int
config_set(struct config *cfg, const struct config_key *k, const char *v,
    char **cause)
{
	char	*end, *inner = NULL;
	long	 n;

	switch (k->type) {
	case CONFIG_STRING: {
		char **p = (char **)((char *)cfg + k->off);

		if (k->check != NULL && k->check(v, &inner) != 0)
			goto bad;
		free(*p);
		*p = xstrdup(v);
		return (0);
	}
	case CONFIG_INT:
		errno = 0;
		n = strtol(v, &end, 10);
		if (end == v || *end != '\0' || errno != 0) {
			xsetcause(cause, "%s: not a number: %s", k->name, v);
			return (-1);
		}
		break;
	case CONFIG_DURATION:
		if (config_parse_duration(v, &n, &inner) != 0)
			goto bad;
		break;
	case CONFIG_SIZE:
		if (config_parse_size(v, &n, &inner) != 0)
			goto bad;
		break;
	default:
		fatalx("config: bad type for %s", k->name);
	}
	if (n < k->min || n > k->max) {
		xsetcause(cause, "%s: %s is out of range", k->name, v);
		return (-1);
	}
	if (k->type == CONFIG_INT)
		*(int *)((char *)cfg + k->off) = (int)n;
	else
		*(long *)((char *)cfg + k->off) = n;
	return (0);
bad:
	xsetcause(cause, "%s: %s", k->name, inner);
	free(inner);
	return (-1);
}

/* Find a key by name. */
static const struct config_key *
config_find(const char *name)
{
	size_t	 i;

	for (i = 0; i < nitems(config_keys); i++) {
		if (strcmp(config_keys[i].name, name) == 0)
			return (&config_keys[i]);
	}
	return (NULL);
}

/* Trim spaces at both ends in place. */
static char *
config_trim(char *s)
{
	char	*e;

	while (isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return (s);
}

/* Read the file's key = value lines. */
static int
config_read_file(const char *path, struct config *cfg, char **cause)
{
	FILE			*f;
	char			*line = NULL, *p, *key, *val, *inner = NULL;
	size_t			 cap = 0;
	ssize_t			 len;
	int			 lineno = 0, rc = -1;
	const struct config_key	*k;

	if ((f = fopen(path, "r")) == NULL) {
		xsetcause(cause, "%s: %s", path, strerror(errno));
		return (-1);
	}
	while ((len = getline(&line, &cap, f)) != -1) {
		lineno++;
		p = config_trim(line);
		if (*p == '\0' || *p == '#' || *p == ';')
			continue;
		if ((val = strchr(p, '=')) == NULL) {
			xsetcause(cause, "%s:%d: expected key = value", path,
			    lineno);
			goto out;
		}
		*val++ = '\0';
		key = config_trim(p);
		val = config_trim(val);
		len = (ssize_t)strlen(val);
		if (len >= 2 && ((val[0] == '"' && val[len - 1] == '"') ||
		    (val[0] == '\'' && val[len - 1] == '\''))) {
			val[len - 1] = '\0';
			val++;
		}
		if ((k = config_find(key)) == NULL) {
			xsetcause(cause, "%s:%d: unknown key: %s", path,
			    lineno, key);
			goto out;
		}
		if (config_set(cfg, k, val, &inner) != 0) {
			xsetcause(cause, "%s:%d: %s", path, lineno, inner);
			goto out;
		}
	}
	if (ferror(f)) {
		xsetcause(cause, "%s: %s", path, strerror(errno));
		goto out;
	}
	rc = 0;
out:
	free(inner);
	free(line);
	fclose(f);
	return (rc);
}

/* Fill in values derived from others. */
static int
config_check(struct config *cfg, char **cause)
{
	size_t	 n;

	if (*cfg->public_url == '\0') {
		free(cfg->public_url);
		xasprintf(&cfg->public_url, "http://%s", cfg->listen);
	}
	while ((n = strlen(cfg->public_url)) > 1 &&
	    cfg->public_url[n - 1] == '/')
		cfg->public_url[n - 1] = '\0';
	while ((n = strlen(cfg->line_access_base)) > 1 &&
	    cfg->line_access_base[n - 1] == '/')
		cfg->line_access_base[n - 1] = '\0';
	while ((n = strlen(cfg->line_api_base)) > 1 &&
	    cfg->line_api_base[n - 1] == '/')
		cfg->line_api_base[n - 1] = '\0';
	if (*cfg->line_api_base == '\0') {
		xsetcause(cause, "line_api_base: must not be empty");
		return (-1);
	}
	return (0);
}

/* Load defaults, the file and the environment. */
int
config_load(const char *path, struct config *cfg, char **cause)
{
	const struct config_key	*k;
	char			 env[128], *inner = NULL;
	const char		*v;
	size_t			 i, j;

	memset(cfg, 0, sizeof *cfg);
	for (i = 0; i < nitems(config_keys); i++) {
		if (config_set(cfg, &config_keys[i], config_keys[i].def,
		    &inner) != 0)
			fatalx("config: bad default: %s", inner);
	}
	if (path != NULL) {
		cfg->path = xstrdup(path);
		if (config_read_file(path, cfg, cause) != 0)
			goto fail;
	}
	for (i = 0; i < nitems(config_keys); i++) {
		k = &config_keys[i];
		snprintf(env, sizeof env, "MUSUBI_%s", k->name);
		for (j = 7; env[j] != '\0'; j++)
			env[j] = (char)toupper((unsigned char)env[j]);
		if ((v = getenv(env)) == NULL || *v == '\0')
			continue;
		if (config_set(cfg, k, v, &inner) != 0) {
			xsetcause(cause, "%s: %s", env, inner);
			free(inner);
			goto fail;
		}
	}
	if (config_check(cfg, cause) != 0)
		goto fail;
	return (0);
fail:
	config_free(cfg);
	return (-1);
}

/* Free the strings of a config. */
void
config_free(struct config *cfg)
{
	size_t	 i;

	for (i = 0; i < nitems(config_keys); i++) {
		if (config_keys[i].type == CONFIG_STRING) {
			char **p = (char **)((char *)cfg + config_keys[i].off);

			free(*p);
			*p = NULL;
		}
	}
	free(cfg->path);
	cfg->path = NULL;
}

/* Compare one key's value in two configs. */
static int
config_differs(const struct config_key *k, const struct config *a,
    const struct config *b)
{
	switch (k->type) {
	case CONFIG_STRING:
		return (strcmp(*(char *const *)((const char *)a + k->off),
		    *(char *const *)((const char *)b + k->off)) != 0);
	case CONFIG_INT:
		return (*(const int *)((const char *)a + k->off) !=
		    *(const int *)((const char *)b + k->off));
	default:
		return (*(const long *)((const char *)a + k->off) !=
		    *(const long *)((const char *)b + k->off));
	}
}

/* List no-reload keys whose value changed. */
char *
config_noreload_changes(const struct config *running,
    const struct config *next)
{
	char	*out = NULL, *tmp;
	size_t	 i;

	for (i = 0; i < nitems(config_keys); i++) {
		if (!(config_keys[i].flags & CONFIG_NORELOAD))
			continue;
		if (!config_differs(&config_keys[i], running, next))
			continue;
		if (out == NULL)
			out = xstrdup(config_keys[i].name);
		else {
			xasprintf(&tmp, "%s, %s", out, config_keys[i].name);
			free(out);
			out = tmp;
		}
	}
	return (out);
}

/* Copy the running no-reload values into next. */
void
config_keep_noreload(const struct config *running, struct config *next)
{
	const struct config_key	*k;
	size_t			 i;

	for (i = 0; i < nitems(config_keys); i++) {
		k = &config_keys[i];
		if (!(k->flags & CONFIG_NORELOAD))
			continue;
		switch (k->type) {
		case CONFIG_STRING: {
			char **dst = (char **)((char *)next + k->off);

			free(*dst);
			*dst = xstrdup(*(char *const *)((const char *)running +
			    k->off));
			break;
		}
		case CONFIG_INT:
			*(int *)((char *)next + k->off) =
			    *(const int *)((const char *)running + k->off);
			break;
		default:
			*(long *)((char *)next + k->off) =
			    *(const long *)((const char *)running + k->off);
			break;
		}
	}
}
