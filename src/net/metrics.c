/* SPDX-License-Identifier: ISC */
/*
 * metrics.c -- counters and histograms in a chained hash table keyed by
 * (name, labels), rendered in the Prometheus text format.  Series are never
 * removed: label values come from route patterns and status codes, never
 * from request data, so their number stays small.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "musubi/metrics.h"
#include "musubi/xmalloc.h"

#define METRICS_BUCKETS	64
#define METRICS_NLE	12

static const double metrics_le[METRICS_NLE] = {
	0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
	2.5,
};

struct metrics_series {
	char			*name;
	char			*labels;
	int			 histogram;
	uint64_t		 count;
	double			 sum;
	uint64_t		 buckets[METRICS_NLE];
	struct metrics_series	*next;		/* hash chain */
	struct metrics_series	*order;		/* insertion order */
};

struct metrics_desc {
	char			*name;
	char			*type;
	char			*help;
	struct metrics_desc	*next;
};

struct metrics_collector {
	metrics_collect_cb		*cb;
	void				*arg;
	struct metrics_collector	*next;
};

struct metrics {
	struct metrics_series	*table[METRICS_BUCKETS];
	struct metrics_series	*first, *last;
	struct metrics_desc	*descs;
	struct metrics_collector *collectors, *lastcol;
};

/* Create an empty registry. */
struct metrics *
metrics_new(void)
{
	return (xcalloc(1, sizeof(struct metrics)));
}

/* Free the registry. */
void
metrics_free(struct metrics *m)
{
	struct metrics_series		*s, *ns;
	struct metrics_desc		*d, *nd;
	struct metrics_collector	*c, *nc;

	if (m == NULL)
		return;
	for (s = m->first; s != NULL; s = ns) {
		ns = s->order;
		free(s->name);
		free(s->labels);
		free(s);
	}
	for (d = m->descs; d != NULL; d = nd) {
		nd = d->next;
		free(d->name);
		free(d->type);
		free(d->help);
		free(d);
	}
	for (c = m->collectors; c != NULL; c = nc) {
		nc = c->next;
		free(c);
	}
	free(m);
}

/* Hash a name and labels (FNV-1a). */
static unsigned
metrics_hash(const char *name, const char *labels)
{
	uint32_t	 h = 2166136261u;
	const char	*p;

	for (p = name; *p != '\0'; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	h = (h ^ '{') * 16777619u;
	for (p = labels; *p != '\0'; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	return (h % METRICS_BUCKETS);
}

/* Find or create a series. */
static struct metrics_series *
metrics_series(struct metrics *m, const char *name, const char *labels,
    int create)
{
	unsigned		 h;
	struct metrics_series	*s;

	if (labels == NULL)
		labels = "";
	h = metrics_hash(name, labels);
	for (s = m->table[h]; s != NULL; s = s->next) {
		if (strcmp(s->name, name) == 0 && strcmp(s->labels, labels) == 0)
			return (s);
	}
	if (!create)
		return (NULL);
	s = xcalloc(1, sizeof *s);
	s->name = xstrdup(name);
	s->labels = xstrdup(labels);
	s->next = m->table[h];
	m->table[h] = s;
	if (m->last != NULL)
		m->last->order = s;
	else
		m->first = s;
	m->last = s;
	return (s);
}

/* Declare help and type. */
void
metrics_describe(struct metrics *m, const char *name, const char *type,
    const char *help)
{
	struct metrics_desc	*d;

	for (d = m->descs; d != NULL; d = d->next) {
		if (strcmp(d->name, name) == 0)
			return;
	}
	d = xcalloc(1, sizeof *d);
	d->name = xstrdup(name);
	d->type = xstrdup(type);
	d->help = xstrdup(help);
	d->next = m->descs;
	m->descs = d;
}

/* Add to a counter. */
void
metrics_add(struct metrics *m, const char *name, const char *labels,
    uint64_t n)
{
	metrics_series(m, name, labels, 1)->count += n;
}

/* Observe a value in a histogram. */
void
metrics_observe(struct metrics *m, const char *name, const char *labels,
    double value)
{
	struct metrics_series	*s = metrics_series(m, name, labels, 1);
	int			 i;

	s->histogram = 1;
	s->count++;
	s->sum += value;
	for (i = 0; i < METRICS_NLE; i++) {
		if (value <= metrics_le[i])
			s->buckets[i]++;
	}
}

/* Read a counter. */
uint64_t
metrics_get(struct metrics *m, const char *name, const char *labels)
{
	struct metrics_series	*s = metrics_series(m, name, labels, 0);

	return (s != NULL ? s->count : 0);
}

/* Register a scrape-time collector. */
void
metrics_collector(struct metrics *m, metrics_collect_cb *cb, void *arg)
{
	struct metrics_collector	*c = xcalloc(1, sizeof *c);

	c->cb = cb;
	c->arg = arg;
	if (m->lastcol != NULL)
		m->lastcol->next = c;
	else
		m->collectors = c;
	m->lastcol = c;
}

/* Escape a label value. */
char *
metrics_escape(const char *v)
{
	char	*out = xmalloc(2 * strlen(v) + 1), *p = out;

	for (; *v != '\0'; v++) {
		if (*v == '\\' || *v == '"') {
			*p++ = '\\';
			*p++ = *v;
		} else if (*v == '\n') {
			*p++ = '\\';
			*p++ = 'n';
		} else
			*p++ = *v;
	}
	*p = '\0';
	return (out);
}

/* Write one histogram series. */
static void
metrics_render_histogram(struct evbuffer *buf, const struct metrics_series *s)
{
	const char	*sep = *s->labels != '\0' ? "," : "";
	int		 i;

	for (i = 0; i < METRICS_NLE; i++) {
		evbuffer_add_printf(buf, "%s_bucket{%s%sle=\"%g\"} %llu\n",
		    s->name, s->labels, sep, metrics_le[i],
		    (unsigned long long)s->buckets[i]);
	}
	evbuffer_add_printf(buf, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", s->name,
	    s->labels, sep, (unsigned long long)s->count);
	if (*s->labels != '\0') {
		evbuffer_add_printf(buf, "%s_sum{%s} %.6f\n", s->name,
		    s->labels, s->sum);
		evbuffer_add_printf(buf, "%s_count{%s} %llu\n", s->name,
		    s->labels, (unsigned long long)s->count);
	} else {
		evbuffer_add_printf(buf, "%s_sum %.6f\n", s->name, s->sum);
		evbuffer_add_printf(buf, "%s_count %llu\n", s->name,
		    (unsigned long long)s->count);
	}
}

/* Render everything. */
void
metrics_render(struct metrics *m, struct evbuffer *buf)
{
	struct metrics_desc		*d;
	struct metrics_series		*s;
	struct metrics_collector	*c;

	for (d = m->descs; d != NULL; d = d->next) {
		int	 any = 0;

		for (s = m->first; s != NULL; s = s->order) {
			if (strcmp(s->name, d->name) != 0)
				continue;
			if (!any) {
				evbuffer_add_printf(buf, "# HELP %s %s\n"
				    "# TYPE %s %s\n", d->name, d->help,
				    d->name, d->type);
				any = 1;
			}
			if (s->histogram)
				metrics_render_histogram(buf, s);
			else if (*s->labels != '\0')
				evbuffer_add_printf(buf, "%s{%s} %llu\n",
				    s->name, s->labels,
				    (unsigned long long)s->count);
			else
				evbuffer_add_printf(buf, "%s %llu\n", s->name,
				    (unsigned long long)s->count);
		}
	}
	for (c = m->collectors; c != NULL; c = c->next)
		c->cb(buf, c->arg);
}
