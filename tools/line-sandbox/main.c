/* SPDX-License-Identifier: ISC */
/*
 * main.c -- line-sandbox, a local stand-in for the LINE Messaging API and
 * LINE Login that behaves as LINE documents, for musubi's tests and for
 * development without access to api.line.me.
 *
 *	line-sandbox [-v] [-c config.json] [-l host:port]
 *	line-sandbox send-webhook --url URL --secret SECRET
 *	    [--destination U...] FILE|-
 *
 * The server mode parses the config, listens (LINE_SANDBOX_LISTEN or
 * 127.0.0.1:8090 by default), runs the libevent loop until SIGTERM or
 * SIGINT, and frees everything on the way out: outgoing webhooks first,
 * then streamed, delayed and held replies, then evhttp and the store.
 * The send-webhook mode signs a webhook body with a channel secret and
 * POSTs it once, as LINE would, then prints the answer.
 */
#include <sys/socket.h>
#include <sys/types.h>

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/http.h>

#include "musubi/crypto.h"
#include "musubi/log.h"
#include "musubi/xmalloc.h"

#include "sandbox.h"

#define MAIN_JANITOR_S		30
#define MAIN_LIBEVENT_MAX_BODY	(64 * 1024 * 1024)
#define MAIN_DEFAULT_DEST	"U00000000000000000000000000000000"

/* What the send-webhook command got back. */
struct main_result {
	int		 status;
	char		*body;
	char		*err;
};

/* Print usage and exit. */
static void NORETURN
main_usage(void)
{
	fprintf(stderr,
	    "usage: line-sandbox [-v] [-c config.json] [-l host:port]\n"
	    "       line-sandbox send-webhook --url URL --secret SECRET "
	    "[--destination U...] FILE|-\n");
	exit(2);
}

/* Swap in a new config. */
void
sandbox_set_config(struct sandbox *sb, struct sb_config *cfg)
{
	struct sb_config	*old = sb->cfg;
	size_t			 max;

	if (old == NULL || old->seed != cfg->seed)
		sb_rng_seed(&sb->rng, cfg->seed);
	sb->cfg = cfg;
	store_limit(sb->store, cfg);
	if (sb->http != NULL) {
		/* Our own 413 (JSON, with a request id) up to this size. */
		max = cfg->max_body + 1024 * 1024;
		if (max < MAIN_LIBEVENT_MAX_BODY)
			max = MAIN_LIBEVENT_MAX_BODY;
		evhttp_set_max_body_size(sb->http, (ev_ssize_t)max);
	}
	config_free(old);
}

/* SIGTERM or SIGINT: leave the loop. */
static void
main_signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct sandbox	*sb = arg;

	log_info("signal %d: exiting", (int)sig);
	event_base_loopexit(sb->base, NULL);
}

/* Drop expired tokens and codes. */
static void
main_janitor_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sandbox	*sb = arg;
	int64_t		 now = sb_now_ms();

	store_expire(sb->store, now);
	login_expire(sb->login, now);
}

/* Split host:port ([v6]:port allowed); -1 if malformed. */
static int
main_split_listen(const char *s, char *host, size_t hostlen, char *port,
    size_t portlen)
{
	const char	*colon;
	size_t		 n;

	if (s[0] == '[') {
		if ((colon = strstr(s, "]:")) == NULL)
			return (-1);
		n = (size_t)(colon - s - 1);
		colon++;
		s++;
	} else {
		if ((colon = strrchr(s, ':')) == NULL)
			return (-1);
		n = (size_t)(colon - s);
	}
	if (n == 0 || n >= hostlen || strlen(colon + 1) == 0 ||
	    strlen(colon + 1) >= portlen)
		return (-1);
	memcpy(host, s, n);
	host[n] = '\0';
	snprintf(port, portlen, "%s", colon + 1);
	return (0);
}

/* Open the listening socket with a deep backlog; -1 on failure. */
static evutil_socket_t
main_listen(const char *spec, char **cause)
{
	struct addrinfo		 hints, *res, *ai;
	struct sockaddr_storage	 ss;
	socklen_t		 sslen = sizeof ss;
	evutil_socket_t		 fd = -1;
	char			 host[256], port[32];
	char			 h[NI_MAXHOST], p[NI_MAXSERV];
	int			 on = 1, rc;

	if (main_split_listen(spec, host, sizeof host, port, sizeof port) !=
	    0) {
		xsetcause(cause, "bad listen address %s (want host:port)",
		    spec);
		return (-1);
	}
	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	if ((rc = getaddrinfo(host, port, &hints, &res)) != 0) {
		xsetcause(cause, "%s: %s", spec, gai_strerror(rc));
		return (-1);
	}
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
		if (fd < 0)
			continue;
		(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
		    listen(fd, 1024) == 0)
			break;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0) {
		xsetcause(cause, "cannot listen on %s: %s", spec,
		    strerror(errno));
		return (-1);
	}
	evutil_make_socket_nonblocking(fd);
	evutil_make_socket_closeonexec(fd);
	if (getsockname(fd, (struct sockaddr *)&ss, &sslen) == 0 &&
	    getnameinfo((struct sockaddr *)&ss, sslen, h, sizeof h, p,
	    sizeof p, NI_NUMERICHOST | NI_NUMERICSERV) == 0)
		log_info("listening on %s%s%s:%s", strchr(h, ':') ? "[" : "",
		    h, strchr(h, ':') ? "]" : "", p);
	return (fd);
}

/* A random seed that survives a round trip through JSON. */
static uint64_t
main_seed(void)
{
	uint64_t	 s;

	crypto_random(&s, sizeof s);
	return (s & 0x7fffffffffffffffULL);
}

/* Run the server. */
static int
main_server(int argc, char **argv)
{
	struct sandbox	 sb;
	struct event	*sigterm, *sigint, *janitor;
	struct timeval	 tv = { MAIN_JANITOR_S, 0 };
	struct sb_config *cfg;
	const char	*listen_on = getenv("LINE_SANDBOX_LISTEN");
	const char	*cfgpath = NULL;
	char		*cause = NULL;
	evutil_socket_t	 fd;
	int		 ch;

	while ((ch = getopt(argc, argv, "c:hl:v")) != -1) {
		switch (ch) {
		case 'c':
			cfgpath = optarg;
			break;
		case 'l':
			listen_on = optarg;
			break;
		case 'v':
			log_set_level(LOG_LEVEL_DEBUG);
			break;
		default:
			main_usage();
		}
	}
	if (optind != argc)
		main_usage();
	if (listen_on == NULL || *listen_on == '\0')
		listen_on = SB_DEFAULT_LISTEN;

	if (cfgpath != NULL)
		cfg = config_load(cfgpath, main_seed(), &cause);
	else
		cfg = config_new(main_seed());
	if (cfg == NULL)
		fatalx("config: %s", cause);

	memset(&sb, 0, sizeof sb);
	TAILQ_INIT(&sb.pending);
	TAILQ_INIT(&sb.streams);
	if ((sb.base = event_base_new()) == NULL)
		fatalx("cannot create the event base");
	sb.store = store_new();
	sb.login = login_new();
	sb.webhooks = webhook_new(sb.base);
	if ((sb.http = evhttp_new(sb.base)) == NULL)
		fatalx("cannot create the HTTP server");
	sandbox_set_config(&sb, cfg);
	log_info("fault injection seed %llu",
	    (unsigned long long)sb.cfg->seed);
	evhttp_set_gencb(sb.http, server_request_cb, &sb);
	evhttp_set_allowed_methods(sb.http, EVHTTP_REQ_GET | EVHTTP_REQ_POST |
	    EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_HEAD |
	    EVHTTP_REQ_PATCH | EVHTTP_REQ_OPTIONS);
	evhttp_set_max_headers_size(sb.http, 64 * 1024);
	evhttp_set_timeout(sb.http, 120);
	if ((fd = main_listen(listen_on, &cause)) < 0)
		fatalx("%s", cause);
	if (evhttp_accept_socket_with_handle(sb.http, fd) == NULL)
		fatalx("cannot accept on %s", listen_on);

	signal(SIGPIPE, SIG_IGN);
	sigterm = evsignal_new(sb.base, SIGTERM, main_signal_cb, &sb);
	sigint = evsignal_new(sb.base, SIGINT, main_signal_cb, &sb);
	janitor = event_new(sb.base, -1, EV_PERSIST, main_janitor_cb, &sb);
	if (sigterm == NULL || sigint == NULL || janitor == NULL ||
	    evsignal_add(sigterm, NULL) != 0 ||
	    evsignal_add(sigint, NULL) != 0 || evtimer_add(janitor, &tv) != 0)
		fatalx("cannot set up signals and timers");

	event_base_dispatch(sb.base);

	webhook_free(sb.webhooks);
	sb.webhooks = NULL;
	control_shutdown(&sb);
	server_shutdown(&sb);
	evhttp_free(sb.http);
	event_free(sigterm);
	event_free(sigint);
	event_free(janitor);
	login_free(sb.login);
	store_free(sb.store);
	config_free(sb.cfg);
	event_base_free(sb.base);
	libevent_global_shutdown();
	log_info("stopped");
	return (0);
}

/* Remember what the target answered. */
static void
main_send_done_cb(int status, const char *body, size_t len, const char *err,
    void *arg)
{
	struct main_result	*r = arg;

	r->status = status;
	if (body != NULL)
		r->body = xstrndup(body, len);
	if (err != NULL)
		r->err = xstrdup(err);
}

/* Read a whole file (or stdin for "-"): new buffer, caller frees. */
static char *
main_read(const char *path, size_t *len)
{
	FILE	*f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
	char	*buf = NULL;
	size_t	 cap = 0, n;

	*len = 0;
	if (f == NULL)
		return (NULL);
	for (;;) {
		if (*len + 65536 > cap) {
			cap = cap == 0 ? 65536 : cap * 2;
			buf = xreallocarray(buf, cap + 1, 1);
		}
		n = fread(buf + *len, 1, cap - *len, f);
		*len += n;
		if (n == 0)
			break;
	}
	if (f != stdin)
		fclose(f);
	buf[*len] = '\0';
	return (buf);
}

/* line-sandbox send-webhook ... */
static int
main_send_webhook(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "url", required_argument, NULL, 'u' },
		{ "secret", required_argument, NULL, 's' },
		{ "destination", required_argument, NULL, 'd' },
		{ "verbose", no_argument, NULL, 'v' },
		{ NULL, 0, NULL, 0 },
	};
	struct main_result	 r;
	struct event_base	*base;
	struct sb_webhooks	*wh;
	const char		*url = NULL, *secret = NULL, *dest = NULL;
	char			*raw, *body, *sig, *cause = NULL;
	json_error_t		 jerr;
	json_t			*doc, *wrapped;
	size_t			 len;
	uint8_t			 id[SB_ID_LEN];
	int			 ch, verbose = 0, rc;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "d:s:u:v", opts, NULL)) != -1) {
		switch (ch) {
		case 'u':
			url = optarg;
			break;
		case 's':
			secret = optarg;
			break;
		case 'd':
			dest = optarg;
			break;
		case 'v':
			verbose = 1;
			break;
		default:
			main_usage();
		}
	}
	if (secret == NULL)
		secret = getenv("LINE_CHANNEL_SECRET");
	if (url == NULL || secret == NULL || optind != argc - 1)
		main_usage();
	if (dest != NULL && sb_id_parse(dest, id, "U") != 0)
		fatalx("--destination must match ^U[0-9a-f]{32}$");
	if ((raw = main_read(argv[optind], &len)) == NULL)
		fatal("%s", argv[optind]);
	if ((doc = json_loadb(raw, len, 0, &jerr)) == NULL)
		fatalx("%s:%d:%d: %s", argv[optind], jerr.line, jerr.column,
		    jerr.text);
	if (json_is_array(doc)) {
		wrapped = webhook_body(doc, dest != NULL ? dest :
		    MAIN_DEFAULT_DEST);
		body = json_dumps(wrapped, JSON_COMPACT);
		json_decref(wrapped);
		free(raw);
	} else if (json_is_object(doc)) {
		if (!json_is_array(json_object_get(doc, "events")))
			log_warnx("%s: no \"events\" array; sent anyway",
			    argv[optind]);
		if (dest != NULL)
			log_warnx("a full body is sent as is; --destination "
			    "ignored");
		body = raw;	/* the exact bytes, signed as they are */
	} else
		fatalx("%s: want an events array or a {\"destination\", "
		    "\"events\"} object", argv[optind]);
	json_decref(doc);
	len = strlen(body);

	if (verbose) {
		sig = webhook_sign(secret, body, len);
		fprintf(stderr, "x-line-signature: %s\n%s\n", sig, body);
		free(sig);
	}
	memset(&r, 0, sizeof r);
	signal(SIGPIPE, SIG_IGN);
	if ((base = event_base_new()) == NULL)
		fatalx("cannot create the event base");
	wh = webhook_new(base);
	if (webhook_post(wh, url, secret, body, len, 30000, main_send_done_cb,
	    &r, &cause) != 0)
		fatalx("%s", cause);
	event_base_dispatch(base);
	webhook_free(wh);
	event_base_free(base);
	free(body);

	if (r.err != NULL)
		printf("error: %s\n", r.err);
	else
		printf("HTTP %d\n%s%s", r.status, r.body != NULL ? r.body : "",
		    r.body != NULL && *r.body != '\0' ? "\n" : "");
	rc = r.status >= 200 && r.status < 300 ? 0 : 1;
	free(r.body);
	free(r.err);
	libevent_global_shutdown();
	return (rc);
}

/* Pick the mode: send-webhook or the server. */
int
main(int argc, char **argv)
{
	log_init("line-sandbox");
	if (argc > 1 && strcmp(argv[1], "send-webhook") == 0)
		return (main_send_webhook(argc - 1, argv + 1));
	return (main_server(argc, argv));
}
