/* SPDX-License-Identifier: ISC */
/*
 * db.h -- a pool of non-blocking libpq connections driven by libevent.
 *
 * db_new() opens pool_size connections with PQconnectStartParams and keeps
 * them open: a connection that fails is closed, every query waiting on it is
 * answered with an error, and it is reopened after an exponential backoff
 * (reconnect_min_ms doubling to reconnect_max_ms).  Each connection runs one
 * query at a time; queries wait in one FIFO shared by the pool.  No call in
 * this module blocks the loop.
 *
 * Every query's callback runs exactly once, always from the event loop and
 * never from inside db_query()/db_batch_run() themselves, so a caller may
 * hold state across the call safely.
 */
#ifndef MUSUBI_DB_H
#define MUSUBI_DB_H

#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>
#include <libpq-fe.h>

#include "musubi/compat.h"

struct db;
struct db_params;
struct db_batch;

/*
 * Result of one query.  On success err is NULL and res is the result of the
 * (last) statement: PGRES_TUPLES_OK or PGRES_COMMAND_OK.  On failure err says
 * why; res is the server's error result when the server rejected the
 * statement (read SQLSTATE with PQresultErrorField) and NULL when no
 * connection was available, the connection broke, or the pool is closing.
 * res is borrowed: it is cleared when the callback returns.
 */
typedef void db_result_cb(const PGresult *res, const char *err, void *arg);

struct db_config {
	const char	*conninfo;		/* libpq conninfo or URI */
	const char	*application_name;	/* may be NULL */
	int		 pool_size;		/* connections, >= 1 */
	int		 queue_max;		/* waiting queries before "overloaded" */
	int		 connect_timeout_ms;	/* per connection attempt */
	int		 statement_timeout_ms;	/* server-side; 0 = none */
	int		 reconnect_min_ms;
	int		 reconnect_max_ms;
};

struct db_stats {
	int		 size;		/* configured connections */
	int		 connected;	/* open and usable */
	int		 busy;		/* running a query */
	size_t		 queued;	/* waiting for a connection */
	uint64_t	 queries;	/* completed, ok or not */
	uint64_t	 errors;	/* queries answered with an error */
	uint64_t	 connects;	/* successful (re)connections */
	uint64_t	 connect_failures;
};

/* Create the pool and start connecting.  Copies the config strings. */
struct db	*db_new(struct event_base *, const struct db_config *);
/*
 * Close every connection.  Pending and running queries are answered with
 * err "database pool closing" before this returns.
 */
void		 db_free(struct db *);

/*
 * Queue one statement.  params may be NULL; it is stolen either way.  When
 * no connection is usable the query fails at once (callback on the next loop
 * pass) with err "database unavailable", rather than waiting: a webhook must
 * get its 503 quickly.  Returns 0, or -1 (callback still called) when the
 * queue is full.
 */
int		 db_query(struct db *, const char *sql, struct db_params *,
		    db_result_cb *, void *arg);

/*
 * Run the batch's statements in order inside one transaction on one
 * connection (BEGIN ... COMMIT; ROLLBACK on the first error).  The callback
 * gets the last statement's result, or the first error.  Steals the batch.
 */
int		 db_batch_run(struct db *, struct db_batch *, db_result_cb *,
		    void *arg);

/* True when at least one connection is open. */
int		 db_is_ready(const struct db *);
void		 db_get_stats(const struct db *, struct db_stats *);

/*
 * Query parameters, sent out of line (never spliced into SQL text).  Text
 * values are copied.  A NULL string is SQL NULL.
 */
struct db_params *db_params_new(void);
void		 db_params_free(struct db_params *);
void		 db_params_text(struct db_params *, const char *);
void		 db_params_textn(struct db_params *, const char *, size_t);
void		 db_params_int(struct db_params *, int64_t);
void		 db_params_bool(struct db_params *, int);
void		 db_params_null(struct db_params *);
/* Binary bytea value (sent in binary format, copied). */
void		 db_params_bytea(struct db_params *, const void *, size_t);
int		 db_params_count(const struct db_params *);

struct db_batch	*db_batch_new(void);
/* Append a statement; steals params (may be NULL). */
void		 db_batch_add(struct db_batch *, const char *sql,
		    struct db_params *);
void		 db_batch_free(struct db_batch *);

/* Helpers over a result (borrowed strings, valid while res is). */
const char	*db_value(const PGresult *, int row, int col);	/* NULL if SQL NULL */
int64_t		 db_int(const PGresult *, int row, int col);	/* 0 if NULL */
/* SQLSTATE of an error result, or "" */
const char	*db_sqlstate(const PGresult *);

#endif
