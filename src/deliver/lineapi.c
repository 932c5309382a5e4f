/* SPDX-License-Identifier: ISC */
/*
 * lineapi.c -- push, multicast and quota calls to the LINE Messaging API
 * (see lineapi.h).  Each call is one curlev request with the channel's
 * Bearer token; the base URL and timeout are read from the running
 * configuration at every call, so a SIGHUP reload takes effect at once.
 * Nothing here retries: the sender decides, from the classified result.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>

#include "musubi/app.h"
#include "musubi/config.h"
#include "musubi/curlev.h"
#include "musubi/lineapi.h"
#include "musubi/log.h"
#include "musubi/xmalloc.h"

#define LINEAPI_MAX_RESPONSE	(256 * 1024)
#define LINEAPI_MSG_QUOTA	"You have reached your monthly limit."

struct lineapi {
	struct app	*app;
	size_t		 inflight;
};

struct lineapi_call {
	struct lineapi		*la;
	lineapi_send_cb		*cb;
	void			*arg;
};

struct lineapi_qcall {
	struct lineapi		*la;
	char			*token;
	struct lineapi_quota	 q;
	lineapi_quota_cb	*cb;
	void			*arg;
};

/* Create the client. */
struct lineapi *
lineapi_new(struct app *app)
{
	struct lineapi	*la = xcalloc(1, sizeof *la);

	la->app = app;
	return (la);
}

/* Free the client (calls in flight belong to curlev and still finish). */
void
lineapi_free(struct lineapi *la)
{
	free(la);
}

/* Count requests in flight. */
size_t
lineapi_inflight(const struct lineapi *la)
{
	return (la->inflight);
}

/* Name an outcome for musubi_batches_record(). */
const char *
lineapi_outcome_name(enum lineapi_outcome o)
{
	switch (o) {
	case LINEAPI_SENT:
		return ("sent");
	case LINEAPI_ACCEPTED:
		return ("accepted");
	case LINEAPI_RETRY:
		return ("retry");
	case LINEAPI_RATELIMIT:
		return ("ratelimit");
	case LINEAPI_QUOTA:
		return ("quota");
	case LINEAPI_BAD_RECIPIENT:
		return ("bad");
	case LINEAPI_BAD_MESSAGES:
		return ("bad_messages");
	case LINEAPI_BAD_REQUEST:
		return ("bad");
	case LINEAPI_AUTH:
		return ("auth");
	case LINEAPI_FAILED:
		return ("failed");
	}
	return ("failed");
}

/* Parse Retry-After: delta seconds, or an HTTP date. */
long
lineapi_retry_after(const char *v)
{
	struct tm	 tm;
	char		*end;
	long		 s;
	time_t		 t, now;

	if (v == NULL)
		return (-1);
	while (*v == ' ')
		v++;
	if (isdigit((unsigned char)*v)) {
		s = strtol(v, &end, 10);
		while (*end == ' ')
			end++;
		if (*end != '\0' || s < 0 || s > 86400)
			return (-1);
		return (s * 1000);
	}
	memset(&tm, 0, sizeof tm);
	end = strptime(v, "%a, %d %b %Y %H:%M:%S GMT", &tm);
	if (end == NULL || *end != '\0')
		return (-1);
	t = timegm(&tm);
	now = time(NULL);
	if (t <= now)
		return (0);
	if (t - now > 86400)
		return (86400L * 1000);
	return ((long)(t - now) * 1000);
}

/*
 * Find "to[N]" or a bare "to" property in a string; returns N, -2 for a
 * bare "to", -1 for neither.
 */
static int
lineapi_to_index(const char *s)
{
	const char	*p;
	char		*end;
	long		 n;

	if (s == NULL)
		return (-1);
	for (p = s; (p = strstr(p, "to")) != NULL; p += 2) {
		if (p != s && (isalnum((unsigned char)p[-1]) || p[-1] == '_' ||
		    p[-1] == '.'))
			continue;
		if (p[2] == '[') {
			n = strtol(p + 3, &end, 10);
			if (end != p + 3 && *end == ']' && n >= 0 &&
			    n < 100000)
				return ((int)n);
			continue;
		}
		if (isalnum((unsigned char)p[2]) || p[2] == '_' || p[2] == '.')
			continue;
		/* "to" as a whole property name, as in "The property, to," */
		if (p[2] == ',' || p[2] == '\0' || p[2] == ' ')
			return (-2);
	}
	return (-1);
}

/* Tell whether a property names the messages (or send options). */
static int
lineapi_is_message_prop(const char *s)
{
	return (s != NULL && (strncmp(s, "messages", 8) == 0 ||
	    strncmp(s, "customAggregationUnits", 22) == 0 ||
	    strncmp(s, "notificationDisabled", 20) == 0));
}

/* Classify an answer. */
void
lineapi_classify(long status, const char *err, const char *body, size_t len,
    struct lineapi_result *r)
{
	json_t		*j = NULL, *details, *d;
	const char	*msg = NULL, *prop, *dm;
	size_t		 i;
	int		 idx = -1, msgs = 0, props = 0;
	char		*s = NULL, *t;

	r->bad_index = -1;
	r->error = NULL;
	if (err != NULL || status == 0) {
		r->outcome = LINEAPI_RETRY;
		r->error = xstrdup(err != NULL ? err : "no answer");
		return;
	}
	if (status >= 200 && status < 300) {
		r->outcome = LINEAPI_SENT;
		return;
	}
	if (body != NULL && len > 0)
		j = json_loadb(body, len, 0, NULL);
	if (j != NULL && json_is_string(json_object_get(j, "message")))
		msg = json_string_value(json_object_get(j, "message"));
	xasprintf(&s, "%ld %s", status, msg != NULL ? msg : "(no message)");
	details = j != NULL ? json_object_get(j, "details") : NULL;
	json_array_foreach(details, i, d) {
		prop = json_string_value(json_object_get(d, "property"));
		dm = json_string_value(json_object_get(d, "message"));
		if (i < 10) {
			xasprintf(&t, "%s; %s: %s", s, prop ? prop : "-",
			    dm ? dm : "-");
			free(s);
			s = t;
		}
		props++;
		if (lineapi_is_message_prop(prop))
			msgs++;
		else if (idx == -1 && prop != NULL)
			idx = lineapi_to_index(prop);
	}
	r->error = s;
	if (status == 409) {
		r->outcome = LINEAPI_ACCEPTED;
	} else if (status == 429) {
		r->outcome = msg != NULL &&
		    strcmp(msg, LINEAPI_MSG_QUOTA) == 0 ? LINEAPI_QUOTA :
		    LINEAPI_RATELIMIT;
	} else if (status >= 500) {
		r->outcome = LINEAPI_RETRY;
	} else if (status == 401 || status == 403) {
		r->outcome = LINEAPI_AUTH;
	} else if (status == 400) {
		if (props == 0 && msg != NULL) {
			/* "The property, to[3], in the request body ..." */
			if (strncmp(msg, "The property, ", 14) == 0) {
				if (lineapi_is_message_prop(msg + 14))
					msgs++;
				else
					idx = lineapi_to_index(msg + 14);
			}
		}
		if (idx != -1) {
			r->outcome = LINEAPI_BAD_RECIPIENT;
			r->bad_index = idx;
		} else if (msgs > 0)
			r->outcome = LINEAPI_BAD_MESSAGES;
		else
			r->outcome = LINEAPI_BAD_REQUEST;
	} else
		r->outcome = LINEAPI_FAILED;
	json_decref(j);
}

/* A send finished. */
static void
lineapi_send_done_cb(const struct curlev_resp *resp, void *arg)
{
	struct lineapi_call	*c = arg;
	struct lineapi_result	 r;

	memset(&r, 0, sizeof r);
	c->la->inflight--;
	r.status = resp->err == NULL ? resp->status : 0;
	lineapi_classify(r.status, resp->err, resp->body, resp->bodylen, &r);
	r.request_id = curlev_resp_header(resp, "x-line-request-id");
	r.accepted_id = curlev_resp_header(resp, "x-line-accepted-request-id");
	r.retry_after_ms = lineapi_retry_after(curlev_resp_header(resp,
	    "retry-after"));
	r.elapsed = resp->elapsed;
	c->cb(&r, c->arg);
	free(r.error);
	free(c);
}

/* Send a push or multicast. */
void
lineapi_send(struct lineapi *la, enum lineapi_kind kind, const char *token,
    const char *retry_key, const char *body, size_t len, lineapi_send_cb *cb,
    void *arg)
{
	struct lineapi_call	*c = xcalloc(1, sizeof *c);
	struct curlev_req	*req;
	char			*url, *auth;

	c->la = la;
	c->cb = cb;
	c->arg = arg;
	xasprintf(&url, "%s/v2/bot/message/%s", la->app->cfg->line_api_base,
	    kind == LINEAPI_PUSH ? "push" : "multicast");
	xasprintf(&auth, "Bearer %s", token);
	req = curlev_req_new("POST", url);
	curlev_req_header(req, "Authorization", auth);
	curlev_req_header(req, "X-Line-Retry-Key", retry_key);
	curlev_req_body(req, "application/json", body, len);
	curlev_req_timeout(req, la->app->cfg->line_api_timeout);
	curlev_req_max_response(req, LINEAPI_MAX_RESPONSE);
	free(url);
	free(auth);
	la->inflight++;
	curlev_send(la->app->curl, req, lineapi_send_done_cb, c);
}

static void	lineapi_quota_get(struct lineapi_qcall *, const char *,
		    curlev_done_cb *);

/* Finish a quota call. */
static void
lineapi_quota_finish(struct lineapi_qcall *qc, const char *err)
{
	qc->q.err = err;
	qc->cb(&qc->q, qc->arg);
	free(qc->token);
	free(qc);
}

/* Read an answer's JSON or fail the call; new reference or NULL. */
static json_t *
lineapi_quota_json(struct lineapi_qcall *qc, const struct curlev_resp *resp)
{
	json_t	*j;
	char	 e[160];

	qc->la->inflight--;
	if (resp->err != NULL) {
		snprintf(e, sizeof e, "quota: %s", resp->err);
		lineapi_quota_finish(qc, e);
		return (NULL);
	}
	if (resp->status == 401 || resp->status == 403)
		qc->q.auth_failed = 1;
	if (resp->status != 200 || (j = json_loadb(resp->body, resp->bodylen,
	    0, NULL)) == NULL) {
		snprintf(e, sizeof e, "quota: HTTP %ld: %.100s", resp->status,
		    resp->body);
		lineapi_quota_finish(qc, e);
		return (NULL);
	}
	return (j);
}

/* The consumption was read. */
static void
lineapi_usage_cb(const struct curlev_resp *resp, void *arg)
{
	struct lineapi_qcall	*qc = arg;
	json_t			*j;

	if ((j = lineapi_quota_json(qc, resp)) == NULL)
		return;
	qc->q.used = json_integer_value(json_object_get(j, "totalUsage"));
	json_decref(j);
	lineapi_quota_finish(qc, NULL);
}

/* The quota was read. */
static void
lineapi_limit_cb(const struct curlev_resp *resp, void *arg)
{
	struct lineapi_qcall	*qc = arg;
	json_t			*j;
	const char		*type;

	if ((j = lineapi_quota_json(qc, resp)) == NULL)
		return;
	type = json_string_value(json_object_get(j, "type"));
	if (type != NULL && strcmp(type, "limited") == 0) {
		qc->q.limited = 1;
		qc->q.value = json_integer_value(json_object_get(j, "value"));
		json_decref(j);
		lineapi_quota_get(qc, "/v2/bot/message/quota/consumption",
		    lineapi_usage_cb);
		return;
	}
	json_decref(j);
	lineapi_quota_finish(qc, NULL);
}

/* GET one quota path. */
static void
lineapi_quota_get(struct lineapi_qcall *qc, const char *path,
    curlev_done_cb *cb)
{
	struct curlev_req	*req;
	char			*url, *auth;

	xasprintf(&url, "%s%s", qc->la->app->cfg->line_api_base, path);
	xasprintf(&auth, "Bearer %s", qc->token);
	req = curlev_req_new("GET", url);
	curlev_req_header(req, "Authorization", auth);
	curlev_req_timeout(req, qc->la->app->cfg->line_api_timeout);
	curlev_req_max_response(req, 64 * 1024);
	free(url);
	free(auth);
	qc->la->inflight++;
	curlev_send(qc->la->app->curl, req, cb, qc);
}

/* Read the monthly quota and what was used of it. */
void
lineapi_quota(struct lineapi *la, const char *token, lineapi_quota_cb *cb,
    void *arg)
{
	struct lineapi_qcall	*qc = xcalloc(1, sizeof *qc);

	qc->la = la;
	qc->token = xstrdup(token);
	qc->cb = cb;
	qc->arg = arg;
	lineapi_quota_get(qc, "/v2/bot/message/quota", lineapi_limit_cb);
}
