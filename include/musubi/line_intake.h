/* SPDX-License-Identifier: ISC */
/*
 * line_intake.h -- POST /webhooks/line/{channel} and the processor that
 * applies what it stored.
 *
 * Intake: verify x-line-signature with the channel's secret, parse, and add
 * the delivery's events to the current group-commit batch.  A batch is one
 * INSERT ... ON CONFLICT DO NOTHING of every event that arrived while the
 * previous batch was being committed; every delivery in it is answered
 * (200, or 503 if the commit failed) only when that statement returns, so
 * LINE's 200 always means "committed".  A batch the server rejects is split
 * and retried one delivery at a time, so one bad delivery cannot fail others.
 *
 * Processor: a timer (and a kick after each commit) calls
 * musubi_line_apply() in PostgreSQL, which claims pending events with
 * FOR UPDATE SKIP LOCKED and applies them in one transaction; friends whose
 * profile is due are fetched from the LINE API (GET /v2/bot/profile) with
 * backoff on 429/5xx.
 */
#ifndef MUSUBI_LINE_INTAKE_H
#define MUSUBI_LINE_INTAKE_H

struct app;
struct chancache;
struct line_intake;

struct line_intake *line_intake_new(struct app *, struct chancache *);
/* Start the processor timers. */
int		 line_intake_start(struct line_intake *);
/* Stop taking new work; batches in flight still complete. */
void		 line_intake_stop(struct line_intake *);
/* True while commits, applies or profile fetches are in flight. */
int		 line_intake_busy(const struct line_intake *);
void		 line_intake_free(struct line_intake *);

#endif
