/* SPDX-License-Identifier: ISC */
/*
 * webhook.c -- deliver webhook bodies the way LINE does: fill the event
 * fields LINE always sets (webhookEventId, timestamp, mode,
 * deliveryContext), serialise the body once, sign exactly those bytes
 * (x-line-signature = base64 HMAC-SHA256 keyed with the channel secret)
 * and POST them with evhttp's client.  Used by POST /sandbox/webhook, by
 * LINE Login's add-friend follow events, by the account-link dialog and by
 * the send-webhook command.
 *
 * Each POST is a job that owns its evhttp_connection.  The completion
 * callback runs inside libevent's connection code, so the job is freed on
 * a later loop pass from its own zero-delay timer, never from there.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "musubi/crypto.h"
#include "musubi/log.h"
#include "musubi/xmalloc.h"

#include "sandbox.h"

struct sb_whjob {
	TAILQ_ENTRY(sb_whjob)	 entry;
	struct sb_webhooks	*wh;
	struct evhttp_connection *evcon;
	struct event		*reaper;	/* frees the job later */
	sb_webhook_cb		*cb;
	void			*arg;
	enum evhttp_request_error error;
	int			 have_error;
	int			 done;
	char			*url;
};

/* Make an empty job list. */
struct sb_webhooks *
webhook_new(struct event_base *base)
{
	struct sb_webhooks	*wh = xcalloc(1, sizeof *wh);

	wh->base = base;
	TAILQ_INIT(&wh->jobs);
	return (wh);
}

/* Free a job and its connection. */
static void
webhook_job_free(struct sb_whjob *job)
{
	TAILQ_REMOVE(&job->wh->jobs, job, entry);
	if (job->evcon != NULL)
		evhttp_connection_free(job->evcon);
	if (job->reaper != NULL)
		event_free(job->reaper);
	free(job->url);
	free(job);
}

/* Cancel every job and free the list. */
void
webhook_free(struct sb_webhooks *wh)
{
	struct sb_whjob	*job;

	if (wh == NULL)
		return;
	while ((job = TAILQ_FIRST(&wh->jobs)) != NULL) {
		if (!job->done) {
			job->done = 1;
			job->cb(0, NULL, 0, "cancelled", job->arg);
		}
		webhook_job_free(job);
	}
	free(wh);
}

/* Sign a body. */
char *
webhook_sign(const char *secret, const void *body, size_t len)
{
	unsigned char	 mac[CRYPTO_SHA256_LEN];

	crypto_hmac_sha256(secret, strlen(secret), body, len, mac);
	return (crypto_base64(mac, sizeof mac));
}

/* Fill the fields LINE sets on every event. */
json_t *
webhook_body(json_t *events, const char *destination)
{
	json_t	*o = json_object(), *ev, *dc;
	char	 ulid[27];
	size_t	 i;

	json_array_foreach(events, i, ev) {
		if (!json_is_object(ev))
			continue;
		if (json_object_get(ev, "webhookEventId") == NULL) {
			sb_ulid(ulid);
			json_object_set_new(ev, "webhookEventId",
			    json_string(ulid));
		}
		if (json_object_get(ev, "timestamp") == NULL)
			json_object_set_new(ev, "timestamp",
			    json_integer(sb_now_ms()));
		if (json_object_get(ev, "mode") == NULL)
			json_object_set_new(ev, "mode", json_string("active"));
		if (json_object_get(ev, "deliveryContext") == NULL) {
			dc = json_object();
			json_object_set_new(dc, "isRedelivery", json_false());
			json_object_set_new(ev, "deliveryContext", dc);
		}
	}
	json_object_set_new(o, "destination", json_string(destination));
	json_object_set(o, "events", events);
	return (o);
}

/* Free a finished job on a later loop pass. */
static void
webhook_reap_cb(evutil_socket_t fd, short what, void *arg)
{
	webhook_job_free(arg);
}

/* Name a transport error as LINE's webhook statistics do. */
static const char *
webhook_error_name(struct sb_whjob *job)
{
	if (!job->have_error)
		return ("could_not_connect");
	switch (job->error) {
	case EVREQ_HTTP_TIMEOUT:
		return ("request_timeout");
	case EVREQ_HTTP_EOF:
		return ("connection closed");
	default:
		return ("could_not_connect");
	}
}

/* Remember why a request failed. */
static void
webhook_error_cb(enum evhttp_request_error err, void *arg)
{
	struct sb_whjob	*job = arg;

	job->error = err;
	job->have_error = 1;
}

/* The target answered (or the request failed: req NULL or status 0). */
static void
webhook_done_cb(struct evhttp_request *req, void *arg)
{
	struct sb_whjob		*job = arg;
	struct timeval		 now = { 0, 0 };
	struct evbuffer		*in;
	const char		*body = NULL;
	size_t			 len = 0;
	int			 status = 0;

	if (job->done)
		return;
	job->done = 1;
	if (req != NULL)
		status = evhttp_request_get_response_code(req);
	if (status != 0) {
		in = evhttp_request_get_input_buffer(req);
		len = evbuffer_get_length(in);
		body = len > 0 ? (const char *)evbuffer_pullup(in, -1) : "";
		job->wh->sent++;
		log_debug("webhook: %s: status %d", job->url, status);
		job->cb(status, body, len, NULL, job->arg);
	} else {
		job->wh->failed++;
		log_warnx("webhook: %s: %s", job->url, webhook_error_name(job));
		job->cb(0, NULL, 0, webhook_error_name(job), job->arg);
	}
	if (evtimer_add(job->reaper, &now) != 0)
		log_warnx("webhook: cannot schedule cleanup");
}

/* POST a signed body. */
int
webhook_post(struct sb_webhooks *wh, const char *url, const char *secret,
    const char *body, size_t len, long timeout_ms, sb_webhook_cb *cb,
    void *arg, char **cause)
{
	struct evhttp_uri	*u;
	struct evhttp_request	*req;
	struct evkeyvalq	*h;
	struct sb_whjob		*job;
	struct timeval		 tv;
	const char		*host, *path, *query;
	char			*sig, *target, hostport[300];
	int			 port;

	if ((u = evhttp_uri_parse(url)) == NULL ||
	    evhttp_uri_get_scheme(u) == NULL ||
	    strcmp(evhttp_uri_get_scheme(u), "http") != 0 ||
	    (host = evhttp_uri_get_host(u)) == NULL) {
		if (u != NULL)
			evhttp_uri_free(u);
		xsetcause(cause, "url must be http://host[:port]/path (the "
		    "sandbox does not speak TLS)");
		return (-1);
	}
	port = evhttp_uri_get_port(u);
	if (port < 0)
		port = 80;
	path = evhttp_uri_get_path(u);
	query = evhttp_uri_get_query(u);
	xasprintf(&target, "%s%s%s", path != NULL && *path != '\0' ? path :
	    "/", query != NULL ? "?" : "", query != NULL ? query : "");
	snprintf(hostport, sizeof hostport, "%s:%d", host, port);

	job = xcalloc(1, sizeof *job);
	job->wh = wh;
	job->cb = cb;
	job->arg = arg;
	job->url = xstrdup(url);
	job->reaper = evtimer_new(wh->base, webhook_reap_cb, job);
	job->evcon = evhttp_connection_base_new(wh->base, NULL, host,
	    (unsigned short)port);
	TAILQ_INSERT_TAIL(&wh->jobs, job, entry);
	if (job->evcon == NULL || job->reaper == NULL) {
		xsetcause(cause, "cannot create a connection to %s", hostport);
		goto fail;
	}
	tv.tv_sec = timeout_ms / 1000;
	tv.tv_usec = (timeout_ms % 1000) * 1000;
	evhttp_connection_set_timeout_tv(job->evcon, &tv);
	evhttp_connection_set_retries(job->evcon, 0);

	req = evhttp_request_new(webhook_done_cb, job);
	evhttp_request_set_error_cb(req, webhook_error_cb);
	h = evhttp_request_get_output_headers(req);
	evhttp_add_header(h, "Host", hostport);
	evhttp_add_header(h, "Content-Type", "application/json; charset=utf-8");
	evhttp_add_header(h, "User-Agent", "LineBotWebhook/2.0");
	evhttp_add_header(h, "Connection", "close");
	sig = webhook_sign(secret, body, len);
	evhttp_add_header(h, "x-line-signature", sig);
	free(sig);
	evbuffer_add(evhttp_request_get_output_buffer(req), body, len);
	if (evhttp_make_request(job->evcon, req, EVHTTP_REQ_POST,
	    target) != 0) {
		/* libevent did not queue it, so it is still ours. */
		if (!job->done)
			evhttp_request_free(req);
		xsetcause(cause, "cannot send to %s", hostport);
		goto fail;
	}
	free(target);
	evhttp_uri_free(u);
	return (0);
fail:
	free(target);
	evhttp_uri_free(u);
	if (!job->done)
		webhook_job_free(job);
	else
		return (0);	/* the callback already reported it */
	return (-1);
}
