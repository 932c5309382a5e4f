/* SPDX-License-Identifier: ISC */
/*
 * campaign_report.c -- campaign and run reports.  The numbers are computed
 * in PostgreSQL (musubi_campaign_report() and musubi_run_report() in
 * sql/006_campaigns.sql, where the definitions of sent, failed, skipped,
 * clicks and conversions live); this module asks for them and turns the
 * JSON into CSV for spreadsheets.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <jansson.h>

#include "musubi/campaign.h"
#include "musubi/db.h"
#include "musubi/xmalloc.h"

static const char *const report_skips[] = {
	"blocked", "not_friend", "frequency_cap", "quota", NULL
};

/* Ask for a report. */
void
campaign_report_query(struct db *db, int64_t channel_id, int64_t campaign_id,
    int64_t run_id, db_result_cb *cb, void *arg)
{
	struct db_params	*p = db_params_new();

	db_params_int(p, channel_id);
	db_params_int(p, campaign_id);
	if (run_id > 0)
		db_params_int(p, run_id);
	else
		db_params_null(p);
	db_query(db, "SELECT musubi_campaign_report($1, $2, $3::bigint)::text",
	    p, cb, arg);
}

/* Write one CSV field, quoted when it needs to be. */
static void
report_field(struct evbuffer *b, json_t *v, int first)
{
	const char	*s, *p;
	char		 num[64];
	int		 formula;

	if (!first)
		evbuffer_add(b, ",", 1);
	if (v == NULL || json_is_null(v))
		return;
	if (json_is_integer(v)) {
		snprintf(num, sizeof num, "%lld",
		    (long long)json_integer_value(v));
		evbuffer_add(b, num, strlen(num));
		return;
	}
	if (!json_is_string(v))
		return;
	s = json_string_value(v);
	/*
	 * Cells that a spreadsheet would run as formulas are neutralised
	 * (a negative amount such as "-1200.5" is a number, not a formula).
	 */
	formula = *s != '\0' && strchr("=+-@", *s) != NULL &&
	    strspn(s + 1, "0123456789.") != strlen(s + 1);
	if (strpbrk(s, ",\"\r\n") == NULL && !formula) {
		evbuffer_add(b, s, strlen(s));
		return;
	}
	evbuffer_add(b, "\"", 1);
	if (formula)
		evbuffer_add(b, "'", 1);
	for (p = s; *p != '\0'; p++) {
		if (*p == '"')
			evbuffer_add(b, "\"", 1);
		evbuffer_add(b, p, 1);
	}
	evbuffer_add(b, "\"", 1);
}

/* Write one report line (a run, or the totals). */
static void
report_line(struct evbuffer *b, json_t *label, json_t *r)
{
	json_t		*conv = json_object_get(r, "conversions");
	json_t		*dv = json_object_get(conv, "delivery");
	json_t		*ck = json_object_get(conv, "click");
	json_t		*sk = json_object_get(r, "skipped");
	size_t		 i;
	static const char *const cols[] = { "scheduled_at", "started_at",
	    "finished_at", "state", "audience", "sent", "queued", "cancelled",
	    "failed", NULL };

	report_field(b, label, 1);
	for (i = 0; cols[i] != NULL; i++)
		report_field(b, json_object_get(r, cols[i]), 0);
	for (i = 0; report_skips[i] != NULL; i++) {
		json_t	*n = json_object_get(sk, report_skips[i]);
		json_t	*zero = json_integer(0);

		report_field(b, n != NULL ? n : zero, 0);
		json_decref(zero);
	}
	report_field(b, json_object_get(r, "requests"), 0);
	report_field(b, json_object_get(r, "clicks"), 0);
	report_field(b, json_object_get(r, "unique_clickers"), 0);
	report_field(b, json_object_get(dv, "orders"), 0);
	report_field(b, json_object_get(dv, "revenue"), 0);
	report_field(b, json_object_get(ck, "orders"), 0);
	report_field(b, json_object_get(ck, "revenue"), 0);
	report_field(b, json_object_get(dv, "currency"), 0);
	evbuffer_add(b, "\r\n", 2);
}

/* Render a report as CSV. */
char *
campaign_report_csv(json_t *report)
{
	struct evbuffer	*b = evbuffer_new();
	json_t		*runs = json_object_get(report, "runs"), *r, *lbl;
	size_t		 i, n;
	char		*out;

	evbuffer_add_printf(b, "run_id,scheduled_at,started_at,finished_at,"
	    "state,audience,sent,queued,cancelled,failed,skipped_blocked,"
	    "skipped_not_friend,skipped_frequency_cap,skipped_quota,requests,"
	    "clicks,unique_clickers,delivery_orders,delivery_revenue,"
	    "click_orders,click_revenue,currency\r\n");
	json_array_foreach(runs, i, r)
		report_line(b, json_object_get(r, "run_id"), r);
	lbl = json_string("total");
	report_line(b, lbl, json_object_get(report, "totals"));
	json_decref(lbl);
	n = evbuffer_get_length(b);
	out = xmalloc(n + 1);
	evbuffer_remove(b, out, n);
	out[n] = '\0';
	evbuffer_free(b);
	return (out);
}
