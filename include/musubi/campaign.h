/* SPDX-License-Identifier: ISC */
/*
 * campaign.h -- campaigns: what is sent (messages), to whom (audience,
 * policies), when (schedule), and the engine that sends it.
 *
 * messages.c (pure): validates LINE message objects against LINE's limits
 * before they are saved (errors carry a JSON pointer such as
 * /messages/0/text), finds personalisation tokens and the URLs to track,
 * and renders a recipient's copy: tokens replaced, every URL in a text and
 * in an action URI turned into a musubi /c/ link.
 * schedule.c (pure): validates schedules (now, at, daily, weekly).
 * campaign.c: the scheduler and run preparation (one timer; the work is in
 * SQL functions of sql/006_campaigns.sql, claimed with SKIP LOCKED).
 * sender.c: claims due delivery batches, sends them through lineapi.c
 * under a token bucket per channel and endpoint, and records outcomes.
 *
 * Personalisation tokens (any string of a message):
 *	{{display_name}}		the friend's LINE display name
 *	{{display_name|fallback}}	... or fallback when unknown
 *	{{user_id}}			the friend's LINE user id
 * A message with a token makes the campaign personalised: one push per
 * recipient instead of multicasts of up to 500.
 */
#ifndef MUSUBI_CAMPAIGN_H
#define MUSUBI_CAMPAIGN_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <jansson.h>

#include "musubi/compat.h"
#include "musubi/db.h"

struct app;
struct campaign;
struct lineapi;
struct sender;

#define CAMPAIGN_MESSAGES_MAX	5
#define CAMPAIGN_TEXT_MAX	5000	/* UTF-16 code units */
#define CAMPAIGN_ALTTEXT_MAX	400
#define CAMPAIGN_QUICKREPLY_MAX	13
#define CAMPAIGN_URL_MAX	2000
#define CAMPAIGN_BUBBLE_MAX	(30 * 1024)
#define CAMPAIGN_CAROUSEL_MAX	(50 * 1024)
#define CAMPAIGN_BUBBLES_MAX	12
#define CAMPAIGN_EMOJIS_MAX	20
#define CAMPAIGN_MULTICAST_MAX	500

/* messages.c */

/* One recipient, for rendering. */
struct campaign_recipient {
	int64_t		 friend_id;	/* 0: the multicast copy */
	const char	*user_id;	/* NULL for the multicast copy */
	const char	*display_name;	/* may be NULL */
};

/* Map a URL found in a message to its tracked URL: new string, or NULL. */
typedef char	*campaign_url_fn(const char *url, void *arg);

/* Count UTF-16 code units of UTF-8 text (a 4-byte sequence counts 2). */
size_t		 campaign_utf16_len(const char *);
/*
 * Validate a messages array.  0 if valid; -1 with *path (a JSON pointer,
 * "/messages/2/altText") and *cause, both new strings.
 */
int		 campaign_messages_validate(json_t *messages, char **path,
		    char **cause) MUSTCHECK;
/* Tell whether any string of the messages holds a personalisation token. */
int		 campaign_messages_personalized(json_t *messages);
/* The distinct URLs a render would rewrite: new array of strings. */
json_t		*campaign_messages_urls(json_t *messages);
/*
 * A recipient's copy: tokens replaced (rcpt may be NULL for none) and each
 * URL passed through fn (NULL: kept).  New reference.
 */
json_t		*campaign_messages_render(json_t *messages,
		    const struct campaign_recipient *rcpt, campaign_url_fn *fn,
		    void *arg);

/* schedule.c */

/*
 * Parse an RFC 3339 date-time that carries a zone ("Z" or "+09:00").
 * 0 and *out; -1 if malformed or without a zone.
 */
int		 campaign_parse_time(const char *, time_t *out) MUSTCHECK;
/*
 * Validate a schedule object against now: {"type":"now"}, {"type":"at",
 * "at":T}, {"type":"daily","time":"HH:MM","until"?:T} or {"type":"weekly",
 * "days":["mon",...],"time":"HH:MM","until"?:T}.  A time in the past is an
 * error.  0, or -1 with *path (under /schedule) and *cause (new strings).
 */
int		 campaign_schedule_validate(json_t *, time_t now, char **path,
		    char **cause) MUSTCHECK;

/* campaign.c */

struct campaign	*campaign_new(struct app *);
/* Start the scheduler and the sender. */
int		 campaign_start(struct campaign *);
/* Claim and prepare nothing new; sends in flight finish. */
void		 campaign_stop(struct campaign *);
/* True while preparation steps, sends or their records are in flight. */
int		 campaign_busy(const struct campaign *);
void		 campaign_free(struct campaign *);
/* Look for due work now (after an API call scheduled or resumed one). */
void		 campaign_kick(struct campaign *);

/* campaign_report.c */

/*
 * Ask PostgreSQL for a campaign's report (run 0: every run): the callback
 * gets one row, one column: the report as JSON text, or NULL when there is
 * no such campaign (or run).
 */
void		 campaign_report_query(struct db *, int64_t channel_id,
		    int64_t campaign_id, int64_t run_id,
		    db_result_cb *cb, void *arg);
/* The report as CSV: one line per run, then a "total" line.  New string. */
char		*campaign_report_csv(json_t *report);

/* sender.c */

struct sender	*sender_new(struct app *, struct lineapi *);
int		 sender_start(struct sender *);
/* Stop claiming; batches claimed but not yet sent are released. */
void		 sender_stop(struct sender *);
int		 sender_busy(const struct sender *);
void		 sender_free(struct sender *);
/* Claim now (a run just became ready to send). */
void		 sender_kick(struct sender *);
/* Backoff before retry n (1-based) in ms: 250 ms doubling, jittered. */
long		 sender_backoff_ms(int attempt);

#endif
