/* SPDX-License-Identifier: ISC */
/*
 * metrics.h -- a small Prometheus registry.  Counters and histograms are
 * keyed by metric name and a label string (`route="/healthz",code="200"`);
 * gauges are read at scrape time through callbacks, so the modules that own
 * the state (db pool, http server, senders) stay the only writers.
 * metrics_render() writes the text exposition format 0.0.4.
 */
#ifndef MUSUBI_METRICS_H
#define MUSUBI_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include <event2/buffer.h>

#include "musubi/compat.h"

struct metrics;

/* Append gauge lines (help/type lines included) to buf at scrape time. */
typedef void metrics_collect_cb(struct evbuffer *buf, void *arg);

struct metrics	*metrics_new(void);
void		 metrics_free(struct metrics *);

/* Declare a metric's help text and type ("counter", "histogram"). */
void		 metrics_describe(struct metrics *, const char *name,
		    const char *type, const char *help);
/* Add to a counter; labels may be "" (copied on first use). */
void		 metrics_add(struct metrics *, const char *name,
		    const char *labels, uint64_t n);
/* Record one observation (seconds) in a latency histogram. */
void		 metrics_observe(struct metrics *, const char *name,
		    const char *labels, double value);
/* Read back a counter (tests); 0 if absent. */
uint64_t	 metrics_get(struct metrics *, const char *name,
		    const char *labels);
/* Register a collector run at every scrape. */
void		 metrics_collector(struct metrics *, metrics_collect_cb *,
		    void *arg);
/* Write every metric to buf. */
void		 metrics_render(struct metrics *, struct evbuffer *buf);

/* Escape a label value for the exposition format: new string. */
char		*metrics_escape(const char *);

#endif
