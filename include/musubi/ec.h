/* SPDX-License-Identifier: ISC */
/*
 * ec.h -- purchase webhooks from shops: POST /webhooks/shopify/{shop},
 * /webhooks/woocommerce/{shop} and /webhooks/ec/{shop} (musubi's generic
 * format), the normalized order/refund representation their parsers share,
 * and the processor that turns stored deliveries into orders, a ledger and
 * per-customer / per-friend rollups.
 *
 * Intake (ec.c): look the shop up (cached), verify the platform's HMAC with
 * the shop's secret and, during a rotation, its previous one (constant
 * time, before anything is parsed), parse the body with the platform's
 * parser (shopify.c, woocommerce.c, generic.c: pure, no I/O) into a struct
 * ec_event, and add the delivery to the current group-commit batch: one
 * INSERT ... ON CONFLICT DO NOTHING into ec_webhook_events, keyed on the
 * delivery id, per batch.  The shop gets its 200 only when that INSERT has
 * returned; 503 when it failed.
 *
 *	unknown shop, or a shop of another platform	404
 *	bad or missing signature			401, nothing stored
 *	X-Shopify-Shop-Domain not the shop's domain	403, nothing stored
 *	body not JSON					400, nothing stored
 *	generic body that breaks its schema		422 with a JSON pointer
 *	Shopify/WooCommerce event musubi cannot use	200, stored as rejected
 *	    (negative quantity, absurd amount, missing id...) with the reason
 *	a topic musubi does not use			200, stored as ignored
 *	duplicate delivery				200, nothing new stored
 *	WooCommerce's unsigned ping (webhook_id=N)	200, nothing stored
 *
 * Processor: a timer (and a kick after each commit) calls musubi_ec_apply()
 * in PostgreSQL (sql/003_shops.sql), which claims pending rows with FOR
 * UPDATE SKIP LOCKED and applies them and the rollups in one transaction,
 * under an advisory lock so that appliers in several processes never race
 * over one order.  A second timer runs musubi_ec_rfm() every
 * EC_RFM_INTERVAL_MS (a constant: config keys belong to config.c) and once
 * at start.  Shops are cached for 5 s (1 s for unknown slugs); the API
 * flushes this process's cache when a shop changes, and a rotation keeps
 * the previous secret valid, so other processes catch up safely.
 */
#ifndef MUSUBI_EC_H
#define MUSUBI_EC_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "musubi/compat.h"

struct app;
struct ec;

/* Money is held as an integer count of millionths: exact, never a double. */
#define EC_MONEY_SCALE		1000000LL
/* Amounts must stay below 10^12 units of the currency. */
#define EC_MONEY_MAX		(1000000000000LL * EC_MONEY_SCALE - 1)
#define EC_MONEY_LEN		32	/* a formatted amount, with its NUL */
#define EC_TIME_LEN		32	/* "2025-01-02T03:04:05.123456Z" */
#define EC_HASH_LEN		65	/* SHA-256 hex + NUL */
#define EC_ID_MAX		128	/* bytes of an external id */
#define EC_QUANTITY_MAX		1000000
#define EC_ITEMS_MAX		2000	/* line items of one order */
#define EC_REFUNDS_MAX		500	/* refunds listed in one order */
#define EC_TOKEN_MAX		512	/* bytes of an attribution token */
#define EC_RFM_INTERVAL_MS	(10 * 60 * 1000)
#define EC_MAX_BODY		(4 * 1024 * 1024)

enum ec_platform {
	EC_SHOPIFY,
	EC_WOOCOMMERCE,
	EC_GENERIC,
};

enum ec_kind {
	EC_ORDER,	/* an order as it stands now (a snapshot) */
	EC_REFUND,	/* a refund of an order */
	EC_DELETE,	/* the order was deleted */
	EC_IGNORED,	/* a topic musubi does not use: stored, not applied */
	EC_INVALID,	/* unusable: stored with its problem, not applied */
};

struct ec_item {
	char		*line_id;	/* the platform's line item id */
	char		*product_id;
	char		*variant_id;
	char		*sku;
	char		*title;
	char		*vendor;
	int64_t		 quantity;
	int64_t		 price;		/* unit price */
	int64_t		 total;		/* line total after its discounts */
};

struct ec_refund_item {
	char		*line_id;
	int64_t		 quantity;
	int64_t		 amount;
};

struct ec_refund {
	char		*id;
	char		*order_id;
	int64_t		 amount;	/* money returned, >= 0 */
	char		 created_at[EC_TIME_LEN];
	int		 estimated;	/* created_at is a stand-in */
	char		*note;
	struct ec_refund_item *items;
	size_t		 nitems;
};

struct ec_customer {
	char		*id;		/* the platform's id; NULL for guests */
	char		*key;		/* id, or "guest:" + email hash */
	char		 email_hash[EC_HASH_LEN];	/* "" if none */
	char		 phone_hash[EC_HASH_LEN];	/* "" if none */
	char		*first_name;
	char		*last_name;
};

struct ec_order {
	char		*id;
	char		*number;
	char		*currency;
	char		*presentment_currency;
	char		*status;
	char		*financial_status;
	char		*cancel_reason;
	char		*source_name;
	int		 test;
	int		 restored;	/* WooCommerce order.restored */
	char		 placed_at[EC_TIME_LEN];
	char		 updated_at[EC_TIME_LEN];	/* "" if unknown */
	char		 paid_at[EC_TIME_LEN];		/* "" if unpaid */
	char		 cancelled_at[EC_TIME_LEN];	/* "" if not */
	int64_t		 gross;		/* total when placed */
	int64_t		 current_total;	/* net of edits and listed refunds */
	int		 has_customer;
	struct ec_customer customer;
	char		*landing_site;
	char		*referring_site;
	char		*attribution_token;
	json_t		*note_attributes;	/* [{name, value}], own ref */
	struct ec_item	*items;
	size_t		 nitems;
	struct ec_refund *refunds;	/* refunds the order lists */
	size_t		 nrefunds;
};

struct ec_event {
	enum ec_kind	 kind;
	char		*entity_id;	/* order id, or refund id */
	struct ec_order	 order;		/* EC_ORDER; EC_DELETE: order.id */
	struct ec_refund refund;	/* EC_REFUND */
	char		*event_id;	/* generic: event_id in the body */
	char		*problem;	/* EC_INVALID and EC_IGNORED: why */
	char		*path;		/* JSON pointer to the value at fault */
	char		**flags;	/* values musubi corrected or doubts */
	size_t		 nflags;
};

struct ec_parse_opts {
	const char	*topic;		/* the topic header; generic: NULL */
	const char	*currency;	/* the shop's currency */
	const char	*triggered_at;	/* X-Shopify-Triggered-At, or NULL */
};

/*
 * Parse a verified body into ev (zeroed first; free it with
 * ec_event_free either way).  0 when the delivery can be stored: ev->kind
 * says what it is, and EC_INVALID carries ev->problem and ev->path.  -1
 * with *cause (caller frees) when the body is not JSON at all.  Money is
 * checked to stay below EC_MONEY_MAX, quantities to 0..EC_QUANTITY_MAX,
 * times to years 1970-9999; ids stay exact (64-bit integers or strings).
 */
int		 shopify_parse(const void *body, size_t len,
		    const struct ec_parse_opts *, struct ec_event *ev,
		    char **cause);
int		 woocommerce_parse(const void *body, size_t len,
		    const struct ec_parse_opts *, struct ec_event *ev,
		    char **cause);
int		 generic_parse(const void *body, size_t len,
		    const struct ec_parse_opts *, struct ec_event *ev,
		    char **cause);
/* True for WooCommerce's unsigned creation ping: "webhook_id=<digits>". */
int		 woocommerce_is_ping(const void *body, size_t len);
/*
 * The key WooCommerce signs with: the secret after
 * wp_specialchars_decode(ENT_QUOTES) (&amp; &lt; &gt; &quot; &#039;).
 * New string, caller frees.
 */
char		*woocommerce_secret(const char *secret);

void		 ec_event_free(struct ec_event *);
/*
 * The normalized document stored in ec_webhook_events.doc and read by
 * musubi_ec_apply(): new reference; NULL for EC_INVALID and EC_IGNORED.
 */
json_t		*ec_event_doc(const struct ec_event *);
const char	*ec_kind_name(enum ec_kind);
const char	*ec_platform_name(enum ec_platform);

/*
 * Helpers shared by the parsers; pure.  Each returns 0, or -1 with *why (a
 * static string) when the value is present but unusable.
 *
 * An amount: a decimal string ("1234", "-0.50", at most 12 integer and 6
 * fraction digits, more fraction digits only if zeros) or a JSON integer;
 * a JSON real only when allow_real (WooCommerce sends some prices so), and
 * then rounded to millionths.
 */
int		 ec_money(const json_t *, int allow_real, int64_t *out,
		    const char **why);
int		 ec_money_str(const char *, int64_t *out, const char **why);
/* Format millionths as a decimal string without trailing zeros. */
void		 ec_money_format(int64_t, char out[EC_MONEY_LEN]);

#define EC_TIME_UTC	0x01	/* no offset means UTC (WooCommerce *_gmt) */
#define EC_TIME_EPOCH	0x02	/* accept a JSON integer of Unix seconds */
/*
 * A time: ISO 8601 / RFC 3339 ("2025-01-02T12:00:00+09:00", 'T' or ' ',
 * fraction optional) into "YYYY-MM-DDTHH:MM:SS[.ffffff]Z" in UTC.
 */
int		 ec_time(const json_t *, int flags, char out[EC_TIME_LEN],
		    const char **why);
int		 ec_time_str(const char *, int flags, char out[EC_TIME_LEN],
		    const char **why);
/*
 * An external id, exact: a JSON integer >= 0 or a non-empty string of at
 * most EC_ID_MAX bytes without control characters.  New string or NULL.
 */
char		*ec_id(const json_t *, const char **why);
/* A string member cut to maxchars characters; NULL if absent or empty. */
char		*ec_text(const json_t *, size_t maxchars);
/*
 * Hash contact data for matching without keeping it: SHA-256 hex of the
 * trimmed, lowercased email (must hold one '@'), and of the phone number in
 * E.164 with Japan as the default country ("090-1234-5678" and
 * "+81 90 1234 5678" hash alike).  out is "" when the value is not usable.
 */
void		 ec_email_hash(const char *, char out[EC_HASH_LEN]);
void		 ec_phone_hash(const char *, char out[EC_HASH_LEN]);
/*
 * The musubi_t query parameter of a URL or path, verbatim (not
 * percent-decoded): new string, or NULL when absent, empty or too long.
 */
char		*ec_url_token(const char *url);
/* Set ev's problem (first one wins) and make it EC_INVALID. */
void		 ec_problem(struct ec_event *, const char *path,
		    const char *fmt, ...) PRINTFLIKE(3, 4);
/* Note something musubi corrected or doubts about the event. */
void		 ec_flag(struct ec_event *, const char *fmt, ...)
		    PRINTFLIKE(2, 3);
/*
 * Read obj[key] (the value at JSON pointer parent + "/" + key).  Absent
 * means missing or null, and also "" with EC_F_LENIENT.  Each returns 0 when
 * read, 1 when absent and not EC_F_REQUIRED, and -1 after ec_problem() when
 * the value is bad or required and absent.  EC_F_LENIENT (generic format,
 * whose templates render everything as strings) also accepts integers as
 * digit strings and booleans as "true"/"false"/"1"/"0".
 */
#define EC_F_REQUIRED	0x100
#define EC_F_NONNEG	0x200	/* amounts: refuse negatives */
#define EC_F_REAL	0x400	/* amounts: accept JSON reals */
#define EC_F_LENIENT	0x800
const json_t	*ec_member(const json_t *obj, const char *key, int flags);
int		 ec_get_money(struct ec_event *, const json_t *obj,
		    const char *key, const char *parent, int flags,
		    int64_t *out);
/* flags may add EC_TIME_UTC and EC_TIME_EPOCH. */
int		 ec_get_time(struct ec_event *, const json_t *obj,
		    const char *key, const char *parent, int flags,
		    char out[EC_TIME_LEN]);
/* *out is a new string (caller frees) when 0 is returned. */
int		 ec_get_id(struct ec_event *, const json_t *obj,
		    const char *key, const char *parent, int flags,
		    char **out);
/* A quantity: an integer 0..EC_QUANTITY_MAX. */
int		 ec_get_quantity(struct ec_event *, const json_t *obj,
		    const char *key, const char *parent, int flags,
		    int64_t *out);
/* A boolean; absent is false. */
int		 ec_get_bool(struct ec_event *, const json_t *obj,
		    const char *key, const char *parent, int flags,
		    int *out);
/* A three-letter currency code, uppercase; *out is a new string. */
int		 ec_get_currency(struct ec_event *, const json_t *obj,
		    const char *key, const char *parent, int flags,
		    char **out);
/* note_attributes-style [{name, value}] cut to sane sizes: new ref. */
json_t		*ec_name_values(const json_t *arr);
/* The musubi_t value of a [{name, value}] array (or "_musubi_t"). */
char		*ec_attr_token(const json_t *arr);
/* a * b, checked against EC_MONEY_MAX; -1 on overflow. */
int		 ec_money_mul(int64_t a, int64_t b, int64_t *out);
/* a + b, checked against EC_MONEY_MAX; -1 on overflow. */
int		 ec_money_add(int64_t a, int64_t b, int64_t *out);

/*
 * Load a body: an object (new reference) with NUL characters in strings
 * replaced by U+FFFD.  NULL when it is not usable: *storable says whether
 * the body is still valid JSON to keep (a number out of range, a non-object),
 * and *cause (caller frees) says why.
 */
json_t		*ec_load(const void *body, size_t len, int *storable,
		    char **cause);

/* The intake and processor. */
struct ec	*ec_new(struct app *);
/* Start the apply and RFM timers. */
int		 ec_start(struct ec *);
/* Take no new work; commits and applies in flight still complete. */
void		 ec_stop(struct ec *);
/* True while commits, applies or the RFM job are in flight. */
int		 ec_busy(const struct ec *);
void		 ec_free(struct ec *);
/* Forget cached shops (after an API change to one). */
void		 ec_flush_shops(struct ec *);

#endif
