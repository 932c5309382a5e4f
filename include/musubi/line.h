/* SPDX-License-Identifier: ISC */
/*
 * line.h -- parse a LINE webhook delivery into inbox records.  Pure: no I/O.
 *
 * The body must already have passed the signature check.  Anything that is
 * JSON is accepted: a delivery of unexpected shape, an event that is not an
 * object, or one missing its type or timestamp becomes a record with
 * `problem` set, so it is stored and marked rather than lost.  Only a body
 * that is not JSON at all (or not UTF-8) fails.
 */
#ifndef MUSUBI_LINE_H
#define MUSUBI_LINE_H

#include <stddef.h>

#include <jansson.h>

#include "musubi/compat.h"

#define LINE_EVENT_ID_MAX	128

struct line_event_rec {
	char	*event_id;	/* webhookEventId, or "h:" + SHA-256 hex */
	char	*type;		/* "" if missing */
	long long ts_ms;	/* event time, -1 if missing or invalid */
	char	*mode;		/* "active", "standby" or NULL */
	char	*user_id;	/* source.userId or NULL */
	int	 redelivery;	/* deliveryContext.isRedelivery */
	json_t	*payload;	/* the event object (own reference) */
	char	*problem;	/* NULL, or why the record is malformed */
};

struct line_delivery {
	char			*destination;	/* NULL if missing */
	struct line_event_rec	*events;
	size_t			 nevents;
};

/*
 * Parse body into d (zeroed first).  0 on success, including deliveries of
 * odd shape; -1 with *cause (caller frees) when the body is not JSON.
 */
int	 line_parse(const void *body, size_t len, struct line_delivery *d,
	    char **cause);
void	 line_delivery_free(struct line_delivery *);

/* True for "U" followed by 32 lowercase hex digits. */
int	 line_is_user_id(const char *);

#endif
