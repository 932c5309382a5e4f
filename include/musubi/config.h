/* SPDX-License-Identifier: ISC */
/*
 * config.h -- musubid's configuration: a table of keys (config_keys[] in
 * config.c) read from an optional "key = value" file, then overridden by
 * environment variables named MUSUBI_<KEY> (MUSUBI_DATABASE_URL,
 * MUSUBI_LISTEN, ...).  Every key is documented in docs/operations.md.
 *
 * SIGHUP parses a new struct config; it replaces the running one only when
 * complete and valid.  Keys marked no-reload keep their running value and a
 * warning says a restart is needed.
 */
#ifndef MUSUBI_CONFIG_H
#define MUSUBI_CONFIG_H

#include <stddef.h>

#include "musubi/compat.h"

struct config {
	char	*path;			/* file read, or NULL */

	char	*listen;		/* host:port */
	char	*database_url;		/* secret: never logged */
	int	 db_pool_size;
	int	 db_queue_max;
	long	 db_connect_timeout;	/* ms */
	long	 db_statement_timeout;	/* ms */
	long	 db_startup_wait;	/* ms */

	char	*log_level;
	long	 http_max_body;		/* bytes */
	long	 http_max_headers;	/* bytes */
	long	 http_timeout;		/* ms, idle/slow client */
	int	 http_max_connections;
	int	 http_max_inflight;	/* requests being handled at once */
	long	 shutdown_timeout;	/* ms */
	long	 api_key_cache_ttl;	/* ms */
	int	 intake_max_commits;	/* group commits in flight */

	char	*line_api_base;
	char	*line_access_base;
	long	 line_api_timeout;	/* ms */
	char	*public_url;

	int	 line_multicast_rps;	/* per channel; 0 = unlimited */
	int	 line_push_rps;		/* per channel; 0 = unlimited */
	int	 send_concurrency;	/* LINE requests in flight */
	long	 send_lease;		/* ms a claimed batch/run is ours */
	long	 campaign_poll;		/* ms between scheduler passes */
};

/* Defaults, then the file (if path != NULL), then the environment. */
int	 config_load(const char *path, struct config *, char **cause);
void	 config_free(struct config *);
/* Keys that differ and cannot change without a restart; new string or NULL. */
char	*config_noreload_changes(const struct config *running,
	    const struct config *next);
/* Keep the running value of every no-reload key in next. */
void	 config_keep_noreload(const struct config *running,
	    struct config *next);

/* Parse "250ms", "30s", "5m", "2h" or plain seconds into milliseconds. */
int	 config_parse_duration(const char *, long *ms, char **cause);
/* Parse "512", "64k", "1m" (KiB/MiB) into bytes. */
int	 config_parse_size(const char *, long *bytes, char **cause);
/* Split "host:port" ("[::1]:8080" too); host and port are new strings. */
int	 config_split_hostport(const char *, char **host, int *port,
	    char **cause);

/* Describe every key (name, default, help) on a FILE for `musubid -h`. */
struct config_key_info {
	const char	*name;
	const char	*def;
	const char	*help;
	int		 reload;
	int		 secret;
};
const struct config_key_info *config_key_info(size_t *n);

#endif
