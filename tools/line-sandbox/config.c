/* SPDX-License-Identifier: ISC */
/*
 * config.c -- the sandbox configuration: parse the JSON file given with
 * -c, apply PUT /sandbox/config bodies over the running config, and print
 * the effective config back.  A body is applied to a copy and swapped in
 * only when every key parsed, as pgbouncer and tmux reload: a bad PUT
 * leaves the running config untouched.  Top-level keys replace the whole
 * section they name; sections that are not mentioned stay as they were.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <event2/http.h>

#include "musubi/xmalloc.h"

#include "sandbox.h"

#define SB_DEFAULT_LOGIN_SECRET	"sandbox-login-secret"

/* Reset one fault entry to "no faults". */
static void
config_fault_init(struct sb_fault *f)
{
	memset(f, 0, sizeof *f);
	f->statuses[0] = 500;
	f->nstatuses = 1;
	f->count = -1;
}

/* A config with the built-in defaults. */
struct sb_config *
config_new(uint64_t seed)
{
	struct sb_config	*cfg = xcalloc(1, sizeof *cfg);
	int			 i;

	for (i = 0; i < SB_EP_COUNT; i++) {
		cfg->rates[i].rate = sb_eps[i].rate;
		cfg->rates[i].burst = sb_eps[i].burst;
		config_fault_init(&cfg->faults[i]);
	}
	config_fault_init(&cfg->global_fault);
	cfg->default_rate.rate = 2000;
	cfg->default_rate.burst = 2000;
	cfg->auto_profiles = 1;
	cfg->seed = seed;
	cfg->max_body = 2 * 1024 * 1024;
	cfg->max_batches = 100000;
	cfg->max_recipients = 2000000;
	cfg->webhook_timeout_ms = 10000;
	cfg->login_default_secret = xstrdup(SB_DEFAULT_LOGIN_SECRET);
	cfg->login_clients = json_object();
	cfg->webhooks = json_object();
	return (cfg);
}

/* Free a config. */
void
config_free(struct sb_config *cfg)
{
	if (cfg == NULL)
		return;
	json_decref(cfg->tokens);
	json_decref(cfg->login_clients);
	json_decref(cfg->webhooks);
	free(cfg->login_default_secret);
	free(cfg->login_default_user);
	free(cfg);
}

/* Endpoint index for a "METHOD /path" name, -1 if unknown. */
static int
config_ep(const char *name)
{
	int	 i;

	for (i = 0; i < SB_EP_COUNT; i++) {
		if ((sb_eps[i].flags & SB_EPF_FAULTS) &&
		    strcmp(sb_eps[i].name, name) == 0)
			return (i);
	}
	return (-1);
}

/* Parse one rate limit value. */
static int
config_rate(json_t *v, struct sb_rate *r, const char *name, char **cause)
{
	json_t	*a, *b;
	double	 n, s;

	if (json_is_number(v)) {
		n = json_number_value(v);
		if (n < 0 || !isfinite(n))
			goto bad;
		r->rate = n;
		r->burst = n < 1 ? 1 : n;
		r->set = 1;
		return (0);
	}
	if (!json_is_object(v))
		goto bad;
	if ((a = json_object_get(v, "requests")) != NULL) {
		b = json_object_get(v, "per_seconds");
		if (!json_is_number(a) || !json_is_number(b))
			goto bad;
		n = json_number_value(a);
		s = json_number_value(b);
		if (n < 0 || s <= 0 || !isfinite(n) || !isfinite(s))
			goto bad;
		r->rate = n / s;
		r->burst = n < 1 ? 1 : n;
	} else {
		a = json_object_get(v, "rate");
		b = json_object_get(v, "burst");
		if (!json_is_number(a) || (b != NULL && !json_is_number(b)))
			goto bad;
		n = json_number_value(a);
		if (n < 0 || !isfinite(n))
			goto bad;
		r->rate = n;
		r->burst = b != NULL ? json_number_value(b) : (n < 1 ? 1 : n);
		if (r->burst < 1 || !isfinite(r->burst))
			goto bad;
	}
	r->set = 1;
	return (0);
bad:
	xsetcause(cause, "rate_limits: bad value for %s (a number of "
	    "requests per second, {\"rate\",\"burst\"} or "
	    "{\"requests\",\"per_seconds\"})", name);
	return (-1);
}

/* Parse the rate_limits section. */
static int
config_rates(struct sb_config *cfg, json_t *v, char **cause)
{
	const char	*key;
	json_t		*val, *d;
	int		 ep, i;

	if (!json_is_object(v)) {
		xsetcause(cause, "rate_limits must be an object");
		return (-1);
	}
	if ((d = json_object_get(v, "default")) != NULL) {
		if (config_rate(d, &cfg->default_rate, "default", cause) != 0)
			return (-1);
		for (i = 0; i < SB_EP_COUNT; i++) {
			if (sb_eps[i].flags & SB_EPF_CHANNEL) {
				cfg->rates[i] = cfg->default_rate;
				cfg->rates[i].set = 0;
			}
		}
	}
	json_object_foreach(v, key, val) {
		if (strcmp(key, "default") == 0)
			continue;
		if ((ep = config_ep(key)) < 0) {
			xsetcause(cause, "rate_limits: unknown endpoint \"%s\" "
			    "(use e.g. \"POST /v2/bot/message/push\")", key);
			return (-1);
		}
		if (config_rate(val, &cfg->rates[ep], key, cause) != 0)
			return (-1);
	}
	return (0);
}

/* Parse one fault entry. */
static int
config_fault_parse(json_t *v, struct sb_fault *f, const char *name,
    char **cause)
{
	const char	*key, *mode;
	json_t		*val, *s;
	size_t		 i;
	double		 d;

	config_fault_init(f);
	if (!json_is_object(v)) {
		xsetcause(cause, "faults: %s must be an object", name);
		return (-1);
	}
	json_object_foreach(v, key, val) {
		if (strcmp(key, "rate") == 0 ||
		    strcmp(key, "timeout_rate") == 0) {
			d = json_number_value(val);
			if (!json_is_number(val) || d < 0 || d > 1) {
				xsetcause(cause, "faults: %s: %s must be a "
				    "number from 0 to 1", name, key);
				return (-1);
			}
			if (key[0] == 'r')
				f->rate = d;
			else
				f->timeout_rate = d;
		} else if (strcmp(key, "statuses") == 0) {
			if (!json_is_array(val) || json_array_size(val) == 0 ||
			    json_array_size(val) > SB_FAULT_MAX_STATUSES)
				goto badstatus;
			f->nstatuses = 0;
			json_array_foreach(val, i, s) {
				if (!json_is_integer(s) ||
				    json_integer_value(s) < 400 ||
				    json_integer_value(s) > 599)
					goto badstatus;
				f->statuses[f->nstatuses++] =
				    (int)json_integer_value(s);
			}
		} else if (strcmp(key, "mode") == 0) {
			mode = json_string_value(val);
			if (mode != NULL && strcmp(mode, "before") == 0)
				f->after = 0;
			else if (mode != NULL && strcmp(mode, "after") == 0)
				f->after = 1;
			else {
				xsetcause(cause, "faults: %s: mode must be "
				    "\"before\" or \"after\"", name);
				return (-1);
			}
		} else if (strcmp(key, "latency_ms") == 0) {
			if (!json_is_integer(val) ||
			    json_integer_value(val) < 0 ||
			    json_integer_value(val) > 3600000) {
				xsetcause(cause, "faults: %s: latency_ms must "
				    "be 0..3600000", name);
				return (-1);
			}
			f->latency_ms = (long)json_integer_value(val);
		} else if (strcmp(key, "count") == 0) {
			if (json_is_null(val))
				f->count = -1;
			else if (json_is_integer(val) &&
			    json_integer_value(val) >= -1)
				f->count = (long)json_integer_value(val);
			else {
				xsetcause(cause, "faults: %s: count must be "
				    "an integer (-1 = no limit)", name);
				return (-1);
			}
		} else {
			xsetcause(cause, "faults: %s: unknown key \"%s\"", name,
			    key);
			return (-1);
		}
	}
	f->set = 1;
	return (0);
badstatus:
	xsetcause(cause, "faults: %s: statuses must be a list of 1 to %d "
	    "HTTP statuses from 400 to 599", name, SB_FAULT_MAX_STATUSES);
	return (-1);
}

/* Parse the faults section. */
static int
config_faults(struct sb_config *cfg, json_t *v, char **cause)
{
	const char	*key;
	json_t		*val;
	int		 ep, i;

	if (!json_is_object(v)) {
		xsetcause(cause, "faults must be an object");
		return (-1);
	}
	config_fault_init(&cfg->global_fault);
	for (i = 0; i < SB_EP_COUNT; i++)
		config_fault_init(&cfg->faults[i]);
	json_object_foreach(v, key, val) {
		if (strcmp(key, "global") == 0) {
			if (config_fault_parse(val, &cfg->global_fault, key,
			    cause) != 0)
				return (-1);
			continue;
		}
		if ((ep = config_ep(key)) < 0) {
			xsetcause(cause, "faults: unknown endpoint \"%s\"",
			    key);
			return (-1);
		}
		if (config_fault_parse(val, &cfg->faults[ep], key, cause) != 0)
			return (-1);
	}
	return (0);
}

/* Parse the quota section. */
static int
config_quota(struct sb_config *cfg, json_t *v, char **cause)
{
	const char	*type = json_string_value(json_object_get(v, "type"));
	json_t		*val = json_object_get(v, "value");

	if (type != NULL && strcmp(type, "none") == 0) {
		cfg->quota_limited = 0;
		cfg->quota_value = 0;
		return (0);
	}
	if (type != NULL && strcmp(type, "limited") == 0 &&
	    json_is_integer(val) && json_integer_value(val) >= 0) {
		cfg->quota_limited = 1;
		cfg->quota_value = json_integer_value(val);
		return (0);
	}
	xsetcause(cause, "quota must be {\"type\":\"none\"} or "
	    "{\"type\":\"limited\",\"value\":N}");
	return (-1);
}

/* Parse the login section. */
static int
config_login(struct sb_config *cfg, json_t *v, char **cause)
{
	const char	*key, *s;
	json_t		*val, *c;
	uint8_t		 id[SB_ID_LEN];

	if (!json_is_object(v))
		goto bad;
	if ((val = json_object_get(v, "default_secret")) != NULL) {
		if (!json_is_string(val) || *json_string_value(val) == '\0')
			goto bad;
		free(cfg->login_default_secret);
		cfg->login_default_secret = xstrdup(json_string_value(val));
	}
	if ((val = json_object_get(v, "default_user")) != NULL &&
	    !json_is_null(val)) {
		s = json_string_value(val);
		if (sb_id_parse(s, id, "U") != 0) {
			xsetcause(cause, "login: default_user must match "
			    "^U[0-9a-f]{32}$");
			return (-1);
		}
		free(cfg->login_default_user);
		cfg->login_default_user = xstrdup(s);
	}
	if ((c = json_object_get(v, "clients")) != NULL) {
		if (!json_is_object(c))
			goto bad;
		json_object_foreach(c, key, val) {
			if (!json_is_object(val) ||
			    !json_is_string(json_object_get(val, "secret")) ||
			    (json_object_get(val, "bot_token") != NULL &&
			    !json_is_string(json_object_get(val,
			    "bot_token")))) {
				xsetcause(cause, "login: client %s needs "
				    "{\"secret\": string, \"bot_token\"?: "
				    "string}", key);
				return (-1);
			}
		}
		json_decref(cfg->login_clients);
		cfg->login_clients = json_deep_copy(c);
	}
	json_object_foreach(v, key, val) {
		if (strcmp(key, "default_secret") != 0 &&
		    strcmp(key, "default_user") != 0 &&
		    strcmp(key, "clients") != 0) {
			xsetcause(cause, "login: unknown key \"%s\"", key);
			return (-1);
		}
	}
	return (0);
bad:
	xsetcause(cause, "login must be {\"default_secret\": string, "
	    "\"default_user\": userId, \"clients\": {id: {\"secret\", "
	    "\"bot_token\"}}}");
	return (-1);
}

/* Parse the webhooks section. */
static int
config_webhooks(struct sb_config *cfg, json_t *v, char **cause)
{
	const char		*key, *url, *dest;
	json_t			*val;
	struct evhttp_uri	*u;
	uint8_t			 id[SB_ID_LEN];

	if (!json_is_object(v)) {
		xsetcause(cause, "webhooks must be {token: {\"url\", "
		    "\"secret\", \"destination\"?}}");
		return (-1);
	}
	json_object_foreach(v, key, val) {
		url = json_string_value(json_object_get(val, "url"));
		if (url == NULL || !json_is_string(json_object_get(val,
		    "secret"))) {
			xsetcause(cause, "webhooks: %s needs \"url\" and "
			    "\"secret\"", key);
			return (-1);
		}
		u = evhttp_uri_parse(url);
		if (u == NULL || evhttp_uri_get_scheme(u) == NULL ||
		    strcmp(evhttp_uri_get_scheme(u), "http") != 0 ||
		    evhttp_uri_get_host(u) == NULL) {
			if (u != NULL)
				evhttp_uri_free(u);
			xsetcause(cause, "webhooks: %s: url must be http://"
			    "host[:port]/path", key);
			return (-1);
		}
		evhttp_uri_free(u);
		dest = json_string_value(json_object_get(val, "destination"));
		if (dest != NULL && sb_id_parse(dest, id, "U") != 0) {
			xsetcause(cause, "webhooks: %s: destination must match "
			    "^U[0-9a-f]{32}$", key);
			return (-1);
		}
	}
	json_decref(cfg->webhooks);
	cfg->webhooks = json_deep_copy(v);
	return (0);
}

/* Read a positive integer member. */
static int
config_size(json_t *v, const char *name, long long min, long long *out,
    char **cause)
{
	if (!json_is_integer(v) || json_integer_value(v) < min) {
		xsetcause(cause, "%s must be an integer >= %lld", name, min);
		return (-1);
	}
	*out = json_integer_value(v);
	return (0);
}

/* Parse the recording section. */
static int
config_recording(struct sb_config *cfg, json_t *v, char **cause)
{
	const char	*key;
	json_t		*val;
	long long	 n;

	if (!json_is_object(v)) {
		xsetcause(cause, "recording must be an object");
		return (-1);
	}
	json_object_foreach(v, key, val) {
		if (strcmp(key, "max_batches") == 0) {
			if (config_size(val, "recording.max_batches", 1, &n,
			    cause) != 0)
				return (-1);
			cfg->max_batches = (size_t)n;
		} else if (strcmp(key, "max_recipients") == 0) {
			if (config_size(val, "recording.max_recipients", 1, &n,
			    cause) != 0)
				return (-1);
			cfg->max_recipients = (size_t)n;
		} else {
			xsetcause(cause, "recording: unknown key \"%s\"", key);
			return (-1);
		}
	}
	return (0);
}

/* Parse the tokens list. */
static int
config_tokens(struct sb_config *cfg, json_t *v, char **cause)
{
	json_t	*t;
	size_t	 i;

	json_decref(cfg->tokens);
	cfg->tokens = NULL;
	if (json_is_null(v))
		return (0);
	if (!json_is_array(v))
		goto bad;
	json_array_foreach(v, i, t) {
		if (!json_is_string(t) || *json_string_value(t) == '\0')
			goto bad;
	}
	if (json_array_size(v) > 0)
		cfg->tokens = json_deep_copy(v);
	return (0);
bad:
	xsetcause(cause, "tokens must be a list of non-empty strings or null");
	return (-1);
}

/* Apply one top-level key. */
static int
config_key(struct sb_config *cfg, const char *key, json_t *v, char **cause)
{
	long long	 n;

	if (strcmp(key, "tokens") == 0)
		return (config_tokens(cfg, v, cause));
	if (strcmp(key, "rate_limits") == 0)
		return (config_rates(cfg, v, cause));
	if (strcmp(key, "faults") == 0)
		return (config_faults(cfg, v, cause));
	if (strcmp(key, "quota") == 0)
		return (config_quota(cfg, v, cause));
	if (strcmp(key, "login") == 0)
		return (config_login(cfg, v, cause));
	if (strcmp(key, "webhooks") == 0)
		return (config_webhooks(cfg, v, cause));
	if (strcmp(key, "recording") == 0)
		return (config_recording(cfg, v, cause));
	if (strcmp(key, "auto_profiles") == 0) {
		if (!json_is_boolean(v)) {
			xsetcause(cause, "auto_profiles must be true or false");
			return (-1);
		}
		cfg->auto_profiles = json_is_true(v);
		return (0);
	}
	if (strcmp(key, "seed") == 0) {
		if (config_size(v, "seed", 0, &n, cause) != 0)
			return (-1);
		cfg->seed = (uint64_t)n;
		return (0);
	}
	if (strcmp(key, "retry_after") == 0) {
		if (config_size(v, "retry_after", 0, &n, cause) != 0)
			return (-1);
		cfg->retry_after = (int)(n > 86400 ? 86400 : n);
		return (0);
	}
	if (strcmp(key, "max_body_bytes") == 0) {
		if (config_size(v, "max_body_bytes", 1, &n, cause) != 0)
			return (-1);
		cfg->max_body = (size_t)n;
		return (0);
	}
	if (strcmp(key, "webhook_timeout_ms") == 0) {
		if (config_size(v, "webhook_timeout_ms", 1, &n, cause) != 0)
			return (-1);
		cfg->webhook_timeout_ms = (long)n;
		return (0);
	}
	xsetcause(cause, "unknown config key \"%s\"", key);
	return (-1);
}

/* Apply doc over base into a new config. */
struct sb_config *
config_apply(const struct sb_config *base, json_t *doc, char **cause)
{
	struct sb_config	*cfg;
	json_t			*merged, *v;
	const char		*key;

	if (!json_is_object(doc)) {
		xsetcause(cause, "the config must be a JSON object");
		return (NULL);
	}
	merged = base != NULL ? config_json(base) : json_object();
	json_object_update(merged, doc);
	cfg = config_new(base != NULL ? base->seed : 0);
	json_object_foreach(merged, key, v) {
		if (config_key(cfg, key, v, cause) != 0) {
			json_decref(merged);
			config_free(cfg);
			return (NULL);
		}
	}
	json_decref(merged);
	return (cfg);
}

/* Load a config file. */
struct sb_config *
config_load(const char *path, uint64_t seed, char **cause)
{
	struct sb_config	*base, *cfg;
	json_error_t		 jerr;
	json_t			*doc;

	if ((doc = json_load_file(path, 0, &jerr)) == NULL) {
		xsetcause(cause, "%s:%d:%d: %s", path, jerr.line, jerr.column,
		    jerr.text);
		return (NULL);
	}
	base = config_new(seed);
	cfg = config_apply(base, doc, cause);
	config_free(base);
	json_decref(doc);
	return (cfg);
}

/* Print one rate limit. */
static json_t *
config_rate_json(const struct sb_rate *r)
{
	json_t	*o;

	if (r->rate == 0 || r->burst == (r->rate < 1 ? 1 : r->rate))
		return (json_real(r->rate));
	o = json_object();
	json_object_set_new(o, "rate", json_real(r->rate));
	json_object_set_new(o, "burst", json_real(r->burst));
	return (o);
}

/* Print one fault entry. */
static json_t *
config_fault_json(const struct sb_fault *f)
{
	json_t	*o = json_object(), *s = json_array();
	size_t	 i;

	for (i = 0; i < f->nstatuses; i++)
		json_array_append_new(s, json_integer(f->statuses[i]));
	json_object_set_new(o, "rate", json_real(f->rate));
	json_object_set_new(o, "statuses", s);
	json_object_set_new(o, "mode", json_string(f->after ? "after" :
	    "before"));
	json_object_set_new(o, "latency_ms", json_integer(f->latency_ms));
	json_object_set_new(o, "timeout_rate", json_real(f->timeout_rate));
	json_object_set_new(o, "count", json_integer(f->count));
	return (o);
}

/* The effective config as a document config_apply accepts. */
json_t *
config_json(const struct sb_config *cfg)
{
	json_t	*o = json_object(), *r, *f, *q, *l, *rec;
	int	 i;

	json_object_set_new(o, "tokens", cfg->tokens != NULL ?
	    json_deep_copy(cfg->tokens) : json_null());
	r = json_object();
	json_object_set_new(r, "default", config_rate_json(&cfg->default_rate));
	for (i = 0; i < SB_EP_COUNT; i++) {
		if (sb_eps[i].flags & SB_EPF_FAULTS)
			json_object_set_new(r, sb_eps[i].name,
			    config_rate_json(&cfg->rates[i]));
	}
	json_object_set_new(o, "rate_limits", r);
	q = json_object();
	json_object_set_new(q, "type", json_string(cfg->quota_limited ?
	    "limited" : "none"));
	if (cfg->quota_limited)
		json_object_set_new(q, "value", json_integer(cfg->quota_value));
	json_object_set_new(o, "quota", q);
	f = json_object();
	if (cfg->global_fault.set)
		json_object_set_new(f, "global",
		    config_fault_json(&cfg->global_fault));
	for (i = 0; i < SB_EP_COUNT; i++) {
		if (cfg->faults[i].set)
			json_object_set_new(f, sb_eps[i].name,
			    config_fault_json(&cfg->faults[i]));
	}
	json_object_set_new(o, "faults", f);
	json_object_set_new(o, "auto_profiles",
	    json_boolean(cfg->auto_profiles));
	json_object_set_new(o, "seed", json_integer((json_int_t)(cfg->seed &
	    0x7fffffffffffffffULL)));
	json_object_set_new(o, "retry_after", json_integer(cfg->retry_after));
	json_object_set_new(o, "max_body_bytes",
	    json_integer((json_int_t)cfg->max_body));
	json_object_set_new(o, "webhook_timeout_ms",
	    json_integer(cfg->webhook_timeout_ms));
	rec = json_object();
	json_object_set_new(rec, "max_batches",
	    json_integer((json_int_t)cfg->max_batches));
	json_object_set_new(rec, "max_recipients",
	    json_integer((json_int_t)cfg->max_recipients));
	json_object_set_new(o, "recording", rec);
	l = json_object();
	json_object_set_new(l, "default_secret",
	    json_string(cfg->login_default_secret));
	json_object_set_new(l, "default_user", cfg->login_default_user ?
	    json_string(cfg->login_default_user) : json_null());
	json_object_set_new(l, "clients", json_deep_copy(cfg->login_clients));
	json_object_set_new(o, "login", l);
	json_object_set_new(o, "webhooks", json_deep_copy(cfg->webhooks));
	return (o);
}

/* The fault entry for an endpoint, falling back to the global one. */
struct sb_fault *
config_fault(struct sb_config *cfg, int ep)
{
	if (ep >= 0 && ep < SB_EP_COUNT && cfg->faults[ep].set)
		return (&cfg->faults[ep]);
	return (&cfg->global_fault);
}

/* Check a token against the allow list. */
int
config_token_allowed(const struct sb_config *cfg, const char *token)
{
	json_t	*t;
	size_t	 i;

	if (cfg->tokens == NULL)
		return (1);
	json_array_foreach(cfg->tokens, i, t) {
		if (strcmp(json_string_value(t), token) == 0)
			return (1);
	}
	return (0);
}

/* The secret that signs ID tokens for a login channel. */
const char *
config_login_secret(const struct sb_config *cfg, const char *client_id)
{
	json_t	*c;

	if (client_id != NULL &&
	    (c = json_object_get(cfg->login_clients, client_id)) != NULL)
		return (json_string_value(json_object_get(c, "secret")));
	return (cfg->login_default_secret);
}

/* Look up a channel's webhook target. */
int
config_webhook_target(const struct sb_config *cfg, const char *token,
    const char **url, const char **secret, const char **destination)
{
	json_t	*t;

	if (token == NULL ||
	    (t = json_object_get(cfg->webhooks, token)) == NULL)
		return (-1);
	*url = json_string_value(json_object_get(t, "url"));
	*secret = json_string_value(json_object_get(t, "secret"));
	*destination = json_string_value(json_object_get(t, "destination"));
	return (0);
}

/* The token of the only configured webhook target, or NULL. */
const char *
config_only_webhook(const struct sb_config *cfg)
{
	const char	*key, *found = NULL;
	json_t		*v;

	json_object_foreach(cfg->webhooks, key, v) {
		if (found != NULL)
			return (NULL);
		found = key;
	}
	return (found);
}
