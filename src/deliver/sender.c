/* SPDX-License-Identifier: ISC */
/*
 * sender.c -- the delivery engine: claim due batches, send them, record
 * what LINE said.
 *
 * sender_claim_cb asks musubi_batches_claim() for up to 2 x send_concurrency
 * batches (FOR UPDATE SKIP LOCKED, leased for send_lease); each claimed
 * batch already holds its exact body and X-Line-Retry-Key.  Batches wait in
 * a queue per channel and endpoint, each with a token bucket
 * (line_multicast_rps / line_push_rps, divided by the number of live
 * senders, so several musubid processes together stay under LINE's limit);
 * sender_dispatch_cb sends while tokens and concurrency allow and otherwise
 * re-arms itself for when the next token is due.  Outcomes are buffered and
 * written by musubi_batches_record() in groups (sender_flush_cb), which
 * applies each to the attempt it answers only, so a late answer never
 * undoes a newer one.  A 429 pauses its bucket (Retry-After, or a second).
 *
 * Nothing is lost when the process dies: a batch claimed and not recorded
 * stays 'sending' until its lease runs out, then is claimed again and
 * resent with the same retry key (LINE answers 409 if the first attempt
 * went through).  On SIGTERM the batches still queued are released at once.
 */
#include <sys/queue.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>

#include "musubi/app.h"
#include "musubi/campaign.h"
#include "musubi/config.h"
#include "musubi/crypto.h"
#include "musubi/db.h"
#include "musubi/lineapi.h"
#include "musubi/log.h"
#include "musubi/metrics.h"
#include "musubi/xmalloc.h"

#define SENDER_POLL_MS		250
#define SENDER_FLUSH_MS		20
#define SENDER_FLUSH_MAX	200
#define SENDER_CLAIM_MAX	500
#define SENDER_BACKOFF_BASE	250
#define SENDER_BACKOFF_MAX	(5 * 60 * 1000)
#define SENDER_429_MS		1000

struct send_bucket;

struct send_job {
	TAILQ_ENTRY(send_job)	 entry;
	struct sender		*s;
	struct send_bucket	*bk;
	int64_t			 channel_id;
	int64_t			 batch_id;
	int64_t			 run_id;
	int			 attempt;
	enum lineapi_kind	 kind;
	char			*retry_key;
	char			*body;
	size_t			 len;
	char			*token;
	double			 claimed;	/* monotonic seconds */
};
TAILQ_HEAD(send_jobs, send_job);

struct send_bucket {
	TAILQ_ENTRY(send_bucket) entry;
	int64_t			 channel_id;
	enum lineapi_kind	 kind;
	struct send_jobs	 queue;
	size_t			 n;
	double			 tokens;
	double			 last;		/* last refill */
	double			 paused_until;
};
TAILQ_HEAD(send_buckets, send_bucket);

struct sender {
	struct app		*app;
	struct lineapi		*api;
	char			 owner[96];
	struct event		*claim_ev;
	struct event		*dispatch_ev;
	struct event		*flush_ev;
	struct send_buckets	 buckets;
	size_t			 queued;
	size_t			 inflight;
	int			 claiming;
	int			 more;		/* the last claim was full */
	long			 asked;		/* asked of the last claim */
	int			 flushing;
	int			 stopping;
	int			 final;		/* the loop is over */
	int			 senders;	/* live senders sharing */
	json_t			*results;	/* waiting to be recorded */
	json_t			*flying;	/* being recorded */
};

static void	sender_claim_cb(evutil_socket_t, short, void *);
static void	sender_dispatch_cb(evutil_socket_t, short, void *);
static void	sender_flush_cb(evutil_socket_t, short, void *);

/* Seconds on the monotonic clock. */
static double
sender_now(void)
{
	struct timespec	 ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((double)ts.tv_sec + ts.tv_nsec / 1e9);
}

/* Arm a one-shot timer in ms (replacing an earlier arming). */
static void
sender_arm(struct event *ev, long ms)
{
	struct timeval	 tv = { ms / 1000, (ms % 1000) * 1000 };

	if (evtimer_add(ev, &tv) != 0)
		log_warnx("sender: cannot arm a timer");
}

/* Backoff before retry n: 250 ms doubling to 5 min, +-50% jitter. */
long
sender_backoff_ms(int attempt)
{
	long		 ms = SENDER_BACKOFF_BASE;
	uint16_t	 r;

	while (--attempt > 0 && ms < SENDER_BACKOFF_MAX)
		ms *= 2;
	if (ms > SENDER_BACKOFF_MAX)
		ms = SENDER_BACKOFF_MAX;
	crypto_random(&r, sizeof r);
	return (ms / 2 + (long)((double)ms * r / 65536.0));
}

/* Create the sender. */
struct sender *
sender_new(struct app *app, struct lineapi *api)
{
	struct sender	*s = xcalloc(1, sizeof *s);
	char		 host[64], *tok;

	s->app = app;
	s->api = api;
	if (gethostname(host, sizeof host) != 0)
		snprintf(host, sizeof host, "host");
	host[sizeof host - 1] = '\0';
	tok = crypto_token(6);
	snprintf(s->owner, sizeof s->owner, "%.60s:%ld:%s", host,
	    (long)getpid(), tok);
	free(tok);
	TAILQ_INIT(&s->buckets);
	s->senders = 1;
	s->results = json_array();
	s->claim_ev = evtimer_new(app->base, sender_claim_cb, s);
	s->dispatch_ev = evtimer_new(app->base, sender_dispatch_cb, s);
	s->flush_ev = evtimer_new(app->base, sender_flush_cb, s);
	metrics_describe(app->metrics, "musubi_campaign_sends_total",
	    "counter", "LINE push/multicast requests, by kind and outcome.");
	metrics_describe(app->metrics, "musubi_campaign_batches_claimed_total",
	    "counter", "Delivery batches claimed for sending.");
	return (s);
}

/* Start claiming. */
int
sender_start(struct sender *s)
{
	sender_arm(s->claim_ev, 0);
	return (0);
}

/* Claim now. */
void
sender_kick(struct sender *s)
{
	if (!s->stopping && !s->claiming)
		sender_arm(s->claim_ev, 0);
}

/* Queue an outcome for musubi_batches_record(). */
static void
sender_result(struct sender *s, const struct send_job *j, const char *outcome,
    const struct lineapi_result *r, long delay_ms)
{
	json_t	*row;

	row = json_pack("{s:I, s:I, s:i, s:s}", "c", (json_int_t)j->channel_id,
	    "b", (json_int_t)j->batch_id, "a", j->attempt, "o", outcome);
	if (r != NULL) {
		json_object_set_new(row, "s", json_integer(r->status));
		if (r->request_id != NULL)
			json_object_set_new(row, "q",
			    json_string(r->request_id));
		if (r->accepted_id != NULL)
			json_object_set_new(row, "x",
			    json_string(r->accepted_id));
		if (r->error != NULL)
			json_object_set_new(row, "e", json_string(r->error));
		json_object_set_new(row, "i", json_integer(r->bad_index));
	}
	json_object_set_new(row, "d", json_integer(delay_ms));
	json_array_append_new(s->results, row);
	if (json_array_size(s->results) >= SENDER_FLUSH_MAX)
		sender_arm(s->flush_ev, 0);
	else if (!evtimer_pending(s->flush_ev, NULL))
		sender_arm(s->flush_ev, SENDER_FLUSH_MS);
}

/* Free a job. */
static void
sender_job_free(struct send_job *j)
{
	free(j->retry_key);
	free(j->body);
	free(j->token);
	free(j);
}

/* Take a job out of its bucket's queue. */
static void
sender_unqueue(struct sender *s, struct send_job *j)
{
	TAILQ_REMOVE(&j->bk->queue, j, entry);
	j->bk->n--;
	s->queued--;
}

/* Give queued jobs back (of one run, one channel, or all: 0). */
static void
sender_release(struct sender *s, int64_t channel_id, int64_t run_id)
{
	struct send_bucket	*bk;
	struct send_job		*j, *next;

	TAILQ_FOREACH(bk, &s->buckets, entry) {
		if (channel_id != 0 && bk->channel_id != channel_id)
			continue;
		for (j = TAILQ_FIRST(&bk->queue); j != NULL; j = next) {
			next = TAILQ_NEXT(j, entry);
			if (run_id != 0 && j->run_id != run_id)
				continue;
			sender_unqueue(s, j);
			sender_result(s, j, "release", NULL, 0);
			sender_job_free(j);
		}
	}
}

/* The requests/s of a bucket for this process; 0 = unlimited. */
static double
sender_rate(const struct sender *s, const struct send_bucket *bk)
{
	const struct config	*cfg = s->app->cfg;
	double			 r;

	r = bk->kind == LINEAPI_MULTICAST ? cfg->line_multicast_rps :
	    cfg->line_push_rps;
	return (r / (s->senders > 0 ? s->senders : 1));
}

/* LINE answered one batch. */
static void
sender_sent_cb(const struct lineapi_result *r, void *arg)
{
	struct send_job		*j = arg;
	struct sender		*s = j->s;
	const char		*name = lineapi_outcome_name(r->outcome);
	char			 label[96];
	long			 delay = 0;

	s->inflight--;
	snprintf(label, sizeof label, "kind=\"%s\",outcome=\"%s\"",
	    j->kind == LINEAPI_PUSH ? "push" : "multicast", name);
	metrics_add(s->app->metrics, "musubi_campaign_sends_total", label, 1);
	switch (r->outcome) {
	case LINEAPI_RETRY:
		delay = sender_backoff_ms(j->attempt);
		log_warnx("sender: batch %lld attempt %d: %s; retrying with "
		    "the same key in %ld ms", (long long)j->batch_id,
		    j->attempt, r->error != NULL ? r->error : "error", delay);
		break;
	case LINEAPI_RATELIMIT:
		delay = r->retry_after_ms >= 0 ? r->retry_after_ms :
		    SENDER_429_MS / 2 + sender_backoff_ms(1);
		if (j->bk != NULL)
			j->bk->paused_until = sender_now() + delay / 1000.0;
		log_debug("sender: batch %lld: 429, again in %ld ms",
		    (long long)j->batch_id, delay);
		break;
	case LINEAPI_QUOTA:
		log_warnx("sender: run %lld stops: %s", (long long)j->run_id,
		    r->error);
		sender_release(s, j->channel_id, j->run_id);
		break;
	case LINEAPI_AUTH:
		log_warnx("sender: channel %lld: %s; its campaign stops",
		    (long long)j->channel_id, r->error);
		sender_release(s, j->channel_id, 0);
		break;
	case LINEAPI_BAD_RECIPIENT:
	case LINEAPI_BAD_REQUEST:
	case LINEAPI_BAD_MESSAGES:
	case LINEAPI_FAILED:
		log_warnx("sender: batch %lld refused: %s",
		    (long long)j->batch_id, r->error);
		break;
	case LINEAPI_SENT:
	case LINEAPI_ACCEPTED:
		break;
	}
	/* 400 on one recipient: a bad to[i] or, without an index, halves. */
	sender_result(s, j, r->outcome == LINEAPI_BAD_REQUEST &&
	    j->kind == LINEAPI_MULTICAST ? "bad" : name, r, delay);
	sender_job_free(j);
	event_active(s->dispatch_ev, EV_TIMEOUT, 0);
}

/* Refill a bucket's tokens. */
static void
sender_refill(struct sender *s, struct send_bucket *bk, double now)
{
	double	 rate = sender_rate(s, bk), cap;

	if (rate <= 0) {
		bk->tokens = 1e9;
		bk->last = now;
		return;
	}
	/*
	 * A quarter second of burst, to catch up after a stall; LINE's own
	 * bucket (like the sandbox's) holds about a second.
	 */
	cap = rate / 4 > 1 ? rate / 4 : 1;
	bk->tokens += (now - bk->last) * rate;
	if (bk->tokens > cap)
		bk->tokens = cap;
	bk->last = now;
}

/* Send what the buckets and the concurrency limit allow. */
static void
sender_dispatch_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sender		*s = arg;
	struct send_bucket	*bk;
	struct send_job		*j;
	double			 now = sender_now(), wait = -1, w, rate;
	double			 lease = s->app->cfg->send_lease / 1000.0;
	size_t			 limit = (size_t)s->app->cfg->send_concurrency;

	/* Buckets stay (one per channel and endpoint): a 429 pause lives on. */
	TAILQ_FOREACH(bk, &s->buckets, entry) {
		if (bk->n == 0)
			continue;
		sender_refill(s, bk, now);
		while (bk->n > 0 && s->inflight < limit &&
		    now >= bk->paused_until && bk->tokens >= 1) {
			j = TAILQ_FIRST(&bk->queue);
			sender_unqueue(s, j);
			if (now - j->claimed > lease / 2) {
				/* Held too long: let the lease do its job. */
				sender_result(s, j, "release", NULL, 0);
				sender_job_free(j);
				continue;
			}
			bk->tokens -= 1;
			s->inflight++;
			lineapi_send(s->api, j->kind, j->token, j->retry_key,
			    j->body, j->len, sender_sent_cb, j);
		}
		if (bk->n > 0 && s->inflight < limit) {
			rate = sender_rate(s, bk);
			if (now < bk->paused_until)
				w = bk->paused_until - now;
			else
				w = rate > 0 ? (1 - bk->tokens) / rate : 0;
			if (wait < 0 || w < wait)
				wait = w;
		}
	}
	if (wait >= 0)
		sender_arm(s->dispatch_ev, (long)(wait * 1000) + 1);
	/* Keep the queue topped up, so a slow claim never starves a bucket. */
	if (!s->stopping && !s->claiming && s->more &&
	    s->queued + s->inflight + limit / 4 <= 2 * limit)
		sender_arm(s->claim_ev, 0);
}

/* Find or make the bucket of a channel and endpoint. */
static struct send_bucket *
sender_bucket(struct sender *s, int64_t channel_id, enum lineapi_kind kind)
{
	struct send_bucket	*bk;

	TAILQ_FOREACH(bk, &s->buckets, entry) {
		if (bk->channel_id == channel_id && bk->kind == kind)
			return (bk);
	}
	bk = xcalloc(1, sizeof *bk);
	bk->channel_id = channel_id;
	bk->kind = kind;
	TAILQ_INIT(&bk->queue);
	bk->last = sender_now();
	bk->tokens = 1;
	TAILQ_INSERT_TAIL(&s->buckets, bk, entry);
	return (bk);
}

/* Batches were claimed: queue them. */
static void
sender_claimed_cb(const PGresult *res, const char *err, void *arg)
{
	struct sender		*s = arg;
	struct send_job		*j;
	int			 i, n;
	double			 now = sender_now();

	s->claiming = 0;
	if (err != NULL) {
		log_warnx("sender: claiming batches failed: %s", err);
		s->more = 0;
		if (!s->stopping)
			sender_arm(s->claim_ev, 1000);
		return;
	}
	n = PQntuples(res);
	for (i = 0; i < n; i++) {
		if (strcmp(db_value(res, i, 3), "stop") == 0) {
			/* Paused, cancelled or failed meanwhile. */
			sender_release(s, db_int(res, i, 0), db_int(res, i, 2));
			continue;
		}
		j = xcalloc(1, sizeof *j);
		j->s = s;
		j->channel_id = db_int(res, i, 0);
		j->batch_id = db_int(res, i, 1);
		j->run_id = db_int(res, i, 2);
		j->kind = strcmp(db_value(res, i, 3), "push") == 0 ?
		    LINEAPI_PUSH : LINEAPI_MULTICAST;
		j->attempt = (int)db_int(res, i, 4);
		j->retry_key = xstrdup(db_value(res, i, 5));
		j->body = xstrdup(db_value(res, i, 6));
		j->len = strlen(j->body);
		j->token = xstrdup(db_value(res, i, 7));
		j->claimed = now;
		s->senders = (int)db_int(res, i, 8);
		if (s->stopping) {
			sender_result(s, j, "release", NULL, 0);
			sender_job_free(j);
			continue;
		}
		j->bk = sender_bucket(s, j->channel_id, j->kind);
		TAILQ_INSERT_TAIL(&j->bk->queue, j, entry);
		j->bk->n++;
		s->queued++;
	}
	if (n > 0)
		metrics_add(s->app->metrics,
		    "musubi_campaign_batches_claimed_total", "", (uint64_t)n);
	s->more = (s->asked > 0 && n >= s->asked) || s->queued + s->inflight >=
	    (size_t)s->app->cfg->send_concurrency * 3 / 2;
	if (n > 0)
		event_active(s->dispatch_ev, EV_TIMEOUT, 0);
	/* Poll anyway: new work, and runs paused while we hold batches. */
	if (!s->stopping)
		sender_arm(s->claim_ev, SENDER_POLL_MS);
}

/* The runs of the batches waiting in memory, as a text[] literal. */
static char *
sender_held_runs(struct sender *s)
{
	struct send_bucket	*bk;
	struct send_job		*j;
	int64_t			 ids[64];
	size_t			 n = 0, i;
	char			*lit = xstrdup("{"), *t;

	TAILQ_FOREACH(bk, &s->buckets, entry) {
		TAILQ_FOREACH(j, &bk->queue, entry) {
			for (i = 0; i < n; i++) {
				if (ids[i] == j->run_id)
					break;
			}
			if (i == n && n < nitems(ids))
				ids[n++] = j->run_id;
		}
	}
	for (i = 0; i < n; i++) {
		xasprintf(&t, "%s%s%lld", lit, i ? "," : "",
		    (long long)ids[i]);
		free(lit);
		lit = t;
	}
	xasprintf(&t, "%s}", lit);
	free(lit);
	return (t);
}

/* Claim due batches. */
static void
sender_claim_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sender		*s = arg;
	struct db_params	*p;
	long			 room;
	long			 conc = s->app->cfg->send_concurrency;
	char			*held;

	if (s->stopping || s->claiming)
		return;
	if (!db_is_ready(s->app->db)) {
		sender_arm(s->claim_ev, 1000);
		return;
	}
	room = 2 * conc - (long)(s->queued + s->inflight);
	if (room < 0)
		room = 0;
	if (room > SENDER_CLAIM_MAX)
		room = SENDER_CLAIM_MAX;
	s->claiming = 1;
	evtimer_del(s->claim_ev);
	p = db_params_new();
	db_params_text(p, s->owner);
	db_params_int(p, room);
	db_params_int(p, s->app->cfg->send_lease);
	s->asked = room;
	held = sender_held_runs(s);
	db_params_text(p, held);
	free(held);
	db_query(s->app->db, "SELECT * FROM musubi_batches_claim($1, $2, $3, "
	    "$4::bigint[])", p, sender_claimed_cb, s);
}

/* The outcomes were recorded (or not: keep them for the next flush). */
static void
sender_flushed_cb(const PGresult *res, const char *err, void *arg)
{
	struct sender	*s = arg;

	s->flushing = 0;
	if (err != NULL) {
		if (!s->final)
			log_warnx("sender: recording %zu outcomes failed: %s; "
			    "retrying", json_array_size(s->flying), err);
		json_array_extend(s->flying, s->results);
		json_decref(s->results);
		s->results = s->flying;
		s->flying = NULL;
		sender_arm(s->flush_ev, 1000);
		return;
	}
	json_decref(s->flying);
	s->flying = NULL;
	if (json_array_size(s->results) > 0)
		sender_arm(s->flush_ev, 0);
}

/* Record buffered outcomes. */
static void
sender_flush_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sender		*s = arg;
	struct db_params	*p;
	char			*js;

	if (s->flushing || s->final || json_array_size(s->results) == 0)
		return;
	s->flushing = 1;
	s->flying = s->results;
	s->results = json_array();
	js = json_dumps(s->flying, JSON_COMPACT);
	if (js == NULL)
		fatalx("sender: json_dumps failed");
	p = db_params_new();
	db_params_text(p, s->owner);
	db_params_text(p, js);
	free(js);
	db_query(s->app->db, "SELECT musubi_batches_record($1, $2::jsonb)", p,
	    sender_flushed_cb, s);
}

/* Stop claiming and give back what is queued. */
void
sender_stop(struct sender *s)
{
	if (s->stopping)
		s->final = 1;
	s->stopping = 1;
	evtimer_del(s->claim_ev);
	sender_release(s, 0, 0);
	if (json_array_size(s->results) > 0 && !s->final)
		sender_arm(s->flush_ev, 0);
}

/* Tell whether sends or records are in flight. */
int
sender_busy(const struct sender *s)
{
	return (s->inflight > 0 || s->queued > 0 || s->claiming ||
	    s->flushing || json_array_size(s->results) > 0);
}

/* Free the sender. */
void
sender_free(struct sender *s)
{
	struct send_bucket	*bk;
	struct send_job		*j;

	if (s == NULL)
		return;
	while ((bk = TAILQ_FIRST(&s->buckets)) != NULL) {
		while ((j = TAILQ_FIRST(&bk->queue)) != NULL) {
			TAILQ_REMOVE(&bk->queue, j, entry);
			sender_job_free(j);
		}
		TAILQ_REMOVE(&s->buckets, bk, entry);
		free(bk);
	}
	if (s->results != NULL && json_array_size(s->results) > 0)
		log_warnx("sender: %zu outcomes not recorded; their batches "
		    "are resent with the same retry key after the lease",
		    json_array_size(s->results));
	json_decref(s->results);
	json_decref(s->flying);
	event_free(s->claim_ev);
	event_free(s->dispatch_ev);
	event_free(s->flush_ev);
	free(s);
}
