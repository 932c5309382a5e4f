/* SPDX-License-Identifier: ISC */
/*
 * musubictl -- the operator's command line: apply migrations and manage API
 * keys.  It talks to PostgreSQL directly (blocking libpq is fine here: there
 * is no event loop to stall) using MUSUBI_DATABASE_URL or -d.
 */
#include <ctype.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "musubi/api.h"
#include "musubi/log.h"
#include "musubi/migrate.h"
#include "musubi/xmalloc.h"

NORETURN static void
usage(void)
{
	fprintf(stderr,
	    "usage: musubictl [-d conninfo] command [args]\n"
	    "commands:\n"
	    "  migrate                               apply pending migrations\n"
	    "  apikey create --name NAME --scope admin|channel:SLUG\n"
	    "                                        create a key; prints it "
	    "once\n"
	    "  apikey list                           list keys (never the "
	    "keys themselves)\n"
	    "  apikey revoke ID|PREFIX               revoke a key\n"
	    "  version                               print versions\n"
	    "The database comes from -d or MUSUBI_DATABASE_URL.\n");
	exit(2);
}

/* Connect or exit with a message. */
static PGconn *
connect_db(const char *conninfo)
{
	PGconn	*conn;

	if (conninfo == NULL || *conninfo == '\0') {
		fprintf(stderr, "musubictl: no database: set "
		    "MUSUBI_DATABASE_URL or pass -d\n");
		exit(1);
	}
	conn = PQconnectdb(conninfo);
	if (PQstatus(conn) != CONNECTION_OK) {
		fprintf(stderr, "musubictl: cannot connect to PostgreSQL: %s",
		    PQerrorMessage(conn));
		PQfinish(conn);
		exit(1);
	}
	return (conn);
}

/* Run migrations. */
static int
cmd_migrate(PGconn *conn)
{
	char	*cause = NULL;
	int	 applied;

	if (migrate_run(conn, &applied, &cause) != 0) {
		fprintf(stderr, "musubictl: %s\n", cause);
		free(cause);
		return (1);
	}
	printf("schema at version %d (%d migration%s applied)\n",
	    migrate_latest(), applied, applied == 1 ? "" : "s");
	return (0);
}

/* Make sure the schema exists before touching api_keys. */
static void
require_schema(PGconn *conn)
{
	char	*cause = NULL;

	if (migrate_run(conn, NULL, &cause) != 0) {
		fprintf(stderr, "musubictl: %s\n", cause);
		free(cause);
		PQfinish(conn);
		exit(1);
	}
}

/* apikey create --name N --scope S */
static int
cmd_apikey_create(PGconn *conn, int argc, char **argv)
{
	const char	*name = NULL, *scope = NULL, *slug = NULL;
	const char	*params[5];
	char		*key, prefix[13];
	unsigned char	 hash[32];
	PGresult	*res;
	int		 i;

	for (i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--name") == 0 && i + 1 < argc)
			name = argv[++i];
		else if (strcmp(argv[i], "--scope") == 0 && i + 1 < argc)
			scope = argv[++i];
		else
			usage();
	}
	if (name == NULL || scope == NULL || *name == '\0')
		usage();
	if (strncmp(scope, "channel:", 8) == 0) {
		slug = scope + 8;
		scope = "channel";
		if (*slug == '\0')
			usage();
	} else if (strcmp(scope, "admin") != 0) {
		fprintf(stderr, "musubictl: scope must be admin or "
		    "channel:SLUG\n");
		return (2);
	}
	require_schema(conn);
	key = api_key_generate();
	api_key_hash(key, hash);
	{
		static const char digits[] = "0123456789abcdef";
		char	 h[67];

		h[0] = '\\';
		h[1] = 'x';
		for (i = 0; i < 32; i++) {
			h[2 + 2 * i] = digits[hash[i] >> 4];
			h[3 + 2 * i] = digits[hash[i] & 15];
		}
		h[66] = '\0';
		snprintf(prefix, sizeof prefix, "%.12s", key);
		params[0] = name;
		params[1] = prefix;
		params[2] = h;
		params[3] = scope;
		params[4] = slug;
		res = PQexecParams(conn,
		    "INSERT INTO api_keys (name, prefix, key_hash, scope, "
		    "channel_id) SELECT $1, $2, $3::bytea, $4, c.id FROM "
		    "(SELECT NULL) one LEFT JOIN channels c ON c.slug = $5 "
		    "WHERE $5::text IS NULL OR c.id IS NOT NULL RETURNING id",
		    5, NULL, params, NULL, NULL, 0);
	}
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		fprintf(stderr, "musubictl: %s", PQresultErrorMessage(res));
		PQclear(res);
		free(key);
		return (1);
	}
	if (PQntuples(res) == 0) {
		fprintf(stderr, "musubictl: no such channel: %s\n", slug);
		PQclear(res);
		free(key);
		return (1);
	}
	fprintf(stderr, "created API key %s (%s%s%s); it is shown only "
	    "once:\n", PQgetvalue(res, 0, 0), scope, slug ? ":" : "",
	    slug ? slug : "");
	printf("%s\n", key);
	PQclear(res);
	free(key);
	return (0);
}

/* apikey list */
static int
cmd_apikey_list(PGconn *conn)
{
	PGresult	*res;
	int		 i;

	require_schema(conn);
	res = PQexec(conn,
	    "SELECT k.id, k.prefix, k.scope || coalesce(':' || c.slug, ''), "
	    "k.name, to_char(k.created_at AT TIME ZONE 'UTC', "
	    "'YYYY-MM-DD HH24:MI\"Z\"'), coalesce(to_char(k.revoked_at AT "
	    "TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI\"Z\"'), '-') "
	    "FROM api_keys k LEFT JOIN channels c ON c.id = k.channel_id "
	    "ORDER BY k.id");
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		fprintf(stderr, "musubictl: %s", PQresultErrorMessage(res));
		PQclear(res);
		return (1);
	}
	printf("%-6s %-14s %-24s %-20s %-17s %s\n", "ID", "PREFIX", "SCOPE",
	    "NAME", "CREATED", "REVOKED");
	for (i = 0; i < PQntuples(res); i++) {
		printf("%-6s %-14s %-24s %-20s %-17s %s\n",
		    PQgetvalue(res, i, 0), PQgetvalue(res, i, 1),
		    PQgetvalue(res, i, 2), PQgetvalue(res, i, 3),
		    PQgetvalue(res, i, 4), PQgetvalue(res, i, 5));
	}
	PQclear(res);
	return (0);
}

/* apikey revoke ID|PREFIX */
static int
cmd_apikey_revoke(PGconn *conn, const char *which)
{
	PGresult	*res;
	const char	*params[1] = { which };
	int		 isnum = 1;
	const char	*p;

	for (p = which; *p != '\0'; p++) {
		if (!isdigit((unsigned char)*p))
			isnum = 0;
	}
	require_schema(conn);
	res = PQexecParams(conn, isnum ?
	    "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) "
	    "WHERE id = $1::bigint RETURNING id" :
	    "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) "
	    "WHERE prefix = $1 RETURNING id", 1, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		fprintf(stderr, "musubictl: %s", PQresultErrorMessage(res));
		PQclear(res);
		return (1);
	}
	if (PQntuples(res) == 0) {
		fprintf(stderr, "musubictl: no such API key: %s\n", which);
		PQclear(res);
		return (1);
	}
	printf("revoked API key %s\n", PQgetvalue(res, 0, 0));
	PQclear(res);
	return (0);
}

int
main(int argc, char **argv)
{
	const char	*conninfo = getenv("MUSUBI_DATABASE_URL");
	PGconn		*conn;
	int		 ch, rc;

	log_init("musubictl");
	while ((ch = getopt(argc, argv, "+d:h")) != -1) {
		switch (ch) {
		case 'd':
			conninfo = optarg;
			break;
		default:
			usage();
		}
	}
	argc -= optind;
	argv += optind;
	if (argc < 1)
		usage();
	if (strcmp(argv[0], "version") == 0) {
		printf("musubictl %s (schema %d)\n", MUSUBI_VERSION,
		    migrate_latest());
		return (0);
	}
	if (strcmp(argv[0], "migrate") == 0 && argc == 1) {
		conn = connect_db(conninfo);
		rc = cmd_migrate(conn);
	} else if (strcmp(argv[0], "apikey") == 0 && argc >= 2) {
		if (strcmp(argv[1], "create") == 0) {
			conn = connect_db(conninfo);
			rc = cmd_apikey_create(conn, argc - 2, argv + 2);
		} else if (strcmp(argv[1], "list") == 0 && argc == 2) {
			conn = connect_db(conninfo);
			rc = cmd_apikey_list(conn);
		} else if (strcmp(argv[1], "revoke") == 0 && argc == 3) {
			conn = connect_db(conninfo);
			rc = cmd_apikey_revoke(conn, argv[2]);
		} else
			usage();
	} else
		usage();
	PQfinish(conn);
	return (rc);
}
