/* SPDX-License-Identifier: ISC */
/*
 * main.c -- musubid: read the configuration, apply migrations, build the
 * modules in dependency order, run the event loop, and handle signals.
 *
 * Signals are libevent events, not real handlers, so the work they trigger
 * has no restrictions: SIGHUP reloads the configuration (a bad file is
 * logged and the running configuration kept); SIGTERM and SIGINT stop
 * accepting connections, let requests and queries in flight finish, and
 * exit 0, answering whatever is left with 503 once shutdown_timeout passes.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <libpq-fe.h>

#include "musubi/acquire.h"
#include "musubi/api.h"
#include "musubi/app.h"
#include "musubi/campaign.h"
#include "musubi/chancache.h"
#include "musubi/config.h"
#include "musubi/curlev.h"
#include "musubi/db.h"
#include "musubi/ec.h"
#include "musubi/httpd.h"
#include "musubi/identity.h"
#include "musubi/line_intake.h"
#include "musubi/log.h"
#include "musubi/metrics.h"
#include "musubi/migrate.h"
#include "musubi/track.h"
#include "musubi/xmalloc.h"

struct musubid {
	struct app	 app;
	struct event	*sighup;
	struct event	*sigterm;
	struct event	*sigint;
	struct event	*drain;		/* polls for the end of work */
	struct event	*deadline;	/* shutdown_timeout */
	int		 debug;		/* -d: debug logging, kept on reload */
};

NORETURN static void
usage(void)
{
	fprintf(stderr, "usage: musubid [-dhnV] [-f config-file]\n");
	exit(2);
}

/* Print every configuration key. */
static void
print_keys(void)
{
	const struct config_key_info	*k;
	size_t				 n, i;

	k = config_key_info(&n);
	printf("configuration keys (file: key = value; environment: "
	    "MUSUBI_<KEY>):\n");
	for (i = 0; i < n; i++) {
		printf("  %-22s %-20s %s%s\n", k[i].name,
		    k[i].secret ? "(secret)" : k[i].def, k[i].help,
		    k[i].reload ? "" : " [restart to change]");
	}
}

/* Apply migrations before the loop starts, waiting for PostgreSQL. */
static int
startup_migrate(const struct config *cfg, unsigned char key[TOKEN_KEY_LEN])
{
	PGconn		*conn;
	struct timespec	 start, now;
	char		*cause = NULL;
	int		 applied, warned = 0;
	long		 waited;
	char		 timeout[32];
	const char	*keys[] = { "dbname", "connect_timeout",
	    "application_name", NULL };
	const char	*values[] = { cfg->database_url, timeout, "musubid",
	    NULL };

	clock_gettime(CLOCK_MONOTONIC, &start);
	snprintf(timeout, sizeof timeout, "%ld",
	    cfg->db_connect_timeout < 2000 ? 2 : cfg->db_connect_timeout / 1000);
	for (;;) {
		conn = PQconnectdbParams(keys, values, 1);
		if (PQstatus(conn) == CONNECTION_OK)
			break;
		clock_gettime(CLOCK_MONOTONIC, &now);
		waited = (now.tv_sec - start.tv_sec) * 1000 +
		    (now.tv_nsec - start.tv_nsec) / 1000000;
		if (waited >= cfg->db_startup_wait) {
			log_error("musubid: cannot connect to PostgreSQL: %s",
			    PQerrorMessage(conn));
			PQfinish(conn);
			return (-1);
		}
		if (!warned++)
			log_warnx("musubid: PostgreSQL not reachable yet (%s); "
			    "retrying for up to %lds", PQerrorMessage(conn),
			    cfg->db_startup_wait / 1000);
		PQfinish(conn);
		usleep(500 * 1000);
	}
	if (migrate_run(conn, &applied, &cause) != 0) {
		log_error("musubid: migrations failed: %s", cause);
		free(cause);
		PQfinish(conn);
		return (-1);
	}
	log_info("musubid: schema at version %d (%d applied now)",
	    migrate_latest(), applied);
	if (track_load_key(conn, key, &cause) != 0) {
		log_error("musubid: %s", cause);
		free(cause);
		PQfinish(conn);
		return (-1);
	}
	PQfinish(conn);
	return (0);
}

/* SIGHUP: load a new configuration and swap it in if it is complete. */
static void
reload_cb(evutil_socket_t sig, short what, void *arg)
{
	struct musubid	*d = arg;
	struct config	*next = xcalloc(1, sizeof *next);
	char		*cause = NULL, *changed;
	enum log_level	 lvl;

	if (config_load(d->app.cfg->path, next, &cause) != 0) {
		log_warnx("musubid: reload failed, keeping the running "
		    "configuration: %s", cause);
		free(cause);
		free(next);
		return;
	}
	if ((changed = config_noreload_changes(d->app.cfg, next)) != NULL) {
		log_warnx("musubid: reload: %s cannot change without a "
		    "restart; keeping the running value", changed);
		free(changed);
		config_keep_noreload(d->app.cfg, next);
	}
	config_free(d->app.cfg);
	free(d->app.cfg);
	d->app.cfg = next;
	if (log_level_parse(next->log_level, &lvl) == 0)
		log_set_level(d->debug ? LOG_LEVEL_DEBUG : lvl);
	httpd_configure(d->app.httpd, next);
	api_flush_cache(d->app.api);
	chancache_flush(d->app.channels);
	log_info("musubid: configuration reloaded");
}

/* Poll until nothing is in flight, then leave the loop. */
static void
drain_cb(evutil_socket_t fd, short what, void *arg)
{
	struct musubid	*d = arg;
	struct db_stats	 st;

	db_get_stats(d->app.db, &st);
	if (httpd_inflight(d->app.httpd) == 0 && st.busy == 0 &&
	    st.queued == 0 && curlev_inflight(d->app.curl) == 0 &&
	    !line_intake_busy(d->app.line) && !ec_busy(d->app.ec) &&
	    !track_busy(d->app.track) && !campaign_busy(d->app.campaign) &&
	    !identity_busy(d->app.identity) &&
	    !acquire_busy(d->app.acquire)) {
		log_info("musubid: all work finished; exiting");
		event_base_loopexit(d->app.base, NULL);
	}
}

/* The shutdown deadline passed: answer what is left and leave. */
static void
deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct musubid	*d = arg;
	struct timeval	 flush = { 0, 200 * 1000 };

	log_warnx("musubid: shutdown_timeout reached with %zu requests in "
	    "flight; answering them with 503", httpd_inflight(d->app.httpd));
	httpd_abort_pending(d->app.httpd);
	/* Give the 503s a moment to reach their sockets. */
	event_base_loopexit(d->app.base, &flush);
}

/* SIGTERM/SIGINT: stop accepting and drain. */
static void
stop_cb(evutil_socket_t sig, short what, void *arg)
{
	struct musubid	*d = arg;
	struct timeval	 poll = { 0, 20 * 1000 }, tv;

	if (d->app.stopping) {
		log_warnx("musubid: second signal; exiting now");
		deadline_cb(-1, 0, d);
		return;
	}
	log_info("musubid: %s received; stopping (up to %ld ms)",
	    sig == SIGINT ? "SIGINT" : "SIGTERM", d->app.cfg->shutdown_timeout);
	d->app.stopping = 1;
	httpd_stop(d->app.httpd);
	line_intake_stop(d->app.line);
	ec_stop(d->app.ec);
	track_stop(d->app.track);
	identity_stop(d->app.identity);
	acquire_stop(d->app.acquire);
	campaign_stop(d->app.campaign);
	d->drain = event_new(d->app.base, -1, EV_PERSIST, drain_cb, d);
	d->deadline = evtimer_new(d->app.base, deadline_cb, d);
	tv.tv_sec = d->app.cfg->shutdown_timeout / 1000;
	tv.tv_usec = (d->app.cfg->shutdown_timeout % 1000) * 1000;
	if (event_add(d->drain, &poll) != 0 ||
	    evtimer_add(d->deadline, &tv) != 0)
		fatalx("musubid: cannot arm shutdown timers");
}

int
main(int argc, char **argv)
{
	struct musubid		 d;
	struct config		*cfg;
	struct db_config	 dbc;
	struct curlev_config	 cc;
	const char		*path = NULL;
	char			*cause = NULL;
	unsigned char		 key[TOKEN_KEY_LEN];
	int			 ch, check = 0, debug = 0;
	enum log_level		 lvl;

	log_init("musubid");
	while ((ch = getopt(argc, argv, "df:hnV")) != -1) {
		switch (ch) {
		case 'd':
			debug = 1;
			break;
		case 'f':
			path = optarg;
			break;
		case 'n':
			check = 1;
			break;
		case 'V':
			printf("musubid %s (schema %d)\n", MUSUBI_VERSION,
			    migrate_latest());
			return (0);
		case 'h':
			fprintf(stderr, "usage: musubid [-dhnV] "
			    "[-f config-file]\n");
			print_keys();
			return (0);
		default:
			usage();
		}
	}
	if (optind != argc)
		usage();

	cfg = xcalloc(1, sizeof *cfg);
	if (config_load(path, cfg, &cause) != 0) {
		fprintf(stderr, "musubid: configuration error: %s\n", cause);
		free(cause);
		free(cfg);
		return (1);
	}
	if (check) {
		printf("musubid: configuration ok%s%s\n", path ? ": " : "",
		    path ? path : "");
		config_free(cfg);
		free(cfg);
		return (0);
	}
	if (log_level_parse(cfg->log_level, &lvl) == 0)
		log_set_level(debug ? LOG_LEVEL_DEBUG : lvl);

	signal(SIGPIPE, SIG_IGN);
	if (startup_migrate(cfg, key) != 0) {
		config_free(cfg);
		free(cfg);
		return (1);
	}

	memset(&d, 0, sizeof d);
	d.debug = debug;
	d.app.cfg = cfg;
	if ((d.app.base = event_base_new()) == NULL)
		fatalx("musubid: event_base_new failed");
	d.app.metrics = metrics_new();

	memset(&dbc, 0, sizeof dbc);
	dbc.conninfo = cfg->database_url;
	dbc.application_name = "musubid";
	dbc.pool_size = cfg->db_pool_size;
	dbc.queue_max = cfg->db_queue_max;
	dbc.connect_timeout_ms = (int)cfg->db_connect_timeout;
	dbc.statement_timeout_ms = (int)cfg->db_statement_timeout;
	dbc.reconnect_min_ms = 100;
	dbc.reconnect_max_ms = 5000;
	d.app.db = db_new(d.app.base, &dbc);

	memset(&cc, 0, sizeof cc);
	cc.timeout_ms = cfg->line_api_timeout;
	cc.connect_timeout_ms = 5000;
	cc.max_response = 4 * 1024 * 1024;
	d.app.curl = curlev_new(d.app.base, &cc);

	d.app.httpd = httpd_new(d.app.base, cfg, d.app.metrics);
	d.app.channels = chancache_new(d.app.db);
	d.app.api = api_new(&d.app);
	d.app.line = line_intake_new(&d.app, d.app.channels);
	d.app.ec = ec_new(&d.app);
	d.app.track = track_new(&d.app, key);
	d.app.identity = identity_new(&d.app, key);
	d.app.acquire = acquire_new(&d.app, key);
	d.app.campaign = campaign_new(&d.app);
	explicit_bzero(key, sizeof key);
	if (httpd_listen(d.app.httpd, cfg->listen, &cause) != 0)
		fatalx("musubid: %s", cause);

	if (line_intake_start(d.app.line) != 0 ||
	    ec_start(d.app.ec) != 0 ||
	    track_start(d.app.track) != 0 ||
	    identity_start(d.app.identity) != 0 ||
	    acquire_start(d.app.acquire) != 0 ||
	    campaign_start(d.app.campaign) != 0)
		fatalx("musubid: cannot start the background work");
	d.sighup = evsignal_new(d.app.base, SIGHUP, reload_cb, &d);
	d.sigterm = evsignal_new(d.app.base, SIGTERM, stop_cb, &d);
	d.sigint = evsignal_new(d.app.base, SIGINT, stop_cb, &d);
	if (event_add(d.sighup, NULL) != 0 || event_add(d.sigterm, NULL) != 0 ||
	    event_add(d.sigint, NULL) != 0)
		fatalx("musubid: cannot install signal events");

	log_info("musubid %s listening on %s (port %d), pid %ld",
	    MUSUBI_VERSION, cfg->listen, httpd_port(d.app.httpd),
	    (long)getpid());
	event_base_dispatch(d.app.base);

	/*
	 * Normally nothing is pending here.  After a deadline, pending
	 * transfers and queries are failed first, so their callbacks can
	 * still answer their HTTP requests; httpd_free answers the rest.
	 */
	httpd_stop(d.app.httpd);
	line_intake_stop(d.app.line);
	ec_stop(d.app.ec);
	track_stop(d.app.track);
	identity_stop(d.app.identity);
	acquire_stop(d.app.acquire);
	campaign_stop(d.app.campaign);
	curlev_free(d.app.curl);
	db_free(d.app.db);
	line_intake_free(d.app.line);
	ec_free(d.app.ec);
	track_free(d.app.track);
	identity_free(d.app.identity);
	acquire_free(d.app.acquire);
	campaign_free(d.app.campaign);
	httpd_free(d.app.httpd);
	api_free(d.app.api);
	chancache_free(d.app.channels);
	if (d.drain != NULL)
		event_free(d.drain);
	if (d.deadline != NULL)
		event_free(d.deadline);
	event_free(d.sighup);
	event_free(d.sigterm);
	event_free(d.sigint);
	metrics_free(d.app.metrics);
	event_base_free(d.app.base);
	config_free(d.app.cfg);
	free(d.app.cfg);
	log_info("musubid: stopped");
	return (0);
}
