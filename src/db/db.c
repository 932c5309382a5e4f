/* SPDX-License-Identifier: ISC */
/*
 * db.c -- a pool of non-blocking libpq connections driven by libevent.
 *
 * Each connection (struct db_conn) goes DOWN -> CONNECTING -> OPEN and back
 * to DOWN when it fails.  While CONNECTING, a one-shot event re-assigned to
 * the current PQsocket() drives PQconnectPoll and a timer enforces
 * connect_timeout_ms.  Once OPEN, a persistent read event consumes input
 * (results, notices, hangups) and a write event is armed only while PQflush
 * has output left.  A failed connection is closed, its running query is
 * answered with an error, and the same timer reopens it after an exponential
 * backoff with a little jitter.
 *
 * Queries (struct db_query) wait in one FIFO shared by the pool and run one
 * at a time per connection.  A batch is the same query object walking
 * BEGIN, its statements and COMMIT on one connection, or ROLLBACK after the
 * first error.  Answers never run from the caller's stack: a finished query
 * is put on the pool's "done" list and a zero-timeout event calls the
 * callbacks on the next loop pass.
 */
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <event2/util.h>
#include <libpq-fe.h>

#include "musubi/db.h"
#include "musubi/log.h"
#include "musubi/xmalloc.h"

#define DB_BYTEAOID		17	/* pg_type.oid of bytea */
#define DB_MAX_PARAMS		65535	/* protocol limit per statement */
#define DB_DEFAULT_QUEUE_MAX	1024
#define DB_DEFAULT_CONNECT_MS	10000
#define DB_DEFAULT_RECONNECT_MIN 250
#define DB_DEFAULT_RECONNECT_MAX 30000

#define DB_E_UNAVAILABLE	"database unavailable"
#define DB_E_LOST		"database connection lost"
#define DB_E_CLOSING		"database pool closing"
#define DB_E_FULL		"database queue full"
#define DB_E_PARAMS		"too many query parameters"

enum db_conn_state {
	DB_CONN_DOWN,		/* closed; timer reopens it */
	DB_CONN_CONNECTING,	/* PQconnectPoll running; timer = timeout */
	DB_CONN_OPEN,		/* usable */
	DB_CONN_CLOSED,		/* pool closing */
};

struct db_params {
	char		**values;	/* NULL entry is SQL NULL */
	int		 *lengths;
	int		 *formats;	/* 0 text, 1 binary */
	Oid		 *types;	/* 0 lets the server infer */
	int		  n;
	int		  cap;
};

struct db_stmt {
	char			*sql;
	struct db_params	*params;	/* may be NULL */
};

struct db_batch {
	struct db_stmt	*stmts;
	int		 n;
	int		 cap;
};

struct db_query {
	struct db_query	*next;		/* queue or done list */
	struct db_stmt	*stmts;
	int		 nstmts;
	int		 batch;		/* wrap in BEGIN/COMMIT */
	int		 step;		/* running statement, BEGIN is 0 */
	int		 rollback;	/* ROLLBACK in flight */
	PGresult	*step_res;	/* result of the running statement */
	PGresult	*res;		/* result for the callback */
	const char	*err;		/* static, or inside res */
	db_result_cb	*cb;
	void		*arg;
};

struct db_conn {
	struct db		*db;
	int			 id;		/* 1-based, for logs */
	enum db_conn_state	 state;
	PGconn			*conn;
	struct event		*cev;		/* connect poll, re-assigned */
	int			 cev_set;	/* cev has been assigned */
	struct event		*timer;		/* connect timeout or backoff */
	struct event		*rd;		/* persistent, while OPEN */
	struct event		*wr;		/* armed while output pending */
	int			 flushing;	/* wr is armed */
	struct db_query		*cur;		/* running query */
	int			 backoff_ms;	/* 0 after a good connect */
	int			 failing;	/* a failed attempt is logged */
};

struct db {
	struct event_base	*base;
	char			*conninfo;	/* never logged */
	char			*appname;	/* NULL: libpq default */
	char			*options;	/* merged "options", or NULL */
	int			 pool_size;
	int			 queue_max;
	int			 connect_timeout_ms;
	int			 reconnect_min_ms;
	int			 reconnect_max_ms;

	struct db_conn		*conns;
	int			 nopen;

	struct db_query		*qhead;		/* waiting for a connection */
	struct db_query		**qtail;
	size_t			 nqueued;
	int			 overloaded;	/* "queue full" was logged */

	struct db_query		*dhead;		/* answered, callback pending */
	struct db_query		**dtail;
	size_t			 ndone;
	struct event		*done_ev;	/* runs the callbacks */
	int			*alive;		/* db_free clears it */
	int			 closing;

	uint64_t		 queries;
	uint64_t		 errors;
	uint64_t		 connects;
	uint64_t		 connect_failures;
};

static void	db_conn_start(struct db_conn *);
static void	db_conn_fail(struct db_conn *, const char *);
static int	db_conn_send(struct db_conn *);
static void	db_conn_next(struct db_conn *);

/* Turn milliseconds into a timeval. */
static struct timeval
db_tv(int ms)
{
	struct timeval	 tv;

	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	return (tv);
}

/* Copy a libpq message into buf on one line, blanks squeezed. */
static const char *
db_oneline(char *buf, size_t len, const char *msg)
{
	size_t	 i, n;

	if (msg == NULL || *msg == '\0')
		msg = "unknown error";
	for (i = 0, n = 0; msg[i] != '\0' && n + 1 < len; i++) {
		if (msg[i] == ' ' || msg[i] == '\n' || msg[i] == '\r' ||
		    msg[i] == '\t') {
			if (n > 0 && buf[n - 1] != ' ')
				buf[n++] = ' ';
		} else
			buf[n++] = msg[i];
	}
	while (n > 0 && buf[n - 1] == ' ')
		n--;
	buf[n] = '\0';
	return (buf);
}

/* Tell whether a result is anything but success. */
static int
db_res_failed(const PGresult *res)
{
	ExecStatusType	 st;

	if (res == NULL)
		return (1);
	st = PQresultStatus(res);
	return (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK);
}

/* Return the message for a failed result: borrowed from res or static. */
static const char *
db_res_error(const PGresult *res)
{
	const char	*s;

	if (res == NULL)
		return ("no result from server");
	s = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
	if (s != NULL && *s != '\0')
		return (s);
	s = PQresultErrorMessage(res);
	if (s != NULL && *s != '\0')
		return (s);
	return (PQresStatus(PQresultStatus(res)));
}

/* Free a parameter list's contents and itself. */
void
db_params_free(struct db_params *p)
{
	int	 i;

	if (p == NULL)
		return;
	for (i = 0; i < p->n; i++)
		free(p->values[i]);
	free(p->values);
	free(p->lengths);
	free(p->formats);
	free(p->types);
	free(p);
}

/* Create an empty parameter list. */
struct db_params *
db_params_new(void)
{
	return (xcalloc(1, sizeof(struct db_params)));
}

/* Append one parameter; takes value. */
static void
db_params_add(struct db_params *p, char *value, int len, int format, Oid type)
{
	if (p->n == p->cap) {
		p->cap = p->cap == 0 ? 8 : p->cap * 2;
		p->values = xreallocarray(p->values, p->cap, sizeof(char *));
		p->lengths = xreallocarray(p->lengths, p->cap, sizeof(int));
		p->formats = xreallocarray(p->formats, p->cap, sizeof(int));
		p->types = xreallocarray(p->types, p->cap, sizeof(Oid));
	}
	p->values[p->n] = value;
	p->lengths[p->n] = len;
	p->formats[p->n] = format;
	p->types[p->n] = type;
	p->n++;
}

/* Append a text value (copied); NULL is SQL NULL. */
void
db_params_text(struct db_params *p, const char *s)
{
	db_params_add(p, s == NULL ? NULL : xstrdup(s), 0, 0, 0);
}

/* Append at most n bytes of text (copied); NULL is SQL NULL. */
void
db_params_textn(struct db_params *p, const char *s, size_t n)
{
	db_params_add(p, s == NULL ? NULL : xstrndup(s, n), 0, 0, 0);
}

/* Append an integer, sent as text so the server picks the type. */
void
db_params_int(struct db_params *p, int64_t v)
{
	char	 buf[32];

	snprintf(buf, sizeof buf, "%" PRId64, v);
	db_params_add(p, xstrdup(buf), 0, 0, 0);
}

/* Append a boolean. */
void
db_params_bool(struct db_params *p, int v)
{
	db_params_add(p, xstrdup(v ? "t" : "f"), 0, 0, 0);
}

/* Append SQL NULL. */
void
db_params_null(struct db_params *p)
{
	db_params_add(p, NULL, 0, 0, 0);
}

/* Append a bytea value in binary format (copied). */
void
db_params_bytea(struct db_params *p, const void *v, size_t len)
{
	char	*copy;

	if (len > INT_MAX)
		fatalx("db: bytea parameter of %zu bytes", len);
	copy = xmalloc(len == 0 ? 1 : len);
	if (len != 0)
		memcpy(copy, v, len);
	db_params_add(p, copy, (int)len, 1, DB_BYTEAOID);
}

/* Return the number of parameters. */
int
db_params_count(const struct db_params *p)
{
	return (p == NULL ? 0 : p->n);
}

/* Create an empty batch. */
struct db_batch *
db_batch_new(void)
{
	return (xcalloc(1, sizeof(struct db_batch)));
}

/* Append a statement; copies sql, takes params. */
void
db_batch_add(struct db_batch *b, const char *sql, struct db_params *params)
{
	if (b->n == b->cap) {
		b->cap = b->cap == 0 ? 4 : b->cap * 2;
		b->stmts = xreallocarray(b->stmts, b->cap,
		    sizeof(struct db_stmt));
	}
	b->stmts[b->n].sql = xstrdup(sql == NULL ? "" : sql);
	b->stmts[b->n].params = params;
	b->n++;
}

/* Free an array of statements. */
static void
db_stmts_free(struct db_stmt *stmts, int n)
{
	int	 i;

	for (i = 0; i < n; i++) {
		free(stmts[i].sql);
		db_params_free(stmts[i].params);
	}
	free(stmts);
}

/* Free a batch that was never run. */
void
db_batch_free(struct db_batch *b)
{
	if (b == NULL)
		return;
	db_stmts_free(b->stmts, b->n);
	free(b);
}

/* Free a query and whatever results it still holds. */
static void
db_query_free(struct db_query *q)
{
	db_stmts_free(q->stmts, q->nstmts);
	PQclear(q->step_res);
	PQclear(q->res);
	free(q);
}

/* Put a finished query on the done list; its callback runs next pass. */
static void
db_answer(struct db *db, struct db_query *q, const char *err)
{
	struct timeval	 tv = { 0, 0 };

	PQclear(q->step_res);
	q->step_res = NULL;
	q->err = err;
	q->next = NULL;
	*db->dtail = q;
	db->dtail = &q->next;
	db->ndone++;
	db->queries++;
	if (err != NULL)
		db->errors++;
	if (!db->closing && !evtimer_pending(db->done_ev, NULL) &&
	    evtimer_add(db->done_ev, &tv) == -1)
		fatalx("db: cannot schedule query callbacks");
}

/* Answer a query with an error and no result. */
static void
db_answer_error(struct db *db, struct db_query *q, const char *err)
{
	PQclear(q->res);
	q->res = NULL;
	db_answer(db, q, err);
}

/* Take the first query off the done list. */
static struct db_query *
db_done_pop(struct db *db)
{
	struct db_query	*q;

	if ((q = db->dhead) == NULL)
		return (NULL);
	if ((db->dhead = q->next) == NULL)
		db->dtail = &db->dhead;
	db->ndone--;
	q->next = NULL;
	return (q);
}

/* Call the callbacks of queries answered before this pass. */
static void
db_done_cb(evutil_socket_t fd, short what, void *arg)
{
	struct db	*db = arg;
	struct db_query	*q;
	size_t		 n = db->ndone;
	int		 alive = 1;

	/* Answers added by these callbacks wait for the next pass. */
	db->alive = &alive;
	while (n-- > 0 && (q = db_done_pop(db)) != NULL) {
		if (q->cb != NULL)
			q->cb(q->res, q->err, q->arg);
		db_query_free(q);
		if (!alive)
			return;		/* a callback called db_free */
	}
	db->alive = NULL;
}

/* Append a query to the wait queue. */
static void
db_queue_push(struct db *db, struct db_query *q)
{
	q->next = NULL;
	*db->qtail = q;
	db->qtail = &q->next;
	db->nqueued++;
}

/* Take the oldest query off the wait queue. */
static struct db_query *
db_queue_pop(struct db *db)
{
	struct db_query	*q;

	if ((q = db->qhead) == NULL)
		return (NULL);
	if ((db->qhead = q->next) == NULL)
		db->qtail = &db->qhead;
	db->nqueued--;
	if (db->nqueued == 0)
		db->overloaded = 0;
	q->next = NULL;
	return (q);
}

/* Answer every waiting query with err. */
static void
db_queue_fail(struct db *db, const char *err)
{
	struct db_query	*q;

	while ((q = db_queue_pop(db)) != NULL)
		db_answer_error(db, q, err);
}

/* Route server notices and warnings to the log. */
static void
db_notice_cb(void *arg, const PGresult *res)
{
	struct db_conn	*c = arg;
	const char	*sev, *msg;

	sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
	if (sev == NULL)
		sev = "NOTICE";
	if ((msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY)) == NULL)
		msg = "";
	if (strcmp(sev, "ERROR") == 0 || strcmp(sev, "FATAL") == 0 ||
	    strcmp(sev, "PANIC") == 0)
		log_warnx("db: connection %d: server %s: %s", c->id, sev, msg);
	else
		log_debug("db: connection %d: server %s: %s", c->id, sev, msg);
}

/* Close a connection's socket and events; keep the pending query. */
static void
db_conn_close(struct db_conn *c)
{
	if (c->cev_set)
		event_del(c->cev);
	evtimer_del(c->timer);
	if (c->rd != NULL) {
		event_free(c->rd);
		c->rd = NULL;
	}
	if (c->wr != NULL) {
		event_free(c->wr);
		c->wr = NULL;
	}
	c->flushing = 0;
	if (c->conn != NULL) {
		PQfinish(c->conn);
		c->conn = NULL;
	}
	if (c->state == DB_CONN_OPEN)
		c->db->nopen--;
	c->state = DB_CONN_DOWN;
}

/* Advance the backoff and return the next delay in ms, with jitter. */
static int
db_conn_backoff(struct db_conn *c)
{
	struct db	*db = c->db;
	uint32_t	 r;

	if (c->backoff_ms == 0)
		c->backoff_ms = db->reconnect_min_ms;
	else if (c->backoff_ms > db->reconnect_max_ms / 2)
		c->backoff_ms = db->reconnect_max_ms;
	else
		c->backoff_ms *= 2;
	evutil_secure_rng_get_bytes(&r, sizeof r);
	return (c->backoff_ms + (int)(r % ((uint32_t)c->backoff_ms / 10 + 1)));
}

/*
 * Give up on a connection: close it, answer its query, answer the queue if
 * no connection is left, and arm the reconnect timer.  msg may point into
 * the PGconn, so it is copied first.
 */
static void
db_conn_fail(struct db_conn *c, const char *msg)
{
	struct db	*db = c->db;
	struct db_query	*q;
	struct timeval	 tv;
	char		 buf[512];
	int		 was_open = c->state == DB_CONN_OPEN, delay;

	db_oneline(buf, sizeof buf, msg);
	db_conn_close(c);
	delay = db_conn_backoff(c);
	if (was_open)
		log_warnx("db: connection %d: lost: %s; reconnecting in %d ms",
		    c->id, buf, delay);
	else {
		db->connect_failures++;
		if (!c->failing)
			log_warnx("db: connection %d: connect failed: %s; "
			    "retrying in %d ms", c->id, buf, delay);
		else
			log_debug("db: connection %d: connect failed: %s; "
			    "retrying in %d ms", c->id, buf, delay);
		c->failing = 1;
	}

	if ((q = c->cur) != NULL) {
		c->cur = NULL;
		db_answer_error(db, q, DB_E_LOST);
	}
	if (was_open && db->nopen == 0) {
		if (db->nqueued > 0)
			log_warnx("db: no connection open; failing %zu queued "
			    "queries", db->nqueued);
		else
			log_warnx("db: no connection open");
		db_queue_fail(db, DB_E_UNAVAILABLE);
	}

	tv = db_tv(delay);
	if (evtimer_add(c->timer, &tv) == -1)
		log_warnx("db: connection %d: cannot arm reconnect timer",
		    c->id);
}

/* Push pending output; arm the write event while some is left. */
static int
db_conn_flush(struct db_conn *c)
{
	switch (PQflush(c->conn)) {
	case 0:
		if (c->flushing) {
			event_del(c->wr);
			c->flushing = 0;
		}
		return (0);
	case 1:
		if (!c->flushing) {
			if (event_add(c->wr, NULL) == -1) {
				db_conn_fail(c, "cannot arm write event");
				return (-1);
			}
			c->flushing = 1;
		}
		return (0);
	default:
		db_conn_fail(c, PQerrorMessage(c->conn));
		return (-1);
	}
}

/* Hand the connection's query to the caller and start the next one. */
static void
db_conn_finish(struct db_conn *c, const char *err)
{
	struct db_query	*q = c->cur;

	c->cur = NULL;
	db_answer(c->db, q, err);
	db_conn_next(c);
}

/* Handle the end of one statement's results. */
static void
db_conn_step_done(struct db_conn *c)
{
	struct db_query	*q = c->cur;
	PGresult	*res = q->step_res;
	int		 last = q->batch ? q->nstmts + 1 : 0;

	q->step_res = NULL;
	if (PQstatus(c->conn) == CONNECTION_BAD) {
		PQclear(res);
		db_conn_fail(c, PQerrorMessage(c->conn));
		return;
	}
	if (q->rollback) {
		/* ROLLBACK is done; answer with the error kept in q->res. */
		PQclear(res);
		db_conn_finish(c, q->err);
		return;
	}
	if (db_res_failed(res)) {
		PQclear(q->res);
		q->res = res;
		q->err = db_res_error(res);
		if (PQtransactionStatus(c->conn) != PQTRANS_IDLE) {
			q->rollback = 1;
			(void)db_conn_send(c);
			return;
		}
		db_conn_finish(c, q->err);
		return;
	}

	/* Keep the last statement's result (COMMIT's for an empty batch). */
	if (!q->batch || q->step == q->nstmts ||
	    (q->step == last && q->res == NULL)) {
		PQclear(q->res);
		q->res = res;
	} else
		PQclear(res);
	if (q->step == last) {
		db_conn_finish(c, NULL);
		return;
	}
	q->step++;
	(void)db_conn_send(c);
}

/* Read every result that is complete. */
static void
db_conn_collect(struct db_conn *c)
{
	struct db_query	*q;
	PGresult	*res;

	while (c->state == DB_CONN_OPEN && (q = c->cur) != NULL &&
	    !PQisBusy(c->conn)) {
		if ((res = PQgetResult(c->conn)) == NULL) {
			db_conn_step_done(c);
			continue;
		}
		switch (PQresultStatus(res)) {
		case PGRES_COPY_IN:
		case PGRES_COPY_OUT:
		case PGRES_COPY_BOTH:
			/* Cannot leave COPY state cleanly: drop the link. */
			PQclear(res);
			db_conn_fail(c, "COPY is not supported");
			return;
		default:
			break;
		}
		/* Keep the last result, but never replace an error. */
		if (q->step_res != NULL && db_res_failed(q->step_res))
			PQclear(res);
		else {
			PQclear(q->step_res);
			q->step_res = res;
		}
	}
}

/* Read from the server: results, notifications, or a hangup. */
static void
db_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct db_conn	*c = arg;
	PGnotify	*n;

	if (!PQconsumeInput(c->conn) || PQstatus(c->conn) == CONNECTION_BAD) {
		db_conn_fail(c, PQerrorMessage(c->conn));
		return;
	}
	while ((n = PQnotifies(c->conn)) != NULL)
		PQfreemem(n);
	/* libpq: while PQflush returns 1, reading may unblock the server. */
	if (c->flushing && db_conn_flush(c) == -1)
		return;
	db_conn_collect(c);
}

/* Send more of a query the socket could not take at once. */
static void
db_write_cb(evutil_socket_t fd, short what, void *arg)
{
	struct db_conn	*c = arg;

	c->flushing = 0;		/* one-shot: no longer pending */
	(void)db_conn_flush(c);
}

/* Send the running query's current statement; -1 if the link failed. */
static int
db_conn_send(struct db_conn *c)
{
	struct db_query		*q = c->cur;
	struct db_params	*p = NULL;
	const char		*sql;

	if (q->rollback)
		sql = "ROLLBACK";
	else if (q->batch && q->step == 0)
		sql = "BEGIN";
	else if (q->batch && q->step == q->nstmts + 1)
		sql = "COMMIT";
	else {
		sql = q->stmts[q->batch ? q->step - 1 : q->step].sql;
		p = q->stmts[q->batch ? q->step - 1 : q->step].params;
	}
	if (!PQsendQueryParams(c->conn, sql, p == NULL ? 0 : p->n,
	    p == NULL ? NULL : p->types,
	    p == NULL ? NULL : (const char *const *)p->values,
	    p == NULL ? NULL : p->lengths, p == NULL ? NULL : p->formats, 0)) {
		db_conn_fail(c, PQerrorMessage(c->conn));
		return (-1);
	}
	return (db_conn_flush(c));
}

/* Start the oldest waiting query if the connection is free. */
static void
db_conn_next(struct db_conn *c)
{
	struct db_query	*q;

	if (c->state != DB_CONN_OPEN || c->cur != NULL)
		return;
	if ((q = db_queue_pop(c->db)) == NULL)
		return;
	q->step = 0;
	c->cur = q;
	(void)db_conn_send(c);
}

/* Finish connecting: go non-blocking and start reading. */
static void
db_conn_open(struct db_conn *c)
{
	struct db	*db = c->db;
	evutil_socket_t	 fd;

	evtimer_del(c->timer);
	if (PQsetnonblocking(c->conn, 1) != 0) {
		db_conn_fail(c, PQerrorMessage(c->conn));
		return;
	}
	fd = PQsocket(c->conn);
	c->rd = event_new(db->base, fd, EV_READ | EV_PERSIST, db_read_cb, c);
	c->wr = event_new(db->base, fd, EV_WRITE, db_write_cb, c);
	if (c->rd == NULL || c->wr == NULL || event_add(c->rd, NULL) == -1) {
		db_conn_fail(c, "cannot create events");
		return;
	}
	c->state = DB_CONN_OPEN;
	c->backoff_ms = 0;
	c->failing = 0;
	db->nopen++;
	db->connects++;
	log_info("db: connection %d: connected", c->id);
	db_conn_next(c);
}

static void	db_connect_cb(evutil_socket_t, short, void *);

/* Wait for the current libpq socket to become readable or writable. */
static void
db_conn_wait(struct db_conn *c, short what)
{
	evutil_socket_t	 fd;

	/* The socket may change between PQconnectPoll calls. */
	if ((fd = PQsocket(c->conn)) < 0) {
		db_conn_fail(c, PQerrorMessage(c->conn));
		return;
	}
	if (c->cev_set)
		event_del(c->cev);
	if (event_assign(c->cev, c->db->base, fd, what, db_connect_cb, c) ==
	    -1) {
		db_conn_fail(c, "cannot assign connect event");
		return;
	}
	c->cev_set = 1;
	if (event_add(c->cev, NULL) == -1)
		db_conn_fail(c, "cannot arm connect event");
}

/* Drive the connection handshake one step. */
static void
db_connect_cb(evutil_socket_t fd, short what, void *arg)
{
	struct db_conn	*c = arg;

	switch (PQconnectPoll(c->conn)) {
	case PGRES_POLLING_READING:
		db_conn_wait(c, EV_READ);
		break;
	case PGRES_POLLING_WRITING:
		db_conn_wait(c, EV_WRITE);
		break;
	case PGRES_POLLING_OK:
		db_conn_open(c);
		break;
	default:
		db_conn_fail(c, PQerrorMessage(c->conn));
		break;
	}
}

/* Connect timeout while CONNECTING, reconnect after backoff while DOWN. */
static void
db_conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct db_conn	*c = arg;
	char		 msg[64];

	switch (c->state) {
	case DB_CONN_CONNECTING:
		snprintf(msg, sizeof msg, "timed out after %d ms",
		    c->db->connect_timeout_ms);
		db_conn_fail(c, msg);
		break;
	case DB_CONN_DOWN:
		db_conn_start(c);
		break;
	default:
		break;
	}
}

/* Start a connection attempt. */
static void
db_conn_start(struct db_conn *c)
{
	struct db	*db = c->db;
	const char	*kw[5], *val[5];
	struct timeval	 tv;
	int		 n = 0;

	/* With expand_dbname, later keywords override the conninfo's. */
	kw[n] = "dbname";
	val[n++] = db->conninfo;
	kw[n] = "fallback_application_name";
	val[n++] = "musubi";
	if (db->appname != NULL) {
		kw[n] = "application_name";
		val[n++] = db->appname;
	}
	if (db->options != NULL) {
		kw[n] = "options";
		val[n++] = db->options;
	}
	kw[n] = NULL;
	val[n] = NULL;

	if ((c->conn = PQconnectStartParams(kw, val, 1)) == NULL)
		fatalx("db: out of memory");
	if (PQstatus(c->conn) == CONNECTION_BAD) {
		db_conn_fail(c, PQerrorMessage(c->conn));
		return;
	}
	PQsetNoticeReceiver(c->conn, db_notice_cb, c);
	c->state = DB_CONN_CONNECTING;
	tv = db_tv(db->connect_timeout_ms);
	if (evtimer_add(c->timer, &tv) == -1) {
		db_conn_fail(c, "cannot arm connect timer");
		return;
	}
	/* libpq: before the first PQconnectPoll, act as if it said WRITING. */
	db_conn_wait(c, EV_WRITE);
}

/*
 * Check the conninfo and pull out its "options", so that a statement
 * timeout is added to them rather than replacing them.  Nothing from the
 * conninfo is logged: it may hold a password.
 */
static int
db_parse_conninfo(struct db *db, int statement_timeout_ms)
{
	PQconninfoOption	*opts, *o;
	char			*errmsg = NULL;
	const char		*user = NULL;

	if ((opts = PQconninfoParse(db->conninfo, &errmsg)) == NULL) {
		PQfreemem(errmsg);
		return (-1);
	}
	for (o = opts; o->keyword != NULL; o++) {
		if (strcmp(o->keyword, "options") == 0 && o->val != NULL &&
		    *o->val != '\0')
			user = o->val;
	}
	if (statement_timeout_ms > 0) {
		xasprintf(&db->options, "%s%s-c statement_timeout=%d",
		    user != NULL ? user : "", user != NULL ? " " : "",
		    statement_timeout_ms);
	}
	PQconninfoFree(opts);
	return (0);
}

/* Create the pool and start connecting. */
struct db *
db_new(struct event_base *base, const struct db_config *cfg)
{
	struct db	*db;
	struct db_conn	*c;
	int		 i;

	db = xcalloc(1, sizeof *db);
	db->base = base;
	db->conninfo = xstrdup(cfg->conninfo != NULL ? cfg->conninfo : "");
	if (cfg->application_name != NULL)
		db->appname = xstrdup(cfg->application_name);
	db->pool_size = cfg->pool_size > 0 ? cfg->pool_size : 1;
	db->queue_max = cfg->queue_max > 0 ? cfg->queue_max :
	    DB_DEFAULT_QUEUE_MAX;
	db->connect_timeout_ms = cfg->connect_timeout_ms > 0 ?
	    cfg->connect_timeout_ms : DB_DEFAULT_CONNECT_MS;
	db->reconnect_min_ms = cfg->reconnect_min_ms > 0 ?
	    cfg->reconnect_min_ms : DB_DEFAULT_RECONNECT_MIN;
	db->reconnect_max_ms = cfg->reconnect_max_ms > 0 ?
	    cfg->reconnect_max_ms : DB_DEFAULT_RECONNECT_MAX;
	if (db->reconnect_max_ms < db->reconnect_min_ms)
		db->reconnect_max_ms = db->reconnect_min_ms;
	db->qtail = &db->qhead;
	db->dtail = &db->dhead;
	if ((db->done_ev = evtimer_new(base, db_done_cb, db)) == NULL)
		fatalx("db: cannot create event");

	db->conns = xcalloc(db->pool_size, sizeof *db->conns);
	for (i = 0; i < db->pool_size; i++) {
		c = &db->conns[i];
		c->db = db;
		c->id = i + 1;
		c->state = DB_CONN_DOWN;
		c->cev = xcalloc(1, event_get_struct_event_size());
		if ((c->timer = evtimer_new(base, db_conn_timer_cb, c)) == NULL)
			fatalx("db: cannot create event");
	}

	if (db_parse_conninfo(db, cfg->statement_timeout_ms) != 0) {
		log_warnx("db: conninfo is malformed; not connecting");
		return (db);
	}
	for (i = 0; i < db->pool_size; i++)
		db_conn_start(&db->conns[i]);
	return (db);
}

/* Close every connection and answer everything still pending. */
void
db_free(struct db *db)
{
	struct db_conn	*c;
	struct db_query	*q;
	int		 i;

	if (db == NULL || db->closing)
		return;
	db->closing = 1;
	if (db->alive != NULL) {
		*db->alive = 0;		/* stop a running db_done_cb */
		db->alive = NULL;
	}

	/* Running queries were sent before any waiting one. */
	for (i = 0; i < db->pool_size; i++) {
		c = &db->conns[i];
		db_conn_close(c);
		c->state = DB_CONN_CLOSED;
		if ((q = c->cur) != NULL) {
			c->cur = NULL;
			db_answer_error(db, q, DB_E_CLOSING);
		}
	}
	db_queue_fail(db, DB_E_CLOSING);

	/* Callbacks may queue more; those are answered "closing" too. */
	while ((q = db_done_pop(db)) != NULL) {
		if (q->cb != NULL)
			q->cb(q->res, q->err, q->arg);
		db_query_free(q);
	}

	for (i = 0; i < db->pool_size; i++) {
		c = &db->conns[i];
		free(c->cev);
		event_free(c->timer);
	}
	free(db->conns);
	event_free(db->done_ev);
	free(db->conninfo);
	free(db->appname);
	free(db->options);
	free(db);
}

/* Tell whether any statement has more parameters than the protocol allows. */
static int
db_query_too_big(const struct db_query *q)
{
	int	 i;

	for (i = 0; i < q->nstmts; i++) {
		if (db_params_count(q->stmts[i].params) > DB_MAX_PARAMS)
			return (1);
	}
	return (0);
}

/* Start a query on a free connection, queue it, or refuse it. */
static int
db_submit(struct db *db, struct db_query *q)
{
	struct db_conn	*c;
	int		 i;

	if (db->closing) {
		db_answer(db, q, DB_E_CLOSING);
		return (0);
	}
	if (db_query_too_big(q)) {
		db_answer(db, q, DB_E_PARAMS);
		return (0);
	}
	if (db->nopen == 0) {
		db_answer(db, q, DB_E_UNAVAILABLE);
		return (0);
	}
	if (db->qhead == NULL) {
		for (i = 0; i < db->pool_size; i++) {
			c = &db->conns[i];
			if (c->state == DB_CONN_OPEN && c->cur == NULL) {
				q->step = 0;
				c->cur = q;
				(void)db_conn_send(c);
				return (0);
			}
		}
	}
	if (db->nqueued >= (size_t)db->queue_max) {
		if (!db->overloaded)
			log_warnx("db: queue full (%zu waiting); refusing "
			    "queries", db->nqueued);
		db->overloaded = 1;
		db_answer(db, q, DB_E_FULL);
		return (-1);
	}
	db_queue_push(db, q);
	return (0);
}

/* Queue one statement; steals params. */
int
db_query(struct db *db, const char *sql, struct db_params *params,
    db_result_cb *cb, void *arg)
{
	struct db_query	*q;

	q = xcalloc(1, sizeof *q);
	q->stmts = xcalloc(1, sizeof *q->stmts);
	q->stmts[0].sql = xstrdup(sql == NULL ? "" : sql);
	q->stmts[0].params = params;
	q->nstmts = 1;
	q->cb = cb;
	q->arg = arg;
	return (db_submit(db, q));
}

/* Queue a batch to run in one transaction; steals the batch. */
int
db_batch_run(struct db *db, struct db_batch *b, db_result_cb *cb, void *arg)
{
	struct db_query	*q;

	q = xcalloc(1, sizeof *q);
	if (b != NULL) {
		q->stmts = b->stmts;
		q->nstmts = b->n;
		free(b);
	}
	q->batch = 1;
	q->cb = cb;
	q->arg = arg;
	return (db_submit(db, q));
}

/* Tell whether at least one connection is open. */
int
db_is_ready(const struct db *db)
{
	return (db->nopen > 0);
}

/* Fill in the pool's counters. */
void
db_get_stats(const struct db *db, struct db_stats *st)
{
	int	 i;

	memset(st, 0, sizeof *st);
	st->size = db->pool_size;
	st->connected = db->nopen;
	for (i = 0; i < db->pool_size; i++) {
		if (db->conns[i].cur != NULL)
			st->busy++;
	}
	st->queued = db->nqueued;
	st->queries = db->queries;
	st->errors = db->errors;
	st->connects = db->connects;
	st->connect_failures = db->connect_failures;
}

/* Return a field as a borrowed string, or NULL for SQL NULL. */
const char *
db_value(const PGresult *res, int row, int col)
{
	if (res == NULL || row < 0 || col < 0 || row >= PQntuples(res) ||
	    col >= PQnfields(res) || PQgetisnull(res, row, col))
		return (NULL);
	return (PQgetvalue(res, row, col));
}

/* Return a field as an integer, 0 for SQL NULL. */
int64_t
db_int(const PGresult *res, int row, int col)
{
	const char	*v;

	if ((v = db_value(res, row, col)) == NULL)
		return (0);
	return ((int64_t)strtoll(v, NULL, 10));
}

/* Return the SQLSTATE of an error result, or "". */
const char *
db_sqlstate(const PGresult *res)
{
	const char	*s;

	if (res == NULL)
		return ("");
	s = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	return (s != NULL ? s : "");
}
