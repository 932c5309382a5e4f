/* SPDX-License-Identifier: ISC */
/*
 * acquire.h -- friend acquisition (流入経路): tracked add-friend URLs, the
 * LINE Login round trip that learns who followed, cost rows and the
 * acquisition report.  The data rules (matching, estimation, the report's
 * definitions) live in sql/008_acquisition.sql and docs/acquisition.md.
 *
 * GET /f/{code}: record a touch (time, user agent, referrer, utm_*, keyed
 * hash of the address) and answer 302: to LINE Login (authorize with
 * bot_prompt=aggressive, an unguessable state bound to the touch, a nonce
 * and a PKCE S256 challenge) when the channel has a LINE Login channel, else
 * to the add-friend URL.  An unknown or archived code gets a 404 page and
 * no redirect.
 * GET /f/callback: the state is single use and expires after
 * ACQUIRE_LOGIN_TTL_S; the code is exchanged (with the PKCE verifier) and
 * the ID token verified at LINE (nonce checked) before the userId is
 * stored and matched; then 302 to the landing page.  Anything forged,
 * replayed or rejected by LINE gets a 400 page and links nothing.
 *
 * A timer re-estimates queued days (musubi_acq_estimate_queued).
 *
 * The nonce and the PKCE verifier are not stored: both are HMACs of the
 * state under the instance key, so only the state's hash is in the
 * database.  Pure helpers below are unit-tested and fuzzed.
 */
#ifndef MUSUBI_ACQUIRE_H
#define MUSUBI_ACQUIRE_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "musubi/compat.h"
#include "musubi/token.h"

struct app;
struct acquire;
struct config;

#define ACQUIRE_LOGIN_TTL_S	1800	/* a state lives: first hit to callback */
#define ACQUIRE_ESTIMATE_POLL_MS 2000
#define ACQUIRE_ESTIMATE_BATCH	20	/* queued days per pass */
#define ACQUIRE_STATE_LEN	43	/* base64url of 32 random bytes */
#define ACQUIRE_SECRET_LEN	43	/* nonce, verifier, challenge */
#define ACQUIRE_CODE_MIN	3
#define ACQUIRE_CODE_MAX	64
#define ACQUIRE_CSV_MAX_ROWS	50000
#define ACQUIRE_CSV_MAX_FIELD	256

struct acquire	*acquire_new(struct app *,
		    const unsigned char key[TOKEN_KEY_LEN]);
int		 acquire_start(struct acquire *);
/* No new timer passes; logins in flight finish (or fail with curl). */
void		 acquire_stop(struct acquire *);
int		 acquire_busy(const struct acquire *);
void		 acquire_free(struct acquire *);

/* The tracked URL of a source: <public_url>/f/<code>; new string. */
char		*acquire_source_url(const struct config *, const char *code);
/*
 * A copy of s fit for a text column: at most max bytes, never cutting a
 * character, each byte of an invalid UTF-8 sequence and each control
 * character (but tab) replaced by '?'.  New string, caller frees.
 */
char		*acquire_clean_text(const char *s, size_t max);
/* Is s a well-formed source code ([a-z0-9][a-z0-9_-]{2,63}, not "callback")? */
int		 acquire_code_ok(const char *s);
/* A new random source code (8 characters): new string. */
char		*acquire_code_generate(void);

/*
 * The LINE Login secrets bound to a state (pure): nonce and PKCE verifier
 * are base64url HMAC-SHA256(key, label || state); challenge is
 * base64url(SHA-256(verifier)).  Each out buffer holds
 * ACQUIRE_SECRET_LEN + 1 bytes.
 */
void		 acquire_login_secrets(const unsigned char key[TOKEN_KEY_LEN],
		    const char *state, char *nonce, char *verifier,
		    char *challenge);
/* The authorize URL (all values percent-encoded): new string. */
char		*acquire_authorize_url(const char *access_base,
		    const char *client_id, const char *redirect_uri,
		    const char *state, const char *nonce,
		    const char *challenge);

/*
 * Value parsers shared by the API and the CSV reader (pure).  Each returns
 * 0 and writes a normalized form, or -1 with a static reason in *why.
 *	date	 YYYY-MM-DD or YYYY/M/D, a real day in 2000..2099
 *		 -> "YYYY-MM-DD" in out[11]
 *	decimal	 [¥|￥]digits[,ddd...][.d{1,4}], at most 15 integer digits
 *		 -> plain digits and point in out (outlen >= 24)
 *	count	 digits[,ddd...], at most max
 *	currency three letters -> upper case in out[4]
 */
int		 acquire_parse_date(const char *, char *out, const char **why);
int		 acquire_parse_decimal(const char *, char *out, size_t outlen,
		    const char **why);
int		 acquire_parse_count(const char *, int64_t max, int64_t *out,
		    const char **why);
int		 acquire_parse_currency(const char *, char *out,
		    const char **why);

/* One cost row as read from CSV or JSON; strings are owned. */
struct acquire_cost_row {
	int		 row;		/* CSV record number (header = 1) */
	char		*source;
	char		 date[11];
	char		*spend;
	char		 currency[4];	/* "" when not given */
	int64_t		 impressions, clicks, adds;
	int		 has_impressions, has_clicks, has_adds;
};

struct acquire_row_error {
	int		 row;
	char		*field;
	char		*message;
};

struct acquire_costs {
	struct acquire_cost_row	*rows;
	size_t			 nrows;
	struct acquire_row_error *errors;
	size_t			 nerrors;
};

/*
 * Parse a cost CSV (RFC 4180: commas, "quoted" fields with "" for a quote,
 * CRLF or LF, an optional UTF-8 BOM).  The first record is the header:
 * source, date and spend are required; currency, impressions, clicks and
 * friend_adds are optional (aliases in docs/acquisition.md).  An empty
 * optional cell means "not given".  Every bad row is listed in errors
 * (row = record number, header = 1); rows that parsed are in rows.
 * Returns 0 when there were no errors, -1 otherwise.  Free with
 * acquire_costs_free().
 */
int		 acquire_costs_parse_csv(const char *buf, size_t len,
		    struct acquire_costs *);
/* Append a row error (message formatted, copied). */
void		 acquire_costs_error(struct acquire_costs *, int row,
		    const char *field, const char *fmt, ...) PRINTFLIKE(4, 5);
void		 acquire_costs_free(struct acquire_costs *);
/* The rows as musubi_acq_costs_import() takes them: new reference. */
json_t		*acquire_costs_json(const struct acquire_costs *);
/* The errors as a JSON array of {row, field, message}: new reference. */
json_t		*acquire_costs_errors_json(const struct acquire_costs *);

#endif
