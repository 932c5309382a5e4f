/* SPDX-License-Identifier: ISC */
/*
 * test_config.c -- config.c: defaults, the key = value file, the errors it
 * reports (always file:line), durations, sizes, host:port, environment
 * overrides, reload rules and the derived public_url.
 *
 * Every MUSUBI_<KEY> variable of the table is saved and unset before each
 * test and restored after it, so the tests neither see the caller's
 * environment nor leak their own settings into it.  Files are written with
 * mkstemp and removed after each test.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "musubi/config.h"
#include "musubi/log.h"

#define MAX_KEYS	64

struct fx {
	char	*names[MAX_KEYS];	/* MUSUBI_<KEY> */
	char	*saved[MAX_KEYS];	/* value before the test, or NULL */
	size_t	 n;
	char	 path[64];		/* temp file, "" if none */
	struct config cfg;
	int	 loaded;
	char	*cause;
};

/* Save and unset every MUSUBI_<KEY> of the key table. */
static int
setup(void **state)
{
	struct fx			*fx = calloc(1, sizeof *fx);
	const struct config_key_info	*k;
	size_t				 n, i, j;
	const char			*v;

	if (fx == NULL)
		return (-1);
	k = config_key_info(&n);
	if (n > MAX_KEYS)
		return (-1);
	for (i = 0; i < n; i++) {
		if (asprintf(&fx->names[i], "MUSUBI_%s", k[i].name) == -1)
			return (-1);
		for (j = 7; fx->names[i][j] != '\0'; j++)
			fx->names[i][j] = (char)toupper(
			    (unsigned char)fx->names[i][j]);
		if ((v = getenv(fx->names[i])) != NULL)
			fx->saved[i] = strdup(v);
		unsetenv(fx->names[i]);
	}
	fx->n = n;
	*state = fx;
	return (0);
}

/* Restore the environment, free what the test left. */
static int
teardown(void **state)
{
	struct fx	*fx = *state;
	size_t		 i;

	for (i = 0; i < fx->n; i++) {
		if (fx->saved[i] != NULL)
			setenv(fx->names[i], fx->saved[i], 1);
		else
			unsetenv(fx->names[i]);
		free(fx->saved[i]);
		free(fx->names[i]);
	}
	if (fx->path[0] != '\0')
		unlink(fx->path);
	if (fx->loaded)
		config_free(&fx->cfg);
	free(fx->cause);
	free(fx);
	return (0);
}

/* Write text to a new temporary file; its path is in fx->path. */
static const char *
write_file(struct fx *fx, const char *text)
{
	FILE	*f;
	int	 fd;

	snprintf(fx->path, sizeof fx->path, "/tmp/musubi-test-conf.XXXXXX");
	fd = mkstemp(fx->path);
	assert_true(fd >= 0);
	f = fdopen(fd, "w");
	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
	return (fx->path);
}

/* Load path (may be NULL) and expect success. */
static void
load_ok(struct fx *fx, const char *path)
{
	int	 rc = config_load(path, &fx->cfg, &fx->cause);

	if (rc != 0)
		fail_msg("config_load: %s", fx->cause);
	fx->loaded = 1;
}

/* Load a file of text and expect an error naming file:line. */
static void
load_fails_at(struct fx *fx, const char *text, int line, const char *want)
{
	char	 prefix[128];

	write_file(fx, text);
	assert_int_equal(config_load(fx->path, &fx->cfg, &fx->cause), -1);
	assert_non_null(fx->cause);
	snprintf(prefix, sizeof prefix, "%s:%d: ", fx->path, line);
	if (strncmp(fx->cause, prefix, strlen(prefix)) != 0)
		fail_msg("cause \"%s\" does not start with \"%s\"", fx->cause,
		    prefix);
	if (strstr(fx->cause, want) == NULL)
		fail_msg("cause \"%s\" does not contain \"%s\"", fx->cause,
		    want);
}

static void
test_config_defaults_without_file(void **state)
{
	struct fx	*fx = *state;

	load_ok(fx, NULL);
	assert_null(fx->cfg.path);
	assert_string_equal(fx->cfg.listen, "127.0.0.1:8080");
	assert_string_equal(fx->cfg.database_url, "dbname=musubi");
	assert_int_equal(fx->cfg.db_pool_size, 8);
	assert_int_equal(fx->cfg.db_queue_max, 20000);
	assert_int_equal(fx->cfg.db_connect_timeout, 5000);
	assert_int_equal(fx->cfg.db_statement_timeout, 30000);
	assert_int_equal(fx->cfg.db_startup_wait, 30000);
	assert_string_equal(fx->cfg.log_level, "info");
	assert_int_equal(fx->cfg.http_max_body, 1024 * 1024);
	assert_int_equal(fx->cfg.http_max_headers, 16 * 1024);
	assert_int_equal(fx->cfg.http_timeout, 30000);
	assert_int_equal(fx->cfg.http_max_connections, 4096);
	assert_int_equal(fx->cfg.http_max_inflight, 8192);
	assert_int_equal(fx->cfg.shutdown_timeout, 10000);
	assert_int_equal(fx->cfg.api_key_cache_ttl, 5000);
	assert_string_equal(fx->cfg.line_api_base, "https://api.line.me");
	assert_int_equal(fx->cfg.line_api_timeout, 10000);
}

static void
test_config_key_info_lists_every_key(void **state)
{
	const struct config_key_info	*k;
	size_t				 n, i;
	int				 saw_db = 0, saw_level = 0;

	k = config_key_info(&n);
	assert_true(n >= 18);
	for (i = 0; i < n; i++) {
		assert_non_null(k[i].help);
		assert_non_null(k[i].def);
		if (strcmp(k[i].name, "database_url") == 0) {
			saw_db = 1;
			assert_true(k[i].secret);
			assert_false(k[i].reload);
		}
		if (strcmp(k[i].name, "log_level") == 0) {
			saw_level = 1;
			assert_false(k[i].secret);
			assert_true(k[i].reload);
		}
	}
	assert_true(saw_db && saw_level);
}

static void
test_config_file_with_comments_quotes_spaces(void **state)
{
	struct fx	*fx = *state;

	write_file(fx,
	    "# a comment\n"
	    "; another comment\n"
	    "\n"
	    "   \t\n"
	    "  listen   =   127.0.0.1:9090   \n"
	    "log_level=\"warn\"\n"
	    "database_url = 'host=/tmp dbname=x user=y'\n"
	    "\thttp_timeout\t=\t2s\n"
	    "public_url = \"https://shop.example/\"\n"
	    "db_pool_size = 3\n");
	load_ok(fx, fx->path);
	assert_string_equal(fx->cfg.path, fx->path);
	assert_string_equal(fx->cfg.listen, "127.0.0.1:9090");
	assert_string_equal(fx->cfg.log_level, "warn");
	assert_string_equal(fx->cfg.database_url, "host=/tmp dbname=x user=y");
	assert_int_equal(fx->cfg.http_timeout, 2000);
	assert_string_equal(fx->cfg.public_url, "https://shop.example");
	assert_int_equal(fx->cfg.db_pool_size, 3);
}

static void
test_config_value_may_contain_equals(void **state)
{
	struct fx	*fx = *state;

	write_file(fx, "database_url = host=db port=5433 dbname=m\n");
	load_ok(fx, fx->path);
	assert_string_equal(fx->cfg.database_url, "host=db port=5433 dbname=m");
}

static void
test_config_missing_file_fails(void **state)
{
	struct fx	*fx = *state;

	assert_int_equal(config_load("/nonexistent/musubid.conf", &fx->cfg,
	    &fx->cause), -1);
	assert_non_null(strstr(fx->cause, "/nonexistent/musubid.conf"));
}

static void
test_config_error_unknown_key_names_line(void **state)
{
	load_fails_at(*state, "# ok\nlisten = 127.0.0.1:1\nlisen = x\n", 3,
	    "unknown key: lisen");
}

static void
test_config_error_missing_equals_names_line(void **state)
{
	load_fails_at(*state, "\n\nlog_level warn\n", 3,
	    "expected key = value");
}

static void
test_config_error_bad_duration_unit_names_line(void **state)
{
	load_fails_at(*state, "http_timeout = 5x\n", 1,
	    "http_timeout: bad duration unit: 5x");
}

static void
test_config_error_out_of_range_names_line(void **state)
{
	load_fails_at(*state, "log_level = info\ndb_pool_size = 0\n", 2,
	    "db_pool_size: 0 is out of range");
}

static void
test_config_error_not_a_number_names_line(void **state)
{
	load_fails_at(*state, "db_pool_size = eight\n", 1,
	    "db_pool_size: not a number: eight");
}

static void
test_config_error_bad_listen_names_line(void **state)
{
	load_fails_at(*state, "\nlisten = localhost\n", 2,
	    "listen: bad address: localhost");
}

static void
test_config_error_bad_log_level_names_line(void **state)
{
	load_fails_at(*state, "log_level = loud\n", 1,
	    "log_level: unknown level loud");
}

static void
test_config_error_bad_url_names_line(void **state)
{
	load_fails_at(*state, "line_api_base = ftp://x\n", 1,
	    "line_api_base: must start with http:// or https://");
}

static void
test_config_error_leaves_nothing_allocated(void **state)
{
	struct fx	*fx = *state;

	/* A failed load frees what it built; ASan would see a leak. */
	load_fails_at(fx, "listen = 127.0.0.1:1\nlog_level = x\n", 2,
	    "log_level");
	assert_null(fx->cfg.listen);
	assert_null(fx->cfg.path);
}

static void
test_config_duration_units(void **state)
{
	static const struct {
		const char	*in;
		long		 ms;
	} v[] = {
		{ "0", 0 }, { "7", 7000 }, { "250ms", 250 }, { "30s", 30000 },
		{ "5m", 300000 }, { "2h", 7200000 }, { "0ms", 0 },
	};
	size_t	 i;
	long	 ms;
	char	*cause = NULL;

	for (i = 0; i < sizeof v / sizeof v[0]; i++) {
		ms = -1;
		assert_int_equal(config_parse_duration(v[i].in, &ms, &cause),
		    0);
		assert_int_equal(ms, v[i].ms);
	}
	assert_null(cause);
}

static void
test_config_duration_rejects_bad_input(void **state)
{
	static const char *const bad[] = {
		"", "s", "-1s", "5x", "5 s", "1.5s", "5sec", "5d", "ms",
	};
	size_t	 i;
	long	 ms;
	char	*cause;

	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		cause = NULL;
		assert_int_equal(config_parse_duration(bad[i], &ms, &cause),
		    -1);
		assert_non_null(cause);
		free(cause);
	}
}

static void
test_config_duration_overflow(void **state)
{
	char	 s[64];
	long	 ms;
	char	*cause = NULL;

	snprintf(s, sizeof s, "%ldh", LONG_MAX / 1000);
	assert_int_equal(config_parse_duration(s, &ms, &cause), -1);
	assert_non_null(strstr(cause, "too large"));
	free(cause);
	cause = NULL;
	assert_int_equal(config_parse_duration("99999999999999999999999s",
	    &ms, &cause), -1);
	assert_non_null(cause);
	free(cause);
}

static void
test_config_sizes(void **state)
{
	static const struct {
		const char	*in;
		long		 bytes;
	} v[] = {
		{ "0", 0 }, { "512", 512 }, { "64k", 65536 }, { "64K", 65536 },
		{ "1m", 1048576 }, { "2M", 2097152 }, { "16kb", 16384 },
		{ "1MB", 1048576 },
	};
	size_t	 i;
	long	 b;
	char	*cause = NULL;

	for (i = 0; i < sizeof v / sizeof v[0]; i++) {
		b = -1;
		assert_int_equal(config_parse_size(v[i].in, &b, &cause), 0);
		assert_int_equal(b, v[i].bytes);
	}
	assert_null(cause);
}

static void
test_config_size_rejects_bad_input(void **state)
{
	static const char *const bad[] = {
		"", "k", "-1", "1g", "1kx", "1kib", "1 k", "1.5m",
	};
	size_t	 i;
	long	 b;
	char	*cause;

	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		cause = NULL;
		assert_int_equal(config_parse_size(bad[i], &b, &cause), -1);
		assert_non_null(cause);
		free(cause);
	}
}

static void
test_config_size_overflow(void **state)
{
	char	 s[64];
	long	 b;
	char	*cause = NULL;

	snprintf(s, sizeof s, "%ldm", LONG_MAX / 1024);
	assert_int_equal(config_parse_size(s, &b, &cause), -1);
	assert_non_null(strstr(cause, "too large"));
	free(cause);
}

static void
test_config_size_key_range(void **state)
{
	load_fails_at(*state, "http_max_body = 100\n", 1,
	    "http_max_body: 100 is out of range");
}

static void
test_config_split_hostport_ipv4(void **state)
{
	char	*host = NULL, *cause = NULL;
	int	 port = -1;

	assert_int_equal(config_split_hostport("127.0.0.1:8080", &host, &port,
	    &cause), 0);
	assert_string_equal(host, "127.0.0.1");
	assert_int_equal(port, 8080);
	free(host);
}

static void
test_config_split_hostport_name_and_port_zero(void **state)
{
	char	*host = NULL, *cause = NULL;
	int	 port = -1;

	assert_int_equal(config_split_hostport("localhost:0", &host, &port,
	    &cause), 0);
	assert_string_equal(host, "localhost");
	assert_int_equal(port, 0);
	free(host);
}

static void
test_config_split_hostport_ipv6_brackets(void **state)
{
	char	*host = NULL, *cause = NULL;
	int	 port = -1;

	assert_int_equal(config_split_hostport("[::1]:8080", &host, &port,
	    &cause), 0);
	assert_string_equal(host, "::1");
	assert_int_equal(port, 8080);
	free(host);
}

static void
test_config_split_hostport_rejects_bad(void **state)
{
	static const char *const bad[] = {
		"localhost", ":8080", "host:", "host:65536", "host:-1",
		"host:80x", "host:http", "[::1]", "[::1]8080", "[::1:8080",
		"[::1]:", "",
	};
	size_t	 i;
	char	*host, *cause;
	int	 port;

	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		host = NULL;
		cause = NULL;
		if (config_split_hostport(bad[i], &host, &port, &cause) != -1)
			fail_msg("accepted \"%s\"", bad[i]);
		assert_null(host);
		assert_non_null(cause);
		free(cause);
	}
}

static void
test_config_split_hostport_max_port(void **state)
{
	char	*host = NULL, *cause = NULL;
	int	 port = -1;

	assert_int_equal(config_split_hostport("h:65535", &host, &port,
	    &cause), 0);
	assert_int_equal(port, 65535);
	free(host);
}

static void
test_config_env_overrides_file(void **state)
{
	struct fx	*fx = *state;

	write_file(fx, "log_level = warn\nhttp_timeout = 5s\n");
	setenv("MUSUBI_LOG_LEVEL", "debug", 1);
	setenv("MUSUBI_DATABASE_URL", "dbname=fromenv", 1);
	load_ok(fx, fx->path);
	assert_string_equal(fx->cfg.log_level, "debug");
	assert_string_equal(fx->cfg.database_url, "dbname=fromenv");
	assert_int_equal(fx->cfg.http_timeout, 5000);	/* file, not env */
}

static void
test_config_env_applies_without_file(void **state)
{
	struct fx	*fx = *state;

	setenv("MUSUBI_HTTP_MAX_BODY", "64k", 1);
	setenv("MUSUBI_LISTEN", "127.0.0.1:0", 1);
	load_ok(fx, NULL);
	assert_int_equal(fx->cfg.http_max_body, 65536);
	assert_string_equal(fx->cfg.listen, "127.0.0.1:0");
}

static void
test_config_env_empty_value_ignored(void **state)
{
	struct fx	*fx = *state;

	setenv("MUSUBI_LOG_LEVEL", "", 1);
	load_ok(fx, NULL);
	assert_string_equal(fx->cfg.log_level, "info");
}

static void
test_config_env_bad_value_names_variable(void **state)
{
	struct fx	*fx = *state;

	setenv("MUSUBI_DB_POOL_SIZE", "0", 1);
	assert_int_equal(config_load(NULL, &fx->cfg, &fx->cause), -1);
	assert_non_null(strstr(fx->cause, "MUSUBI_DB_POOL_SIZE"));
	assert_non_null(strstr(fx->cause, "out of range"));
}

static void
test_config_env_bad_duration_names_variable(void **state)
{
	struct fx	*fx = *state;

	setenv("MUSUBI_SHUTDOWN_TIMEOUT", "soon", 1);
	assert_int_equal(config_load(NULL, &fx->cfg, &fx->cause), -1);
	assert_non_null(strstr(fx->cause, "MUSUBI_SHUTDOWN_TIMEOUT"));
}

/* Load two configs from two texts. */
static void
load_two(struct fx *fx, const char *a, const char *b, struct config *ca,
    struct config *cb)
{
	char	*cause = NULL;

	write_file(fx, a);
	if (config_load(fx->path, ca, &cause) != 0)
		fail_msg("%s", cause);
	unlink(fx->path);
	write_file(fx, b);
	if (config_load(fx->path, cb, &cause) != 0)
		fail_msg("%s", cause);
}

static void
test_config_noreload_changes_lists_keys(void **state)
{
	struct config	 a, b;
	char		*changed;

	load_two(*state,
	    "listen = 127.0.0.1:1\ndb_pool_size = 2\nlog_level = info\n",
	    "listen = 127.0.0.1:2\ndb_pool_size = 3\nlog_level = debug\n",
	    &a, &b);
	changed = config_noreload_changes(&a, &b);
	assert_non_null(changed);
	assert_string_equal(changed, "listen, db_pool_size");
	free(changed);
	config_free(&a);
	config_free(&b);
}

static void
test_config_noreload_changes_null_when_reloadable(void **state)
{
	struct config	 a, b;

	load_two(*state, "log_level = info\nhttp_timeout = 1s\n",
	    "log_level = error\nhttp_timeout = 2s\n", &a, &b);
	assert_null(config_noreload_changes(&a, &b));
	config_free(&a);
	config_free(&b);
}

static void
test_config_keep_noreload_copies_running_values(void **state)
{
	struct config	 a, b;

	load_two(*state,
	    "listen = 127.0.0.1:1\ndatabase_url = dbname=a\n"
	    "db_statement_timeout = 1s\nlog_level = info\n",
	    "listen = 127.0.0.1:2\ndatabase_url = dbname=b\n"
	    "db_statement_timeout = 2s\nlog_level = debug\n", &a, &b);
	config_keep_noreload(&a, &b);
	assert_string_equal(b.listen, "127.0.0.1:1");
	assert_string_equal(b.database_url, "dbname=a");
	assert_int_equal(b.db_statement_timeout, 1000);
	assert_string_equal(b.log_level, "debug");	/* reloadable */
	assert_null(config_noreload_changes(&a, &b));
	config_free(&a);
	config_free(&b);
}

static void
test_config_public_url_defaults_to_listen(void **state)
{
	struct fx	*fx = *state;

	setenv("MUSUBI_LISTEN", "127.0.0.1:9999", 1);
	load_ok(fx, NULL);
	assert_string_equal(fx->cfg.public_url, "http://127.0.0.1:9999");
}

static void
test_config_public_url_trailing_slashes_trimmed(void **state)
{
	struct fx	*fx = *state;

	write_file(fx, "public_url = https://crm.example.jp/base///\n"
	    "line_api_base = http://127.0.0.1:9000/\n");
	load_ok(fx, fx->path);
	assert_string_equal(fx->cfg.public_url, "https://crm.example.jp/base");
	assert_string_equal(fx->cfg.line_api_base, "http://127.0.0.1:9000");
}

static void
test_config_empty_line_api_base_refused(void **state)
{
	struct fx	*fx = *state;

	write_file(fx, "line_api_base = \"\"\n");
	assert_int_equal(config_load(fx->path, &fx->cfg, &fx->cause), -1);
	assert_non_null(strstr(fx->cause, "line_api_base"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
		T(test_config_defaults_without_file),
		T(test_config_key_info_lists_every_key),
		T(test_config_file_with_comments_quotes_spaces),
		T(test_config_value_may_contain_equals),
		T(test_config_missing_file_fails),
		T(test_config_error_unknown_key_names_line),
		T(test_config_error_missing_equals_names_line),
		T(test_config_error_bad_duration_unit_names_line),
		T(test_config_error_out_of_range_names_line),
		T(test_config_error_not_a_number_names_line),
		T(test_config_error_bad_listen_names_line),
		T(test_config_error_bad_log_level_names_line),
		T(test_config_error_bad_url_names_line),
		T(test_config_error_leaves_nothing_allocated),
		T(test_config_duration_units),
		T(test_config_duration_rejects_bad_input),
		T(test_config_duration_overflow),
		T(test_config_sizes),
		T(test_config_size_rejects_bad_input),
		T(test_config_size_overflow),
		T(test_config_size_key_range),
		T(test_config_split_hostport_ipv4),
		T(test_config_split_hostport_name_and_port_zero),
		T(test_config_split_hostport_ipv6_brackets),
		T(test_config_split_hostport_rejects_bad),
		T(test_config_split_hostport_max_port),
		T(test_config_env_overrides_file),
		T(test_config_env_applies_without_file),
		T(test_config_env_empty_value_ignored),
		T(test_config_env_bad_value_names_variable),
		T(test_config_env_bad_duration_names_variable),
		T(test_config_noreload_changes_lists_keys),
		T(test_config_noreload_changes_null_when_reloadable),
		T(test_config_keep_noreload_copies_running_values),
		T(test_config_public_url_defaults_to_listen),
		T(test_config_public_url_trailing_slashes_trimmed),
		T(test_config_empty_line_api_base_refused),
#undef T
	};

	log_set_level(LOG_LEVEL_ERROR);
	return (cmocka_run_group_tests(tests, NULL, NULL));
}
