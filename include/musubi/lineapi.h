/* SPDX-License-Identifier: ISC */
/*
 * lineapi.h -- the LINE Messaging API calls that campaigns make, over
 * curlev: push and multicast with an X-Line-Retry-Key, and the monthly
 * quota (GET /v2/bot/message/quota and .../quota/consumption).
 *
 * Every answer is classified into what the sender must do next
 * (lineapi_classify(), pure, so the mapping is unit-tested):
 *	2xx		LINEAPI_SENT
 *	409		LINEAPI_ACCEPTED: the retry key was accepted before;
 *			x-line-accepted-request-id names that call
 *	5xx, timeout,	LINEAPI_RETRY: same body, same key, later
 *	no answer
 *	429		LINEAPI_RATELIMIT (Retry-After honoured), or
 *			LINEAPI_QUOTA for "You have reached your monthly limit."
 *	400		LINEAPI_BAD_RECIPIENT when LINE names "to" or "to[i]"
 *			(bad_index = i, or -2 for "to"), LINEAPI_BAD_MESSAGES
 *			when it names the messages, else LINEAPI_BAD_REQUEST
 *	401, 403	LINEAPI_AUTH
 *	other 4xx	LINEAPI_FAILED
 * LINE's message and details are kept in the result for the record.
 */
#ifndef MUSUBI_LINEAPI_H
#define MUSUBI_LINEAPI_H

#include <stddef.h>
#include <stdint.h>

#include "musubi/compat.h"

struct app;
struct lineapi;

enum lineapi_kind {
	LINEAPI_PUSH,
	LINEAPI_MULTICAST,
};

enum lineapi_outcome {
	LINEAPI_SENT,
	LINEAPI_ACCEPTED,
	LINEAPI_RETRY,
	LINEAPI_RATELIMIT,
	LINEAPI_QUOTA,
	LINEAPI_BAD_RECIPIENT,
	LINEAPI_BAD_MESSAGES,
	LINEAPI_BAD_REQUEST,
	LINEAPI_AUTH,
	LINEAPI_FAILED,
};

/* What one send came to.  Strings are borrowed for the callback only. */
struct lineapi_result {
	enum lineapi_outcome	 outcome;
	long			 status;	/* 0: no HTTP answer */
	const char		*request_id;	/* x-line-request-id */
	const char		*accepted_id;	/* x-line-accepted-request-id */
	char			*error;		/* message + details, or NULL */
	long			 retry_after_ms; /* Retry-After; -1 if none */
	int			 bad_index;	/* to[i]; -2 "to"; -1 none */
	double			 elapsed;	/* seconds */
};

/* The channel's monthly quota: limited 0 means unlimited. */
struct lineapi_quota {
	int		 limited;
	int64_t		 value;		/* messages per month */
	int64_t		 used;		/* totalUsage so far */
	int		 auth_failed;	/* 401/403: the token is bad */
	const char	*err;		/* NULL on success */
};

typedef void lineapi_send_cb(const struct lineapi_result *, void *arg);
typedef void lineapi_quota_cb(const struct lineapi_quota *, void *arg);

struct lineapi	*lineapi_new(struct app *);
void		 lineapi_free(struct lineapi *);
/* Requests in flight. */
size_t		 lineapi_inflight(const struct lineapi *);

/*
 * POST a push or multicast body (exact bytes, copied) with the channel's
 * access token and the retry key.  The callback runs once, from the loop.
 */
void		 lineapi_send(struct lineapi *, enum lineapi_kind,
		    const char *token, const char *retry_key, const char *body,
		    size_t len, lineapi_send_cb *, void *arg);
/* Read the quota and, when limited, its consumption. */
void		 lineapi_quota(struct lineapi *, const char *token,
		    lineapi_quota_cb *, void *arg);

/*
 * Classify an answer (pure).  err is the transport error or NULL; body is
 * LINE's JSON (may be NULL).  Fills outcome, bad_index and error (new
 * string, caller frees); status and the header fields are left alone.
 */
void		 lineapi_classify(long status, const char *err,
		    const char *body, size_t len, struct lineapi_result *);
/* Parse a Retry-After value (seconds or HTTP date) into ms; -1 if bad. */
long		 lineapi_retry_after(const char *);
/* The outcome's name as musubi_batches_record() spells it. */
const char	*lineapi_outcome_name(enum lineapi_outcome);

#endif
