/* SPDX-License-Identifier: ISC */
/*
 * test_db.c -- the libpq pool (db.c) on a real event_base against the real
 * PostgreSQL named by MUSUBI_TEST_DATABASE_URL.  The tests fail, never skip,
 * when it is unset.  Every wait runs the loop under a deadline timer that
 * calls event_base_loopexit, so a bug fails a test instead of hanging it.
 * A separate blocking connection ("admin") sets up tables, checks rows and
 * kills the pool's backends.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <libpq-fe.h>

#include "musubi/db.h"

#define NCOLS	4

/* What one callback saw, copied since the result is borrowed. */
struct ans {
	int		 called;
	int		 sync;		/* ran inside db_query/db_batch_run */
	int		 seq;		/* order among all callbacks */
	int		 has_res;
	ExecStatusType	 status;
	int		 has_err;
	char		 err[256];
	char		 sqlstate[8];
	int		 ntuples;
	int		 null[NCOLS];
	char		 v[NCOLS][128];
};

struct fx {
	struct event_base	*base;
	struct db		*db;
	const char		*url;
	char			 app[64];
	char			 table[64];
};

static int	 in_db_call;
static int	 next_seq;

/* Record an answer. */
static void
ans_cb(const PGresult *res, const char *err, void *arg)
{
	struct ans	*a = arg;
	int		 i;

	a->called++;
	a->sync = a->sync || in_db_call;
	a->seq = next_seq++;
	a->has_res = res != NULL;
	a->has_err = err != NULL;
	if (err != NULL)
		snprintf(a->err, sizeof a->err, "%s", err);
	if (res == NULL)
		return;
	a->status = PQresultStatus(res);
	snprintf(a->sqlstate, sizeof a->sqlstate, "%s", db_sqlstate(res));
	a->ntuples = PQntuples(res);
	for (i = 0; i < NCOLS; i++) {
		const char	*v = db_value(res, 0, i);

		a->null[i] = v == NULL;
		snprintf(a->v[i], sizeof a->v[i], "%s", v != NULL ? v : "");
	}
}

/* Run db_query, noting that we are inside it. */
static int
query(struct fx *f, const char *sql, struct db_params *p, struct ans *a)
{
	int	 rc;

	in_db_call = 1;
	rc = db_query(f->db, sql, p, ans_cb, a);
	in_db_call = 0;
	return (rc);
}

/* Run db_batch_run, noting that we are inside it. */
static int
batch(struct fx *f, struct db_batch *b, struct ans *a)
{
	int	 rc;

	in_db_call = 1;
	rc = db_batch_run(f->db, b, ans_cb, a);
	in_db_call = 0;
	return (rc);
}

struct wait {
	struct event_base	*base;
	int			(*pred)(void *);
	void			*arg;
	int			 timed_out;
};

/* Stop the loop once the condition holds. */
static void
wait_tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct wait	*w = arg;

	if (w->pred != NULL && w->pred(w->arg))
		event_base_loopexit(w->base, NULL);
}

/* Safety net: stop the loop when time is up. */
static void
wait_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct wait	*w = arg;

	w->timed_out = 1;
	event_base_loopexit(w->base, NULL);
}

/* Run the loop until pred(arg) holds or ms pass; return pred(arg). */
static int
run_until(struct event_base *base, int (*pred)(void *), void *arg, int ms)
{
	struct wait	 w = { base, pred, arg, 0 };
	struct event	*tick, *deadline;
	struct timeval	 tv = { 0, 2000 };
	struct timeval	 dl = { ms / 1000, (ms % 1000) * 1000 };

	if (pred != NULL && pred(arg))
		return (1);
	tick = event_new(base, -1, EV_PERSIST, wait_tick_cb, &w);
	deadline = evtimer_new(base, wait_deadline_cb, &w);
	assert_non_null(tick);
	assert_non_null(deadline);
	assert_int_equal(event_add(tick, &tv), 0);
	assert_int_equal(evtimer_add(deadline, &dl), 0);
	assert_int_equal(event_base_dispatch(base), 0);
	event_free(tick);
	event_free(deadline);
	return (pred == NULL ? 1 : pred(arg));
}

/* Run the loop for ms. */
static void
run_for(struct event_base *base, int ms)
{
	run_until(base, NULL, NULL, ms);
}

/* Condition: one answer arrived. */
static int
answered(void *arg)
{
	return (((struct ans *)arg)->called > 0);
}

struct many {
	struct ans	*a;
	int		 n;
};

/* Condition: every answer of an array arrived. */
static int
all_answered(void *arg)
{
	struct many	*m = arg;
	int		 i;

	for (i = 0; i < m->n; i++) {
		if (m->a[i].called == 0)
			return (0);
	}
	return (1);
}

/* Condition: every connection of the pool is open. */
static int
pool_full(void *arg)
{
	struct db_stats	 st;

	db_get_stats(arg, &st);
	return (st.connected == st.size);
}

/* Condition: the pool has an open connection. */
static int
pool_ready(void *arg)
{
	return (db_is_ready(arg));
}

/* Wait for one answer and check it came once, from the loop. */
static void
wait_ans(struct fx *f, struct ans *a)
{
	assert_true(run_until(f->base, answered, a, 5000));
	assert_int_equal(a->called, 1);
	assert_false(a->sync);
}

/* Drop the side connection's notices. */
static void
quiet_cb(void *arg, const char *msg)
{
}

/* Run a statement on a blocking side connection; caller clears. */
static PGresult *
admin(struct fx *f, const char *sql, const char *p1)
{
	PGconn		*conn;
	PGresult	*res;
	const char	*params[1] = { p1 };

	conn = PQconnectdb(f->url);
	if (PQstatus(conn) != CONNECTION_OK)
		fail_msg("admin connection: %s", PQerrorMessage(conn));
	PQsetNoticeProcessor(conn, quiet_cb, NULL);
	res = PQexecParams(conn, sql, p1 != NULL ? 1 : 0, NULL, params, NULL,
	    NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK &&
	    PQresultStatus(res) != PGRES_COMMAND_OK)
		fail_msg("admin: %s: %s", sql, PQresultErrorMessage(res));
	PQfinish(conn);
	return (res);
}

/* Run a side statement and return its first value as a number. */
static int64_t
admin_int(struct fx *f, const char *sql, const char *p1)
{
	PGresult	*res = admin(f, sql, p1);
	int64_t		 v = db_int(res, 0, 0);

	PQclear(res);
	return (v);
}

/* Build a pool config for the test database. */
static struct db_config
fx_config(struct fx *f, int pool_size, int queue_max)
{
	struct db_config	 cfg;

	memset(&cfg, 0, sizeof cfg);
	cfg.conninfo = f->url;
	cfg.application_name = f->app;
	cfg.pool_size = pool_size;
	cfg.queue_max = queue_max;
	cfg.connect_timeout_ms = 3000;
	cfg.reconnect_min_ms = 20;
	cfg.reconnect_max_ms = 200;
	return (cfg);
}

/* Open a pool and wait until all its connections are up. */
static void
fx_open_cfg(struct fx *f, const struct db_config *cfg)
{
	f->db = db_new(f->base, cfg);
	assert_non_null(f->db);
	if (!run_until(f->base, pool_full, f->db, 5000))
		fail_msg("pool did not connect to %s", f->url);
}

/* Open a pool with the usual settings. */
static void
fx_open(struct fx *f, int pool_size, int queue_max)
{
	struct db_config	 cfg = fx_config(f, pool_size, queue_max);

	fx_open_cfg(f, &cfg);
}

/* Make a fresh scratch table for this process. */
static void
fx_table(struct fx *f)
{
	char		 sql[256];
	PGresult	*res;

	snprintf(sql, sizeof sql, "DROP TABLE IF EXISTS %s", f->table);
	PQclear(admin(f, sql, NULL));
	snprintf(sql, sizeof sql,
	    "CREATE TABLE %s (id int PRIMARY KEY, note text)", f->table);
	res = admin(f, sql, NULL);
	PQclear(res);
}

/* Per test: a base, a unique application_name, the database URL. */
static int
setup(void **state)
{
	struct fx	*f;
	const char	*url = getenv("MUSUBI_TEST_DATABASE_URL");

	if (url == NULL || *url == '\0') {
		fprintf(stderr, "test_db: MUSUBI_TEST_DATABASE_URL is not set; "
		    "these tests need a PostgreSQL server (scripts/test.sh "
		    "starts one)\n");
		return (-1);
	}
	f = calloc(1, sizeof *f);
	assert_non_null(f);
	f->url = url;
	f->base = event_base_new();
	assert_non_null(f->base);
	snprintf(f->app, sizeof f->app, "musubi_test_db_%ld", (long)getpid());
	snprintf(f->table, sizeof f->table, "musubi_test_db_%ld",
	    (long)getpid());
	in_db_call = 0;
	next_seq = 0;
	*state = f;
	return (0);
}

/* Free the pool and base; drop the scratch table. */
static int
teardown(void **state)
{
	struct fx	*f = *state;
	char		 sql[128];

	db_free(f->db);
	event_base_free(f->base);
	snprintf(sql, sizeof sql, "DROP TABLE IF EXISTS %s", f->table);
	PQclear(admin(f, sql, NULL));
	free(f);
	return (0);
}

/* A plain SELECT returns its rows. */
static void
test_db_simple_query_returns_rows(void **state)
{
	struct fx	*f = *state;
	struct ans	 a = { 0 };

	fx_open(f, 1, 10);
	assert_int_equal(query(f, "SELECT g, 'row ' || g FROM "
	    "generate_series(1, 3) g", NULL, &a), 0);
	wait_ans(f, &a);
	assert_false(a.has_err);
	assert_true(a.has_res);
	assert_int_equal(a.status, PGRES_TUPLES_OK);
	assert_int_equal(a.ntuples, 3);
	assert_string_equal(a.v[0], "1");
	assert_string_equal(a.v[1], "row 1");
}

/* NULL, numbers, booleans and hostile text go out of line as data. */
static void
test_db_params_stay_data(void **state)
{
	struct fx		*f = *state;
	struct ans		 a = { 0 }, b = { 0 };
	struct db_params	*p;
	const char		*evil = "Robert'); DROP TABLE students; --";

	fx_open(f, 1, 10);
	p = db_params_new();
	db_params_null(p);
	db_params_int(p, INT64_C(-9007199254740993));
	db_params_text(p, evil);
	db_params_textn(p, "it's \"quoted\"XXXX", 13);
	assert_int_equal(db_params_count(p), 4);
	assert_int_equal(query(f, "SELECT $1::text, $2::bigint, $3::text, "
	    "$4::text", p, &a), 0);
	wait_ans(f, &a);
	assert_false(a.has_err);
	assert_true(a.null[0]);
	assert_string_equal(a.v[1], "-9007199254740993");
	assert_string_equal(a.v[2], evil);
	assert_string_equal(a.v[3], "it's \"quoted\"");

	p = db_params_new();
	db_params_bool(p, 1);
	db_params_bool(p, 0);
	db_params_text(p, NULL);
	db_params_text(p, "$1; SELECT 1");
	assert_int_equal(query(f, "SELECT $1::boolean, $2::boolean, "
	    "$3::text IS NULL, length($4)", p, &b), 0);
	wait_ans(f, &b);
	assert_false(b.has_err);
	assert_string_equal(b.v[0], "t");
	assert_string_equal(b.v[1], "f");
	assert_string_equal(b.v[2], "t");
	assert_string_equal(b.v[3], "12");
}

struct bytea_ans {
	int		 called;
	unsigned char	*data;
	size_t		 len;
	int64_t		 server_len;
	char		 err[256];
};

/* Unescape the bytea that came back. */
static void
bytea_cb(const PGresult *res, const char *err, void *arg)
{
	struct bytea_ans	*b = arg;
	const char		*v;

	b->called++;
	if (err != NULL) {
		snprintf(b->err, sizeof b->err, "%s", err);
		return;
	}
	if ((v = db_value(res, 0, 0)) != NULL)
		b->data = PQunescapeBytea((const unsigned char *)v, &b->len);
	b->server_len = db_int(res, 0, 1);
}

/* Condition: the bytea answer arrived. */
static int
bytea_answered(void *arg)
{
	return (((struct bytea_ans *)arg)->called > 0);
}

/* Binary bytea parameters survive the round trip, NUL bytes included. */
static void
test_db_bytea_binary_roundtrip(void **state)
{
	struct fx		*f = *state;
	struct bytea_ans	 b = { 0 };
	struct db_params	*p;
	unsigned char		 buf[256];
	size_t			 i;

	for (i = 0; i < sizeof buf; i++)
		buf[i] = (unsigned char)(255 - i);
	fx_open(f, 1, 10);
	p = db_params_new();
	db_params_bytea(p, buf, sizeof buf);
	assert_int_equal(db_query(f->db, "SELECT $1, length($1)", p,
	    bytea_cb, &b), 0);
	assert_true(run_until(f->base, bytea_answered, &b, 5000));
	assert_int_equal(b.called, 1);
	assert_string_equal(b.err, "");
	assert_int_equal(b.server_len, 256);
	assert_non_null(b.data);
	assert_int_equal(b.len, sizeof buf);
	assert_memory_equal(b.data, buf, sizeof buf);
	PQfreemem(b.data);
}

/* A rejected statement yields the error result and its SQLSTATE. */
static void
test_db_server_error_gives_result(void **state)
{
	struct fx	*f = *state;
	struct ans	 a = { 0 }, b = { 0 }, c = { 0 };

	fx_open(f, 1, 10);
	assert_int_equal(query(f, "SELECT 1/0", NULL, &a), 0);
	assert_int_equal(query(f, "SELEC 1", NULL, &b), 0);
	assert_int_equal(query(f, "SELECT 'still fine'", NULL, &c), 0);
	wait_ans(f, &a);
	wait_ans(f, &b);
	wait_ans(f, &c);
	assert_true(a.has_res);
	assert_int_equal(a.status, PGRES_FATAL_ERROR);
	assert_string_equal(a.err, "division by zero");
	assert_string_equal(a.sqlstate, "22012");
	assert_true(b.has_res);
	assert_string_equal(b.sqlstate, "42601");
	assert_false(c.has_err);
	assert_string_equal(c.v[0], "still fine");
}

/* A batch commits and answers with its last statement's result. */
static void
test_db_batch_commits(void **state)
{
	struct fx		*f = *state;
	struct ans		 a = { 0 }, e = { 0 };
	struct db_batch		*b;
	struct db_params	*p;
	char			 sql[256];

	fx_table(f);
	fx_open(f, 2, 10);
	b = db_batch_new();
	snprintf(sql, sizeof sql, "INSERT INTO %s VALUES ($1, $2)", f->table);
	p = db_params_new();
	db_params_int(p, 1);
	db_params_text(p, "one");
	db_batch_add(b, sql, p);
	p = db_params_new();
	db_params_int(p, 2);
	db_params_text(p, "two");
	db_batch_add(b, sql, p);
	snprintf(sql, sizeof sql, "SELECT count(*), txid_current_if_assigned() "
	    "IS NOT NULL FROM %s", f->table);
	db_batch_add(b, sql, NULL);
	assert_int_equal(batch(f, b, &a), 0);
	wait_ans(f, &a);
	assert_false(a.has_err);
	assert_int_equal(a.status, PGRES_TUPLES_OK);
	assert_string_equal(a.v[0], "2");
	assert_string_equal(a.v[1], "t");	/* one transaction */
	snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", f->table);
	assert_int_equal(admin_int(f, sql, NULL), 2);

	/* An empty batch is just BEGIN; COMMIT. */
	assert_int_equal(batch(f, db_batch_new(), &e), 0);
	wait_ans(f, &e);
	assert_false(e.has_err);
	assert_int_equal(e.status, PGRES_COMMAND_OK);
}

/* The first failing statement rolls the whole batch back. */
static void
test_db_batch_error_rolls_back(void **state)
{
	struct fx		*f = *state;
	struct ans		 a = { 0 }, c = { 0 };
	struct db_batch		*b;
	struct db_params	*p;
	PGresult		*res;
	char			 sql[256];

	fx_table(f);
	fx_open(f, 1, 10);
	b = db_batch_new();
	snprintf(sql, sizeof sql, "INSERT INTO %s VALUES ($1, 'x')", f->table);
	p = db_params_new();
	db_params_int(p, 7);
	db_batch_add(b, sql, p);
	p = db_params_new();
	db_params_text(p, "not a number");
	db_batch_add(b, sql, p);
	db_batch_add(b, "SELECT 'never runs'", NULL);
	assert_int_equal(batch(f, b, &a), 0);
	wait_ans(f, &a);
	assert_true(a.has_err);
	assert_true(a.has_res);
	assert_int_equal(a.status, PGRES_FATAL_ERROR);
	assert_string_equal(a.sqlstate, "22P02");
	assert_non_null(strstr(a.err, "invalid input syntax"));

	snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", f->table);
	assert_int_equal(admin_int(f, sql, NULL), 0);
	/* The same connection left the aborted transaction. */
	assert_int_equal(query(f, "SELECT 'usable'", NULL, &c), 0);
	wait_ans(f, &c);
	assert_false(c.has_err);
	assert_string_equal(c.v[0], "usable");
	res = admin(f, "SELECT state FROM pg_stat_activity WHERE "
	    "application_name = $1", f->app);
	assert_int_equal(PQntuples(res), 1);
	assert_string_equal(db_value(res, 0, 0), "idle");
	PQclear(res);
}

#define NMANY	40

/* Queued queries are all answered, each backend taking them in order. */
static void
test_db_queue_answers_all_in_order(void **state)
{
	struct fx		*f = *state;
	static struct ans	 a[NMANY];
	struct many		 m = { a, NMANY };
	struct db_params	*p;
	struct db_stats		 st;
	long			 pid[2] = { 0, 0 }, last[2] = { -1, -1 }, bp;
	int			 i, j, n;

	memset(a, 0, sizeof a);
	fx_open(f, 2, 100);
	for (i = 0; i < NMANY; i++) {
		p = db_params_new();
		db_params_int(p, i);
		in_db_call = 1;
		assert_int_equal(db_query(f->db, "SELECT $1::int, "
		    "pg_backend_pid()", p, ans_cb, &a[i]), 0);
		in_db_call = 0;
	}
	db_get_stats(f->db, &st);
	assert_int_equal(st.busy, 2);
	assert_int_equal(st.queued, NMANY - 2);
	assert_true(run_until(f->base, all_answered, &m, 10000));
	run_for(f->base, 20);

	for (i = 0; i < NMANY; i++) {
		assert_int_equal(a[i].called, 1);
		assert_false(a[i].sync);
		assert_false(a[i].has_err);
		assert_int_equal(atoi(a[i].v[0]), i);
	}
	/* Each connection takes the oldest waiting query next. */
	for (n = 0; n < NMANY; n++) {
		for (i = 0; i < NMANY; i++) {
			if (a[i].seq != n)
				continue;
			bp = atol(a[i].v[1]);
			for (j = 0; j < 2; j++) {
				if (pid[j] == 0)
					pid[j] = bp;
				if (pid[j] == bp)
					break;
			}
			assert_true(j < 2);
			assert_true(i > last[j]);
			last[j] = i;
		}
	}
	db_get_stats(f->db, &st);
	assert_int_equal(st.queued, 0);
	assert_int_equal(st.busy, 0);
}

/* Past queue_max, db_query returns -1 and answers "queue full". */
static void
test_db_queue_full_refuses(void **state)
{
	struct fx	*f = *state;
	struct ans	 a[4];
	struct many	 m = { a, 4 };
	int		 i;

	memset(a, 0, sizeof a);
	fx_open(f, 1, 2);
	assert_int_equal(query(f, "SELECT 0", NULL, &a[0]), 0);	/* runs */
	assert_int_equal(query(f, "SELECT 1", NULL, &a[1]), 0);	/* waits */
	assert_int_equal(query(f, "SELECT 2", NULL, &a[2]), 0);	/* waits */
	assert_int_equal(query(f, "SELECT 3", NULL, &a[3]), -1);
	assert_int_equal(a[3].called, 0);
	assert_true(run_until(f->base, all_answered, &m, 5000));
	for (i = 0; i < 3; i++) {
		assert_int_equal(a[i].called, 1);
		assert_false(a[i].has_err);
		assert_int_equal(atoi(a[i].v[0]), i);
	}
	assert_int_equal(a[3].called, 1);
	assert_false(a[3].sync);
	assert_false(a[3].has_res);
	assert_string_equal(a[3].err, "database queue full");
	/* The refused one was answered first: it never waited. */
	assert_int_equal(a[3].seq, 0);
}

/* No path answers from inside db_query or db_batch_run. */
static void
test_db_callback_never_synchronous(void **state)
{
	struct fx	*f = *state;
	struct ans	 a[5];
	struct many	 m3 = { a, 3 }, m = { a, 5 };
	int		 i;

	memset(a, 0, sizeof a);
	fx_open(f, 1, 1);
	query(f, "SELECT 1", NULL, &a[0]);
	assert_int_equal(a[0].called, 0);
	query(f, "SELECT 1/0", NULL, &a[1]);
	assert_int_equal(a[1].called, 0);
	batch(f, db_batch_new(), &a[2]);	/* queue full */
	assert_int_equal(a[2].called, 0);
	assert_true(run_until(f->base, all_answered, &m3, 5000));
	batch(f, db_batch_new(), &a[3]);	/* idle connection */
	assert_int_equal(a[3].called, 0);
	db_free(f->db);
	f->db = NULL;
	assert_int_equal(a[3].called, 1);
	assert_string_equal(a[3].err, "database pool closing");

	f->db = db_new(f->base, &(struct db_config){
	    .conninfo = "host=127.0.0.1 port=1", .pool_size = 1 });
	query(f, "SELECT 1", NULL, &a[4]);	/* unavailable */
	assert_int_equal(a[4].called, 0);
	assert_true(run_until(f->base, all_answered, &m, 5000));
	for (i = 0; i < 5; i++) {
		assert_int_equal(a[i].called, 1);
		assert_false(a[i].sync);
	}
}

/* Condition: the pool's backends are running both sleeps. */
static int
two_active(void *arg)
{
	struct fx	*f = arg;

	return (admin_int(f, "SELECT count(*) FROM pg_stat_activity WHERE "
	    "application_name = $1 AND state = 'active'", f->app) == 2);
}

/* Killed backends fail their queries; the pool reconnects and serves. */
static void
test_db_terminate_backend_reconnects(void **state)
{
	struct fx		*f = *state;
	struct db_config	 cfg = fx_config(f, 2, 10);
	struct ans		 a[3], ok = { 0 };
	struct many		 m = { a, 3 };
	struct db_stats		 st;
	int			 i;

	memset(a, 0, sizeof a);
	cfg.reconnect_min_ms = 300;	/* both die before either returns */
	cfg.reconnect_max_ms = 1000;
	fx_open_cfg(f, &cfg);
	assert_int_equal(query(f, "SELECT pg_sleep(10)", NULL, &a[0]), 0);
	assert_int_equal(query(f, "SELECT pg_sleep(10)", NULL, &a[1]), 0);
	assert_int_equal(query(f, "SELECT 'queued'", NULL, &a[2]), 0);
	run_for(f->base, 20);
	for (i = 0; i < 100 && !two_active(f); i++)
		usleep(10000);
	assert_true(two_active(f));

	assert_int_equal(admin_int(f, "SELECT count(pg_terminate_backend(pid)) "
	    "FROM pg_stat_activity WHERE application_name = $1", f->app), 2);
	assert_true(run_until(f->base, all_answered, &m, 5000));
	for (i = 0; i < 2; i++) {
		assert_int_equal(a[i].called, 1);
		assert_true(a[i].has_err);
		assert_false(a[i].has_res);
		assert_string_equal(a[i].err, "database connection lost");
	}
	assert_int_equal(a[2].called, 1);
	assert_false(a[2].has_res);
	assert_string_equal(a[2].err, "database unavailable");
	assert_false(db_is_ready(f->db));

	assert_true(run_until(f->base, pool_ready, f->db, 5000));
	assert_true(run_until(f->base, pool_full, f->db, 5000));
	assert_int_equal(query(f, "SELECT 'back'", NULL, &ok), 0);
	wait_ans(f, &ok);
	assert_false(ok.has_err);
	assert_string_equal(ok.v[0], "back");
	db_get_stats(f->db, &st);
	assert_int_equal(st.connects, 4);
	assert_int_equal(st.connected, 2);
}

/* Condition: the connection was lost and reopened. */
static int
reconnected(void *arg)
{
	struct db_stats	 st;

	db_get_stats(arg, &st);
	return (st.connects == 2 && st.connected == 1);
}

/* An idle connection whose backend dies is noticed and reopened. */
static void
test_db_idle_backend_death_noticed(void **state)
{
	struct fx	*f = *state;
	struct ans	 ok = { 0 };

	fx_open(f, 1, 10);
	assert_int_equal(admin_int(f, "SELECT count(pg_terminate_backend(pid)) "
	    "FROM pg_stat_activity WHERE application_name = $1", f->app), 1);
	assert_true(run_until(f->base, reconnected, f->db, 5000));
	assert_int_equal(query(f, "SELECT 1", NULL, &ok), 0);
	wait_ans(f, &ok);
	assert_false(ok.has_err);
}

/* Condition: at least two connection attempts failed. */
static int
two_failures(void *arg)
{
	struct db_stats	 st;

	db_get_stats(arg, &st);
	return (st.connect_failures >= 2);
}

/* With no server, queries fail at once; the password is never logged. */
static void
test_db_unreachable_fails_fast(void **state)
{
	struct fx		*f = *state;
	struct db_config	 cfg = fx_config(f, 2, 10);
	struct ans		 a = { 0 }, b = { 0 };
	struct db_stats		 st;
	char			 path[] = "/tmp/test_db_log.XXXXXX", buf[8192];
	int			 fd, saved;
	ssize_t			 n;

	cfg.conninfo = "host=127.0.0.1 port=1 password=canary-s3cret";
	cfg.reconnect_min_ms = 30;
	cfg.reconnect_max_ms = 60;
	fflush(stderr);
	assert_true((fd = mkstemp(path)) != -1);
	unlink(path);
	saved = dup(STDERR_FILENO);
	dup2(fd, STDERR_FILENO);

	f->db = db_new(f->base, &cfg);
	assert_int_equal(query(f, "SELECT 1", NULL, &a), 0);
	assert_int_equal(a.called, 0);
	run_until(f->base, answered, &a, 1000);
	run_until(f->base, two_failures, f->db, 2000);
	assert_int_equal(query(f, "SELECT 1", NULL, &b), 0);
	run_until(f->base, answered, &b, 1000);
	db_get_stats(f->db, &st);
	db_free(f->db);
	f->db = NULL;

	dup2(saved, STDERR_FILENO);
	close(saved);
	lseek(fd, 0, SEEK_SET);
	n = read(fd, buf, sizeof buf - 1);
	close(fd);
	buf[n > 0 ? n : 0] = '\0';
	fprintf(stderr, "%s", buf);

	assert_int_equal(a.called, 1);
	assert_false(a.sync);
	assert_false(a.has_res);
	assert_string_equal(a.err, "database unavailable");
	assert_int_equal(b.called, 1);
	assert_string_equal(b.err, "database unavailable");
	assert_int_equal(st.connected, 0);
	assert_true(st.connect_failures >= 2);
	assert_int_equal(st.errors, 2);
	assert_non_null(strstr(buf, "connect failed"));
	assert_null(strstr(buf, "canary-s3cret"));
}

/* A malformed conninfo is refused without being logged. */
static void
test_db_malformed_conninfo_not_logged(void **state)
{
	struct fx		*f = *state;
	struct db_config	 cfg = fx_config(f, 1, 10);
	struct ans		 a = { 0 };
	char			 path[] = "/tmp/test_db_log.XXXXXX", buf[4096];
	int			 fd, saved;
	ssize_t			 n;

	cfg.conninfo = "host=127.0.0.1 password='canary-s3cret";
	fflush(stderr);
	assert_true((fd = mkstemp(path)) != -1);
	unlink(path);
	saved = dup(STDERR_FILENO);
	dup2(fd, STDERR_FILENO);
	f->db = db_new(f->base, &cfg);
	query(f, "SELECT 1", NULL, &a);
	run_until(f->base, answered, &a, 1000);
	dup2(saved, STDERR_FILENO);
	close(saved);
	lseek(fd, 0, SEEK_SET);
	n = read(fd, buf, sizeof buf - 1);
	close(fd);
	buf[n > 0 ? n : 0] = '\0';
	fprintf(stderr, "%s", buf);

	assert_false(db_is_ready(f->db));
	assert_int_equal(a.called, 1);
	assert_string_equal(a.err, "database unavailable");
	assert_non_null(strstr(buf, "malformed"));
	assert_null(strstr(buf, "canary-s3cret"));
}

/* A server that accepts TCP but never answers hits the connect timeout. */
static void
test_db_connect_timeout(void **state)
{
	struct fx		*f = *state;
	struct db_config	 cfg = fx_config(f, 1, 10);
	struct sockaddr_in	 sin;
	socklen_t		 len = sizeof sin;
	struct db_stats		 st;
	char			 conninfo[128];
	int			 s;

	s = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(s != -1);
	memset(&sin, 0, sizeof sin);
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(s, (struct sockaddr *)&sin, sizeof sin), 0);
	assert_int_equal(listen(s, 64), 0);
	assert_int_equal(getsockname(s, (struct sockaddr *)&sin, &len), 0);
	snprintf(conninfo, sizeof conninfo, "host=127.0.0.1 port=%d "
	    "sslmode=disable gssencmode=disable", ntohs(sin.sin_port));

	cfg.conninfo = conninfo;
	cfg.connect_timeout_ms = 100;
	cfg.reconnect_min_ms = 20;
	cfg.reconnect_max_ms = 40;
	f->db = db_new(f->base, &cfg);
	assert_true(run_until(f->base, two_failures, f->db, 2000));
	db_get_stats(f->db, &st);
	assert_int_equal(st.connected, 0);
	assert_int_equal(st.connects, 0);
	assert_false(db_is_ready(f->db));
	db_free(f->db);
	f->db = NULL;
	close(s);
}

struct requery {
	struct ans	 a;
	struct ans	 again;
	struct db	*db;
};

/* Record, then try to queue another query on a closing pool. */
static void
requery_cb(const PGresult *res, const char *err, void *arg)
{
	struct requery	*r = arg;

	ans_cb(res, err, &r->a);
	db_query(r->db, "SELECT 1", NULL, ans_cb, &r->again);
}

/* db_free answers running and queued queries before it returns. */
static void
test_db_free_answers_pending(void **state)
{
	struct fx	*f = *state;
	struct ans	 a[4];
	struct requery	 r;
	int		 i;

	memset(a, 0, sizeof a);
	memset(&r, 0, sizeof r);
	fx_open(f, 1, 10);
	r.db = f->db;
	assert_int_equal(query(f, "SELECT pg_sleep(1)", NULL, &a[0]), 0);
	for (i = 1; i < 4; i++)
		assert_int_equal(query(f, "SELECT 1", NULL, &a[i]), 0);
	assert_int_equal(db_query(f->db, "SELECT 1", NULL, requery_cb, &r), 0);
	run_for(f->base, 10);
	db_free(f->db);
	f->db = NULL;
	for (i = 0; i < 4; i++) {
		assert_int_equal(a[i].called, 1);
		assert_false(a[i].has_res);
		assert_string_equal(a[i].err, "database pool closing");
		assert_int_equal(a[i].seq, i);
	}
	assert_int_equal(r.a.called, 1);
	assert_string_equal(r.a.err, "database pool closing");
	assert_int_equal(r.again.called, 1);
	assert_string_equal(r.again.err, "database pool closing");
}

/* The counters follow what happened. */
static void
test_db_stats_counters(void **state)
{
	struct fx	*f = *state;
	struct ans	 a[4];
	struct many	 m = { a, 4 };
	struct db_stats	 st;

	memset(a, 0, sizeof a);
	fx_open(f, 2, 10);
	db_get_stats(f->db, &st);
	assert_int_equal(st.size, 2);
	assert_int_equal(st.connected, 2);
	assert_int_equal(st.busy, 0);
	assert_int_equal(st.queued, 0);
	assert_int_equal(st.queries, 0);
	assert_int_equal(st.connects, 2);
	assert_int_equal(st.connect_failures, 0);
	assert_true(db_is_ready(f->db));

	query(f, "SELECT pg_sleep(0.05)", NULL, &a[0]);
	query(f, "SELECT pg_sleep(0.05)", NULL, &a[1]);
	query(f, "SELECT 1/0", NULL, &a[2]);
	query(f, "SELECT 3", NULL, &a[3]);
	db_get_stats(f->db, &st);
	assert_int_equal(st.busy, 2);
	assert_int_equal(st.queued, 2);
	assert_true(run_until(f->base, all_answered, &m, 5000));
	db_get_stats(f->db, &st);
	assert_int_equal(st.busy, 0);
	assert_int_equal(st.queued, 0);
	assert_int_equal(st.queries, 4);
	assert_int_equal(st.errors, 1);
	assert_int_equal(st.connects, 2);
}

/* Rewrite the test URL as key=value pairs plus extra ones; caller frees. */
static char *
conninfo_with(const char *url, const char *extra)
{
	PQconninfoOption	*opts, *o;
	char			*out;
	size_t			 len = strlen(url) * 2 + strlen(extra) + 64, n;
	const char		*v;

	opts = PQconninfoParse(url, NULL);
	assert_non_null(opts);
	out = calloc(1, len);
	assert_non_null(out);
	for (o = opts; o->keyword != NULL; o++) {
		if (o->val == NULL || *o->val == '\0')
			continue;
		n = strlen(out);
		n += (size_t)snprintf(out + n, len - n, "%s='", o->keyword);
		for (v = o->val; *v != '\0' && n + 3 < len; v++) {
			if (*v == '\'' || *v == '\\')
				out[n++] = '\\';
			out[n++] = *v;
		}
		snprintf(out + n, len - n, "' ");
	}
	n = strlen(out);
	snprintf(out + n, len - n, "%s", extra);
	PQconninfoFree(opts);
	return (out);
}

/* statement_timeout joins the conninfo's options; application_name too. */
static void
test_db_session_settings(void **state)
{
	struct fx		*f = *state;
	struct db_config	 cfg = fx_config(f, 1, 10);
	struct ans		 a = { 0 }, b = { 0 };
	char			*conninfo;

	conninfo = conninfo_with(f->url, "options='-c work_mem=7MB'");
	cfg.conninfo = conninfo;
	cfg.statement_timeout_ms = 150;
	fx_open_cfg(f, &cfg);
	free(conninfo);			/* db_new copied it */
	assert_int_equal(query(f, "SELECT current_setting('application_name'),"
	    " current_setting('statement_timeout'), "
	    "current_setting('work_mem')", NULL, &a), 0);
	assert_int_equal(query(f, "SELECT pg_sleep(3)", NULL, &b), 0);
	wait_ans(f, &a);
	wait_ans(f, &b);
	assert_false(a.has_err);
	assert_string_equal(a.v[0], f->app);
	assert_string_equal(a.v[1], "150ms");
	assert_string_equal(a.v[2], "7MB");
	assert_true(b.has_err);
	assert_string_equal(b.sqlstate, "57014");
}

/* A parameter larger than the socket buffer goes out in several writes. */
static void
test_db_large_param_flushes(void **state)
{
	struct fx		*f = *state;
	struct ans		 a = { 0 }, b = { 0 };
	struct db_params	*p;
	size_t			 len = 16 * 1024 * 1024;
	char			*big;

	fx_open(f, 1, 10);
	big = malloc(len + 1);
	assert_non_null(big);
	memset(big, 'x', len);
	big[len] = '\0';
	p = db_params_new();
	db_params_text(p, big);
	db_params_bytea(p, big, len / 2);
	free(big);
	assert_int_equal(query(f, "SELECT length($1), length($2)", p, &a), 0);
	assert_int_equal(query(f, "SELECT 'after'", NULL, &b), 0);
	assert_true(run_until(f->base, answered, &b, 10000));
	assert_int_equal(a.called, 1);
	assert_false(a.has_err);
	assert_string_equal(a.v[0], "16777216");
	assert_string_equal(a.v[1], "8388608");
	assert_false(b.has_err);
	assert_string_equal(b.v[0], "after");
}

/* The result helpers handle NULL and odd input. */
static void
test_db_result_helpers(void **state)
{
	struct fx	*f = *state;

	(void)f;
	assert_null(db_value(NULL, 0, 0));
	assert_int_equal(db_int(NULL, 0, 0), 0);
	assert_string_equal(db_sqlstate(NULL), "");
	assert_int_equal(db_params_count(NULL), 0);
	db_params_free(NULL);
	db_batch_free(NULL);
	db_batch_free(db_batch_new());
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
		T(test_db_simple_query_returns_rows),
		T(test_db_params_stay_data),
		T(test_db_bytea_binary_roundtrip),
		T(test_db_server_error_gives_result),
		T(test_db_batch_commits),
		T(test_db_batch_error_rolls_back),
		T(test_db_queue_answers_all_in_order),
		T(test_db_queue_full_refuses),
		T(test_db_callback_never_synchronous),
		T(test_db_terminate_backend_reconnects),
		T(test_db_idle_backend_death_noticed),
		T(test_db_unreachable_fails_fast),
		T(test_db_malformed_conninfo_not_logged),
		T(test_db_connect_timeout),
		T(test_db_free_answers_pending),
		T(test_db_stats_counters),
		T(test_db_session_settings),
		T(test_db_large_param_flushes),
		T(test_db_result_helpers),
#undef T
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
