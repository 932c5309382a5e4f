/* SPDX-License-Identifier: ISC */
/*
 * migrate.c -- apply the embedded sql/ migrations in order under an advisory
 * lock.  Blocking libpq, used only before an event loop runs (musubid start-up)
 * or from musubictl.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "musubi/crypto.h"
#include "musubi/log.h"
#include "musubi/migrate.h"
#include "musubi/xmalloc.h"

/* Arbitrary but fixed: "musubi" in ASCII, as the advisory lock key. */
#define MIGRATE_LOCK_KEY	"109117115117098105"

/* Return the newest version known to this binary. */
int
migrate_latest(void)
{
	int	 v = 0;
	size_t	 i;

	for (i = 0; i < nmigrations; i++) {
		if (migrations[i].version > v)
			v = migrations[i].version;
	}
	return (v);
}

/* Run a statement that returns no rows; 0 or -1 with cause. */
static int
migrate_exec(PGconn *conn, const char *sql, char **cause)
{
	PGresult	*res = PQexec(conn, sql);
	ExecStatusType	 st = PQresultStatus(res);

	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
		xsetcause(cause, "%s", PQresultErrorMessage(res));
		PQclear(res);
		return (-1);
	}
	PQclear(res);
	return (0);
}

/* Look up the recorded checksum of a version: new string or NULL. */
static int
migrate_recorded(PGconn *conn, int version, char **sum, char **cause)
{
	PGresult	*res;
	char		 v[16];
	const char	*params[1] = { v };

	snprintf(v, sizeof v, "%d", version);
	res = PQexecParams(conn,
	    "SELECT checksum FROM schema_migrations WHERE version = $1",
	    1, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		xsetcause(cause, "%s", PQresultErrorMessage(res));
		PQclear(res);
		return (-1);
	}
	*sum = PQntuples(res) ? xstrdup(PQgetvalue(res, 0, 0)) : NULL;
	PQclear(res);
	return (0);
}

/* Apply one migration in its own transaction. */
static int
migrate_apply(PGconn *conn, const struct migration *m, const char *sum,
    char **cause)
{
	PGresult	*res;
	char		 v[16];
	const char	*params[3] = { v, m->name, sum };

	if (migrate_exec(conn, "BEGIN", cause) != 0)
		return (-1);
	if (migrate_exec(conn, m->sql, cause) != 0) {
		char *inner = *cause;

		*cause = NULL;
		xsetcause(cause, "migration %03d_%s: %s", m->version, m->name,
		    inner);
		free(inner);
		goto fail;
	}
	snprintf(v, sizeof v, "%d", m->version);
	res = PQexecParams(conn,
	    "INSERT INTO schema_migrations (version, name, checksum) "
	    "VALUES ($1, $2, $3)", 3, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		xsetcause(cause, "%s", PQresultErrorMessage(res));
		PQclear(res);
		goto fail;
	}
	PQclear(res);
	return (migrate_exec(conn, "COMMIT", cause));
fail:
	res = PQexec(conn, "ROLLBACK");
	PQclear(res);
	return (-1);
}

/* Apply every pending migration. */
int
migrate_run(PGconn *conn, int *applied, char **cause)
{
	size_t	 i;
	int	 n = 0, rc = -1;
	char	*sum, *have;

	if (applied != NULL)
		*applied = 0;
	if (migrate_exec(conn, "SELECT pg_advisory_lock(" MIGRATE_LOCK_KEY ")",
	    cause) != 0)
		return (-1);
	if (migrate_exec(conn,
	    "SET client_min_messages = warning;"
	    "CREATE TABLE IF NOT EXISTS schema_migrations ("
	    " version integer PRIMARY KEY,"
	    " name text NOT NULL,"
	    " checksum text NOT NULL,"
	    " applied_at timestamptz NOT NULL DEFAULT now())", cause) != 0)
		goto out;
	for (i = 0; i < nmigrations; i++) {
		const struct migration *m = &migrations[i];

		sum = crypto_sha256_hex(m->sql, strlen(m->sql));
		if (migrate_recorded(conn, m->version, &have, cause) != 0) {
			free(sum);
			goto out;
		}
		if (have != NULL) {
			if (strcmp(have, sum) != 0) {
				xsetcause(cause, "migration %03d_%s was "
				    "edited after it was applied (checksum "
				    "%.12s, recorded %.12s); released "
				    "migrations must not change", m->version,
				    m->name, sum, have);
				free(have);
				free(sum);
				goto out;
			}
			free(have);
			free(sum);
			continue;
		}
		if (migrate_apply(conn, m, sum, cause) != 0) {
			free(sum);
			goto out;
		}
		free(sum);
		log_info("migrate: applied %03d_%s", m->version, m->name);
		n++;
	}
	rc = 0;
	if (applied != NULL)
		*applied = n;
out:
	{
		PGresult *res = PQexec(conn,
		    "SELECT pg_advisory_unlock(" MIGRATE_LOCK_KEY ")");
		PQclear(res);
	}
	return (rc);
}
