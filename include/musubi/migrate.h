/* SPDX-License-Identifier: ISC */
/*
 * migrate.h -- schema migrations.  sql/NNN_name.sql files are compiled into
 * the binary (cmake/embed_sql.cmake) and applied in order, each in its own
 * transaction, under a PostgreSQL advisory lock so that any number of
 * processes may start at once.  Applied versions are recorded in
 * schema_migrations with a checksum; an applied migration whose text has
 * changed is refused, since released migrations are never edited.
 *
 * migrate_run() uses blocking libpq: it is for musubictl and for musubid's
 * start-up, before the event loop runs.
 */
#ifndef MUSUBI_MIGRATE_H
#define MUSUBI_MIGRATE_H

#include <stddef.h>

#include <libpq-fe.h>

struct migration {
	int		 version;
	const char	*name;
	const char	*sql;
};

extern const struct migration migrations[];
extern const size_t nmigrations;

/* The newest version this binary knows. */
int	 migrate_latest(void);
/*
 * Apply every pending migration on conn.  *applied counts those this call
 * applied (may be NULL).  0 on success; -1 and *cause (caller frees).
 */
int	 migrate_run(PGconn *, int *applied, char **cause);
/* The SQL that reports the newest applied version (for /readyz). */
#define MIGRATE_CURRENT_SQL \
	"SELECT coalesce(max(version), 0) FROM schema_migrations"

#endif
