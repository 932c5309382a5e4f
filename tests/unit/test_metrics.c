/* SPDX-License-Identifier: ISC */
/*
 * test_metrics.c -- the Prometheus registry: counters, histograms (buckets,
 * sum, count), label escaping, the text rendering (HELP and TYPE once per
 * metric) and scrape-time collectors.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "musubi/metrics.h"

/* Render m into a new NUL-terminated string. */
static char *
render(struct metrics *m)
{
	struct evbuffer	*buf = evbuffer_new();
	size_t		 len;
	char		*s;

	assert_non_null(buf);
	metrics_render(m, buf);
	len = evbuffer_get_length(buf);
	s = malloc(len + 1);
	assert_non_null(s);
	evbuffer_remove(buf, s, len);
	s[len] = '\0';
	evbuffer_free(buf);
	return (s);
}

/* Count occurrences of needle in hay. */
static int
count(const char *hay, const char *needle)
{
	int	 n = 0;

	while ((hay = strstr(hay, needle)) != NULL) {
		n++;
		hay += strlen(needle);
	}
	return (n);
}

/* Fail unless text holds line as a whole line. */
static void
assert_line(const char *text, const char *line)
{
	char	*want;

	assert_true(asprintf(&want, "\n%s\n", line) != -1);
	if (strncmp(text, want + 1, strlen(want + 1)) != 0 &&
	    strstr(text, want) == NULL)
		fail_msg("line \"%s\" not found in:\n%s", line, text);
	free(want);
}

static void
test_metrics_counter_adds_up(void **state)
{
	struct metrics	*m = metrics_new();

	metrics_add(m, "c_total", "", 1);
	metrics_add(m, "c_total", "", 41);
	assert_int_equal(metrics_get(m, "c_total", ""), 42);
	metrics_free(m);
}

static void
test_metrics_counter_labels_are_separate_series(void **state)
{
	struct metrics	*m = metrics_new();

	metrics_add(m, "c_total", "code=\"200\"", 3);
	metrics_add(m, "c_total", "code=\"404\"", 1);
	assert_int_equal(metrics_get(m, "c_total", "code=\"200\""), 3);
	assert_int_equal(metrics_get(m, "c_total", "code=\"404\""), 1);
	assert_int_equal(metrics_get(m, "c_total", ""), 0);
	metrics_free(m);
}

static void
test_metrics_get_absent_is_zero(void **state)
{
	struct metrics	*m = metrics_new();

	assert_int_equal(metrics_get(m, "nothing_total", ""), 0);
	assert_int_equal(metrics_get(m, "nothing_total", NULL), 0);
	metrics_free(m);
}

static void
test_metrics_null_labels_same_as_empty(void **state)
{
	struct metrics	*m = metrics_new();

	metrics_add(m, "c_total", NULL, 2);
	metrics_add(m, "c_total", "", 3);
	assert_int_equal(metrics_get(m, "c_total", NULL), 5);
	metrics_free(m);
}

static void
test_metrics_counter_renders_value(void **state)
{
	struct metrics	*m = metrics_new();
	char		*s;

	metrics_describe(m, "c_total", "counter", "A counter.");
	metrics_add(m, "c_total", "", 7);
	metrics_add(m, "d_total", "", 1);	/* undescribed */
	metrics_describe(m, "d_total", "counter", "D.");
	metrics_add(m, "e_total", "a=\"b\"", 9);
	metrics_describe(m, "e_total", "counter", "E.");
	s = render(m);
	assert_line(s, "c_total 7");
	assert_line(s, "d_total 1");
	assert_line(s, "e_total{a=\"b\"} 9");
	free(s);
	metrics_free(m);
}

static void
test_metrics_histogram_buckets_are_cumulative(void **state)
{
	struct metrics	*m = metrics_new();
	char		*s;

	metrics_describe(m, "h_seconds", "histogram", "Latency.");
	metrics_observe(m, "h_seconds", "route=\"/x\"", 0.003);
	metrics_observe(m, "h_seconds", "route=\"/x\"", 0.2);
	metrics_observe(m, "h_seconds", "route=\"/x\"", 7.0);	/* > 2.5 */
	s = render(m);
	assert_line(s, "h_seconds_bucket{route=\"/x\",le=\"0.0005\"} 0");
	assert_line(s, "h_seconds_bucket{route=\"/x\",le=\"0.0025\"} 0");
	assert_line(s, "h_seconds_bucket{route=\"/x\",le=\"0.005\"} 1");
	assert_line(s, "h_seconds_bucket{route=\"/x\",le=\"0.1\"} 1");
	assert_line(s, "h_seconds_bucket{route=\"/x\",le=\"0.25\"} 2");
	assert_line(s, "h_seconds_bucket{route=\"/x\",le=\"1\"} 2");
	assert_line(s, "h_seconds_bucket{route=\"/x\",le=\"2.5\"} 2");
	assert_line(s, "h_seconds_bucket{route=\"/x\",le=\"+Inf\"} 3");
	assert_int_equal(count(s, "h_seconds_bucket{"), 13);
	free(s);
	metrics_free(m);
}

static void
test_metrics_histogram_bound_is_inclusive(void **state)
{
	struct metrics	*m = metrics_new();
	char		*s;

	metrics_describe(m, "h_seconds", "histogram", "Latency.");
	metrics_observe(m, "h_seconds", "", 0.1);
	s = render(m);
	assert_line(s, "h_seconds_bucket{le=\"0.05\"} 0");
	assert_line(s, "h_seconds_bucket{le=\"0.1\"} 1");
	free(s);
	metrics_free(m);
}

static void
test_metrics_histogram_sum_and_count(void **state)
{
	struct metrics	*m = metrics_new();
	char		*s;

	metrics_describe(m, "h_seconds", "histogram", "Latency.");
	metrics_observe(m, "h_seconds", "route=\"/x\"", 0.25);
	metrics_observe(m, "h_seconds", "route=\"/x\"", 0.5);
	metrics_observe(m, "h_seconds", "route=\"/y\"", 1.0);
	s = render(m);
	assert_line(s, "h_seconds_sum{route=\"/x\"} 0.750000");
	assert_line(s, "h_seconds_count{route=\"/x\"} 2");
	assert_line(s, "h_seconds_sum{route=\"/y\"} 1.000000");
	assert_line(s, "h_seconds_count{route=\"/y\"} 1");
	assert_int_equal(metrics_get(m, "h_seconds", "route=\"/x\""), 2);
	free(s);
	metrics_free(m);
}

static void
test_metrics_escape_label_value(void **state)
{
	char	*e = metrics_escape("a\"b\\c\nd/é");

	assert_string_equal(e, "a\\\"b\\\\c\\nd/é");
	free(e);
	e = metrics_escape("");
	assert_string_equal(e, "");
	free(e);
	e = metrics_escape("/api/v1/channels/{slug}");
	assert_string_equal(e, "/api/v1/channels/{slug}");
	free(e);
}

static void
test_metrics_render_help_type_once_per_metric(void **state)
{
	struct metrics	*m = metrics_new();
	char		*s;

	metrics_describe(m, "c_total", "counter", "Requests.");
	metrics_describe(m, "h_seconds", "histogram", "Latency.");
	metrics_add(m, "c_total", "code=\"200\"", 1);
	metrics_add(m, "c_total", "code=\"500\"", 1);
	metrics_add(m, "c_total", "code=\"404\"", 1);
	metrics_observe(m, "h_seconds", "route=\"/a\"", 0.1);
	metrics_observe(m, "h_seconds", "route=\"/b\"", 0.1);
	s = render(m);
	assert_int_equal(count(s, "# HELP c_total "), 1);
	assert_int_equal(count(s, "# TYPE c_total "), 1);
	assert_int_equal(count(s, "# HELP h_seconds "), 1);
	assert_int_equal(count(s, "# TYPE h_seconds "), 1);
	assert_line(s, "# HELP c_total Requests.");
	assert_line(s, "# TYPE c_total counter");
	assert_line(s, "# TYPE h_seconds histogram");
	/* The series follow their HELP/TYPE block. */
	assert_true(strstr(s, "# TYPE c_total") < strstr(s, "c_total{"));
	free(s);
	metrics_free(m);
}

static void
test_metrics_describe_twice_keeps_first(void **state)
{
	struct metrics	*m = metrics_new();
	char		*s;

	metrics_describe(m, "c_total", "counter", "First.");
	metrics_describe(m, "c_total", "counter", "Second.");
	metrics_add(m, "c_total", "", 1);
	s = render(m);
	assert_int_equal(count(s, "# HELP c_total"), 1);
	assert_line(s, "# HELP c_total First.");
	free(s);
	metrics_free(m);
}

static void
test_metrics_described_without_samples_renders_nothing(void **state)
{
	struct metrics	*m = metrics_new();
	char		*s;

	metrics_describe(m, "c_total", "counter", "Nothing yet.");
	s = render(m);
	assert_string_equal(s, "");
	free(s);
	metrics_free(m);
}

struct coll {
	int		 calls;
	const char	*text;
};

/* A collector that appends its text and counts its calls. */
static void
collect_cb(struct evbuffer *buf, void *arg)
{
	struct coll	*c = arg;

	c->calls++;
	evbuffer_add_printf(buf, "%s", c->text);
}

static void
test_metrics_collectors_run_at_render(void **state)
{
	struct metrics	*m = metrics_new();
	struct coll	 a = { 0, "# TYPE g1 gauge\ng1 1\n" };
	struct coll	 b = { 0, "# TYPE g2 gauge\ng2 2\n" };
	char		*s;

	metrics_collector(m, collect_cb, &a);
	metrics_collector(m, collect_cb, &b);
	assert_int_equal(a.calls, 0);
	s = render(m);
	assert_int_equal(a.calls, 1);
	assert_int_equal(b.calls, 1);
	assert_line(s, "g1 1");
	assert_line(s, "g2 2");
	assert_true(strstr(s, "g1 1") < strstr(s, "g2 2"));
	free(s);
	s = render(m);
	assert_int_equal(a.calls, 2);
	assert_int_equal(b.calls, 2);
	free(s);
	metrics_free(m);
}

static void
test_metrics_collectors_follow_registry(void **state)
{
	struct metrics	*m = metrics_new();
	struct coll	 a = { 0, "g1 1\n" };
	char		*s;

	metrics_collector(m, collect_cb, &a);
	metrics_describe(m, "c_total", "counter", "C.");
	metrics_add(m, "c_total", "", 1);
	s = render(m);
	assert_true(strstr(s, "c_total 1") < strstr(s, "g1 1"));
	free(s);
	metrics_free(m);
}

static void
test_metrics_many_series(void **state)
{
	struct metrics	*m = metrics_new();
	char		 labels[64];
	int		 i;

	/* More series than hash buckets: chains must hold them all. */
	for (i = 0; i < 500; i++) {
		snprintf(labels, sizeof labels, "n=\"%d\"", i);
		metrics_add(m, "c_total", labels, (uint64_t)i);
	}
	for (i = 0; i < 500; i++) {
		snprintf(labels, sizeof labels, "n=\"%d\"", i);
		assert_int_equal(metrics_get(m, "c_total", labels), i);
	}
	metrics_free(m);
}

static void
test_metrics_free_null(void **state)
{
	metrics_free(NULL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_metrics_counter_adds_up),
		cmocka_unit_test(test_metrics_counter_labels_are_separate_series),
		cmocka_unit_test(test_metrics_get_absent_is_zero),
		cmocka_unit_test(test_metrics_null_labels_same_as_empty),
		cmocka_unit_test(test_metrics_counter_renders_value),
		cmocka_unit_test(test_metrics_histogram_buckets_are_cumulative),
		cmocka_unit_test(test_metrics_histogram_bound_is_inclusive),
		cmocka_unit_test(test_metrics_histogram_sum_and_count),
		cmocka_unit_test(test_metrics_escape_label_value),
		cmocka_unit_test(test_metrics_render_help_type_once_per_metric),
		cmocka_unit_test(test_metrics_describe_twice_keeps_first),
		cmocka_unit_test(test_metrics_described_without_samples_renders_nothing),
		cmocka_unit_test(test_metrics_collectors_run_at_render),
		cmocka_unit_test(test_metrics_collectors_follow_registry),
		cmocka_unit_test(test_metrics_many_series),
		cmocka_unit_test(test_metrics_free_null),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
