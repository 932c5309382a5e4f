/* SPDX-License-Identifier: ISC */
/*
 * sandbox.h -- private interfaces of line-sandbox, the local stand-in for
 * the LINE Messaging API and LINE Login that musubi's tests talk to.
 *
 * main.c wires the modules into one struct sandbox and runs the loop.
 * server.c receives every HTTP request, gives it a request id, applies rate
 * limits and fault injection, and owns the reply helpers; api.c (Messaging
 * API), login.c (LINE Login and the account-link dialog) and control.c
 * (/sandbox/...) answer them.  validate.c checks message objects as LINE
 * does, store.c keeps users, deliveries, retry keys and counters,
 * config.c parses and prints the JSON configuration, webhook.c signs and
 * POSTs webhook bodies, and util.c holds the small shared helpers (string
 * map, fixed-key index, PRNG, ids, clocks).  One section per file below,
 * as tmux.h does.
 */
#ifndef LINE_SANDBOX_H
#define LINE_SANDBOX_H

#include <sys/queue.h>

#include <stddef.h>
#include <stdint.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <jansson.h>

#include "musubi/compat.h"
#include "musubi/crypto.h"

#define SB_DEFAULT_LISTEN	"127.0.0.1:8090"

#define SB_ID_LEN		17	/* 'U', 'C' or 'R' + 16 bytes */
#define SB_ID_STRLEN		33	/* "U" + 32 hex digits */
#define SB_UUID_STRLEN		CRYPTO_UUID_LEN

#define SB_MAX_MESSAGES		5
#define SB_MAX_MULTICAST	500
#define SB_TEXT_MAX		5000	/* UTF-16 code units */
#define SB_ALTTEXT_MAX		400
#define SB_QUICKREPLY_MAX	13
#define SB_EMOJIS_MAX		20

#define SB_RETRY_KEY_TTL_MS	(24LL * 3600 * 1000)
#define SB_LINK_TOKEN_TTL_MS	(10LL * 60 * 1000)
#define SB_REPLY_TOKEN_TTL_MS	(20LL * 60 * 1000)
#define SB_CODE_TTL_MS		(10LL * 60 * 1000)
#define SB_ACCESS_TTL_S		(30L * 24 * 3600)
#define SB_REFRESH_TTL_S	(90L * 24 * 3600)

#define SB_STATUS_SLOTS		600	/* statuses 0..599 */
#define SB_FAULT_MAX_STATUSES	16

/* Every endpoint the sandbox counts, rate-limits and injects faults on. */
enum sb_ep {
	SB_EP_PUSH = 0,
	SB_EP_MULTICAST,
	SB_EP_BROADCAST,
	SB_EP_REPLY,
	SB_EP_VALIDATE_REPLY,
	SB_EP_VALIDATE_PUSH,
	SB_EP_VALIDATE_MULTICAST,
	SB_EP_VALIDATE_NARROWCAST,
	SB_EP_VALIDATE_BROADCAST,
	SB_EP_QUOTA,
	SB_EP_CONSUMPTION,
	SB_EP_PROFILE,
	SB_EP_LINK_TOKEN,
	SB_EP_ACCOUNT_LINK,
	SB_EP_AUTHORIZE,
	SB_EP_TOKEN,
	SB_EP_VERIFY_ID_TOKEN,
	SB_EP_VERIFY_ACCESS_TOKEN,
	SB_EP_USER_PROFILE,
	SB_EP_FRIENDSHIP,
	SB_EP_UNKNOWN,
	SB_EP_CONTROL,
	SB_EP_COUNT
};

#define SB_EPF_RETRY_KEY	0x01	/* accepts X-Line-Retry-Key */
#define SB_EPF_CHANNEL		0x02	/* needs a channel token */
#define SB_EPF_LOGIN		0x04	/* LINE Login side */
#define SB_EPF_FAULTS		0x08	/* limits and faults apply */

struct sb_ep_info {
	const char	*name;	/* "POST /v2/bot/message/push" */
	double		 rate;	/* built-in req/s; 0 = unlimited */
	double		 burst;
	int		 flags;		/* SB_EPF_* */
};

/* --- util.c --- */

struct strmap_ent {
	char			*key;
	void			*val;
	struct strmap_ent	*next;
};

struct strmap {
	struct strmap_ent	**buckets;
	size_t			  nbuckets;
	size_t			  n;
	void			(*freefn)(void *);
};

/* Open-addressing index of records that carry a fixed-size key. */
struct sb_idx {
	uint32_t	*slots;		/* record index + 1; 0 = empty */
	size_t		 cap;		/* power of two */
	size_t		 n;
};

struct sb_rng {
	uint64_t	 s[4];		/* xoshiro256** state */
};

extern const struct sb_ep_info sb_eps[SB_EP_COUNT];

/* Make a map whose values are released with freefn (may be NULL). */
struct strmap	*strmap_new(void (*freefn)(void *));
void		 strmap_free(struct strmap *);
void		 strmap_clear(struct strmap *);
/* Borrowed value for key, or NULL. */
void		*strmap_get(const struct strmap *, const char *key);
/* Store val under a copy of key, freeing any previous value. */
void		 strmap_put(struct strmap *, const char *key, void *val);
/* Remove key, freeing its value; 0 if found, -1 if not. */
int		 strmap_del(struct strmap *, const char *key);
/* Call fn on every entry; entries for which fn returns 1 are removed. */
void		 strmap_sweep(struct strmap *,
		    int (*fn)(const char *, void *, void *), void *arg);

uint64_t	 sb_hash(const void *, size_t);
/* Find the record whose key (at keyoff, keylen bytes) equals key. */
long		 sb_idx_find(const struct sb_idx *, const void *base,
		    size_t stride, size_t keyoff, const void *key,
		    size_t keylen);
/* Index record rec; base holds records 0..rec, all already indexed. */
void		 sb_idx_add(struct sb_idx *, const void *base,
		    size_t stride, size_t keyoff, size_t keylen, uint32_t rec);
void		 sb_idx_free(struct sb_idx *);

void		 sb_rng_seed(struct sb_rng *, uint64_t);
uint64_t	 sb_rng_next(struct sb_rng *);
/* A double in [0, 1). */
double		 sb_rng_double(struct sb_rng *);

int64_t		 sb_now_ms(void);
int64_t		 sb_mono_us(void);

/* Parse "U" / "C" / "R" + 32 lowercase hex into id; -1 if malformed. */
int		 sb_id_parse(const char *, uint8_t id[SB_ID_LEN],
		    const char *kinds);
void		 sb_id_format(const uint8_t id[SB_ID_LEN],
		    char out[SB_ID_STRLEN + 1]);
/* Parse a hex-with-dashes UUID (any case) into 16 bytes; -1 if bad. */
int		 sb_uuid_parse(const char *, uint8_t out[16]);
void		 sb_uuid_format(const uint8_t in[16],
		    char out[SB_UUID_STRLEN + 1]);
/* A ULID-like id: 26 Crockford base32 characters. */
void		 sb_ulid(char out[27]);
/* Percent-encode s for a query value: new string, caller frees. */
char		*sb_urlencode(const char *);
/* Parse an x-www-form-urlencoded body into q (caller clears q). */
int		 sb_parse_form(const char *, size_t, struct evkeyvalq *q);

/* --- validate.c --- */

/* Collected bean-validation style errors: {"message","property"}. */
struct sb_errors {
	json_t		*details;	/* array */
	char		*invalid;	/* property of a binding error */
};

/* Count UTF-16 code units in UTF-8 text; -1 if it is not valid UTF-8. */
long		 sb_utf16_len(const char *, size_t);
void		 sb_errors_init(struct sb_errors *);
void		 sb_errors_clear(struct sb_errors *);
void		 sb_errors_add(struct sb_errors *, const char *property,
		    const char *fmt, ...) PRINTFLIKE(3, 4);
/* Record a binding error for property (only the first one is kept). */
void		 sb_errors_invalid(struct sb_errors *, const char *);
int		 sb_errors_any(const struct sb_errors *);
/* The LINE error body for errs: new reference. */
json_t		*sb_errors_json(const struct sb_errors *);
/* Check a messages array (1..5 message objects). */
void		 validate_messages(json_t *, struct sb_errors *);
/* Check notificationDisabled and customAggregationUnits of a body. */
void		 validate_send_options(json_t *, struct sb_errors *);
/* Tell whether a string is a valid customAggregationUnits name. */
int		 validate_unit_name(const char *);

/* --- config.c --- */

struct sb_rate {
	double		 rate;	/* requests/s; 0 = unlimited */
	double		 burst;
	int		 set;	/* given explicitly */
};

struct sb_fault {
	int		 set;
	double		 rate;		/* share answered badly */
	int		 statuses[SB_FAULT_MAX_STATUSES];
	size_t		 nstatuses;
	int		 after;		/* 5xx after the work */
	long		 latency_ms;
	double		 timeout_rate;	/* share never answered */
	long		 count;		/* left; -1 = no limit */
};

struct sb_config {
	json_t		*tokens;	/* allowed tokens or NULL */
	struct sb_rate	 rates[SB_EP_COUNT];
	struct sb_rate	 default_rate;
	int		 quota_limited;
	long long	 quota_value;
	struct sb_fault	 global_fault;
	struct sb_fault	 faults[SB_EP_COUNT];
	int		 auto_profiles;
	uint64_t	 seed;
	int		 retry_after;	/* seconds; 0 = none */
	size_t		 max_body;
	size_t		 max_batches;
	size_t		 max_recipients;
	long		 webhook_timeout_ms;
	char		*login_default_secret;
	char		*login_default_user;
	json_t		*login_clients;	/* {id: {secret, ...}} */
	json_t		*webhooks;	/* {token: {url, ...}} */
};

/* Defaults: a new config, caller frees. */
struct sb_config *config_new(uint64_t seed);
void		 config_free(struct sb_config *);
/*
 * Apply the keys present in doc over base (NULL = defaults) into a new
 * config; NULL and *cause (caller frees) when doc is not acceptable.
 */
struct sb_config *config_apply(const struct sb_config *base, json_t *doc,
		    char **cause);
/* Load a config file over the defaults. */
struct sb_config *config_load(const char *path, uint64_t seed, char **cause);
/* The whole effective config as JSON: new reference. */
json_t		*config_json(const struct sb_config *);
/* The fault settings that apply to ep (borrowed). */
struct sb_fault	*config_fault(struct sb_config *, int ep);
/* Tell whether token may be used (any token when none are listed). */
int		 config_token_allowed(const struct sb_config *,
		    const char *);
/* Login channel secret for client_id (borrowed). */
const char	*config_login_secret(const struct sb_config *,
		    const char *client_id);
/* Webhook target of a channel: borrowed strings, -1 when none. */
int		 config_webhook_target(const struct sb_config *,
		    const char *token, const char **url, const char **secret,
		    const char **destination);

/* The token of the only configured webhook target, or NULL. */
const char	*config_only_webhook(const struct sb_config *);

/* --- store.c --- */

struct sb_profile {
	char		*display_name;
	char		*language;
	char		*picture_url;
	char		*status_message;
};

#define SB_USER_REGISTERED	0x01
#define SB_USER_FRIEND		0x02
#define SB_USER_BLOCKED		0x04
#define SB_USER_DUP		0x08

struct sb_user {
	uint64_t		 first_payload;	/* hash of first batch */
	struct sb_profile	*profile;	/* registered users only */
	uint32_t		 count;		/* batches received */
	uint32_t		 flags;		/* SB_USER_* */
	uint8_t			 id[SB_ID_LEN];
};

struct sb_retry {
	uint8_t		 key[16];
	uint8_t		 request_id[16];
	int64_t		 accepted_ms;
	uint64_t	 first_msg_id;
	uint32_t	 nmsgs;		/* sentMessages (push), else 0 */
};

struct sb_bucket {
	double		 tokens;
	int64_t		 last_us;
	int		 primed;
};

struct sb_channel {
	char			*token;
	uint32_t		 index;
	struct sb_bucket	 buckets[SB_EP_COUNT];
	struct sb_retry		*retries;
	size_t			 nretries;
	size_t			 retries_cap;
	struct sb_idx		 retry_idx;
	long long		 usage;		/* quota consumption */
	uint64_t		 requests;	/* accepted sends */
	uint64_t		 recipients;
	uint64_t		 messages;
	char			 bot_id[SB_ID_STRLEN + 1];
};

struct sb_payload {
	uint32_t	 refs;
	uint64_t	 hash;
	size_t		 len;
	char		 json[];
};

struct sb_batch {
	uint64_t		 seq;
	int64_t			 time_ms;
	struct sb_payload	*payload;
	uint8_t			*recipients;	/* n * SB_ID_LEN */
	uint32_t		 nrecipients;
	uint32_t		 channel;
	int			 ep;
	char			 request_id[SB_UUID_STRLEN + 1];
	char			 retry_key[SB_UUID_STRLEN + 1];
};

struct sb_pair {
	uint64_t	 hash;
	uint32_t	 user;
	uint32_t	 count;		/* 0 = empty slot */
};

struct sb_link_token {
	char		*token;		/* channel */
	char		 link[48];	/* the link token itself */
	char		 user[SB_ID_STRLEN + 1];
	int64_t		 expires_ms;
	int		 used;
};

struct sb_reply_token {
	char		 user[SB_ID_STRLEN + 1];
	int64_t		 expires_ms;
	int		 used;
};

struct sb_store {
	struct sb_user		*users;
	size_t			 nusers;
	size_t			 nreached;	/* with count > 0 */
	size_t			 users_cap;
	struct sb_idx		 user_idx;
	struct sb_pair		*pairs;
	size_t			 npairs;
	size_t			 pairs_cap;

	struct sb_batch		*ring;
	size_t			 ring_cap;
	size_t			 ring_head;
	size_t			 ring_len;
	size_t			 ring_recipients;
	uint64_t		 next_seq;
	struct sb_payload	*last_payload;

	struct sb_channel	**channels;
	size_t			 nchannels;
	struct strmap		*channel_map;
	struct sb_bucket	 login_buckets[SB_EP_COUNT];
	struct strmap		*link_tokens;
	struct strmap		*reply_tokens;

	uint64_t		 next_msg_id;
	unsigned char		 secret[32];
	uint64_t		 generation;

	uint64_t		 requests[SB_EP_COUNT][SB_STATUS_SLOTS];
	uint64_t		 held[SB_EP_COUNT];
	uint64_t		 delivered_requests;
	uint64_t		 delivered_recipients;
	uint64_t		 delivered_messages;
	uint64_t		 undelivered_recipients;
	uint32_t		 max_per_user;
	uint64_t		 dup_users;
	uint64_t		 dup_deliveries;
	uint64_t		 faults_injected;
};

/* One accepted send to record. */
struct sb_send {
	int			 ep;
	struct sb_channel	*chan;
	const uint8_t		*ids;		/* nids * SB_ID_LEN */
	size_t			 nids;
	const char		*payload;	/* compact messages JSON */
	size_t			 payload_len;
	size_t			 nmessages;
	const char		*request_id;
	const char		*retry_key;	/* NULL when none */
};

struct sb_store	*store_new(void);
void		 store_free(struct sb_store *);
/* Forget everything recorded (users, deliveries, keys, counters). */
void		 store_reset(struct sb_store *);
/* Drop expired link and reply tokens. */
void		 store_expire(struct sb_store *, int64_t now_ms);
/* Apply new recording limits. */
void		 store_limit(struct sb_store *, const struct sb_config *);
/* The channel for token, created on first use (borrowed). */
struct sb_channel *store_channel(struct sb_store *, const char *token);
/* Existing channel for token or NULL. */
struct sb_channel *store_channel_find(struct sb_store *, const char *);
void		 store_count(struct sb_store *, int ep, int status);
/* Take one token from a bucket; 0 if allowed, -1 if over the limit. */
int		 store_take(struct sb_bucket *, const struct sb_rate *);

long		 store_user_find(const struct sb_store *,
		    const uint8_t id[SB_ID_LEN]);
/* Index of the user, created when missing. */
uint32_t	 store_user_get(struct sb_store *, const uint8_t id[SB_ID_LEN]);
/* Tell whether a message to id reaches a person who sees it. */
int		 store_reachable(const struct sb_store *,
		    const struct sb_config *, const uint8_t id[SB_ID_LEN]);
/* The profile of a friend: new reference, or NULL (404). */
json_t		*store_profile_json(const struct sb_store *,
		    const struct sb_config *, const uint8_t id[SB_ID_LEN]);
/* Profile of any user, registered or generated: new reference. */
json_t		*store_user_profile(const struct sb_store *,
		    const uint8_t id[SB_ID_LEN]);
/* Register or update a user from a control API object. */
int		 store_user_register(struct sb_store *, json_t *,
		    char **cause);
/* Make a user a friend; returns 1 if that changed anything. */
int		 store_user_befriend(struct sb_store *,
		    const struct sb_config *, const uint8_t id[SB_ID_LEN],
		    int *was_blocked);

/* The accepted retry key entry, or NULL if new or older than 24 h. */
const struct sb_retry *store_retry_find(struct sb_channel *,
		    const uint8_t key[16], int64_t now_ms);
void		 store_retry_accept(struct sb_channel *,
		    const uint8_t key[16], int64_t now_ms,
		    const char *request_id, uint64_t first_msg_id,
		    uint32_t nmsgs);
/* Reserve n message ids; returns the first. */
uint64_t	 store_msg_ids(struct sb_store *, size_t n);
/* sentMessages for ids first..first+n-1: new reference. */
json_t		*store_sent_messages(const struct sb_store *,
		    uint64_t first, size_t n);
/* Record an accepted send; returns the recipients reached. */
size_t		 store_deliver(struct sb_store *,
		    const struct sb_config *, const struct sb_send *);

/* Issue a link token for user on chan: borrowed string. */
const char	*store_link_token_new(struct sb_store *, struct sb_channel *,
		    const char *user);
struct sb_link_token *store_link_token_find(struct sb_store *,
		    const char *);
void		 store_reply_token_add(struct sb_store *, const char *token,
		    const char *user, int64_t now_ms);
/* Remember the replyToken of each event that names source.userId. */
void		 store_reply_tokens_from(struct sb_store *, json_t *events,
		    int64_t now_ms);
/* Use a reply token: 1 known (user filled), 0 unknown, -1 used/expired. */
int		 store_reply_token_use(struct sb_store *, const char *token,
		    int64_t now_ms, char user[SB_ID_STRLEN + 1]);

/* The /sandbox/stats document: new reference. */
json_t		*store_stats_json(const struct sb_store *,
		    const char *token);
/* The /sandbox/deliveries document for one user or recent batches. */
json_t		*store_deliveries_json(const struct sb_store *,
		    const uint8_t *id, size_t limit);

/* --- webhook.c --- */

/* Done: status 0 and err set on transport failure; body borrowed. */
typedef void sb_webhook_cb(int status, const char *body, size_t len,
    const char *err, void *arg);

struct sb_whjob;
TAILQ_HEAD(sb_whjobq, sb_whjob);

struct sb_webhooks {
	struct event_base	*base;
	struct sb_whjobq	 jobs;
	uint64_t		 sent;
	uint64_t		 failed;
};

struct sb_webhooks *webhook_new(struct event_base *);
/* Cancel what is in flight (callbacks get err "cancelled"), then free. */
void		 webhook_free(struct sb_webhooks *);
/* base64 HMAC-SHA256 of body keyed with secret: new string. */
char		*webhook_sign(const char *secret, const void *, size_t);
/*
 * Fill webhookEventId, timestamp, mode and deliveryContext where missing
 * in each event, and wrap them as {"destination","events"}: new reference
 * (events borrowed).
 */
json_t		*webhook_body(json_t *events, const char *destination);
/* POST body (copied) signed with secret to an http:// url. */
int		 webhook_post(struct sb_webhooks *, const char *url,
		    const char *secret, const char *body, size_t len,
		    long timeout_ms, sb_webhook_cb *, void *arg, char **cause);

/* --- server.c --- */

struct sandbox;

/* One request being answered; lives on the handler's stack. */
struct sb_ctx {
	struct sandbox		*sb;
	struct evhttp_request	*req;
	const struct evhttp_uri	*uri;
	const char		*path;
	const char		*method;
	int			 ep;
	char			 rid[SB_UUID_STRLEN + 1];
	int64_t			 start_us;
	long			 latency_ms;
	int			 after_status;	/* 5xx after work */
	int			 after_hold;	/* hold after the work */
	int			 injected;	/* a fault was injected */
	struct sb_channel	*chan;
};

struct sb_pending;
TAILQ_HEAD(sb_pendingq, sb_pending);
struct sb_stream;
TAILQ_HEAD(sb_streamq, sb_stream);

struct sb_login;

struct sandbox {
	struct event_base	*base;
	struct evhttp		*http;
	struct sb_config	*cfg;
	struct sb_store		*store;
	struct sb_login		*login;
	struct sb_webhooks	*webhooks;
	struct sb_rng		 rng;
	struct sb_pendingq	 pending;	/* delayed and held */
	struct sb_streamq	 streams;	/* streamed control replies */
	size_t			 nheld;
};

/* Answer an HTTP request: the evhttp generic callback. */
void		 server_request_cb(struct evhttp_request *, void *);
/* Free delayed and held requests without answering (at exit). */
void		 server_shutdown(struct sandbox *);
/* Heap copy of a context for replies sent later. */
struct sb_ctx	*server_ctx_dup(const struct sb_ctx *);
/* Value of a request header (case-insensitive), or NULL. */
const char	*server_header(struct sb_ctx *, const char *);
void		 server_add_header(struct sb_ctx *, const char *,
		    const char *);
/* The request body (NUL-terminated copy not made): borrowed. */
const char	*server_body(struct sb_ctx *, size_t *len);
/* Value of a query parameter: new string, caller frees; NULL if none. */
char		*server_query(struct sb_ctx *, const char *);
/*
 * Apply rate limit and fault injection for ctx->ep with bucket (NULL = no
 * limit); 0 to go on, -1 when the request was answered or held.
 */
int		 server_gate(struct sb_ctx *, struct sb_bucket *);
/* Reply with a JSON body (stolen). */
void		 server_reply_json(struct sb_ctx *, int status, json_t *);
/* Reply {"message": msg}. */
void		 server_reply_message(struct sb_ctx *, int, const char *);
/* Reply {"error","error_description"} (OAuth style). */
void		 server_reply_oauth(struct sb_ctx *, int, const char *,
		    const char *);
/* Reply 302 to location. */
void		 server_reply_redirect(struct sb_ctx *, const char *);
/* Start a chunked 200 reply; the caller sends the chunks. */
void		 server_reply_start(struct sb_ctx *, const char *ctype);
/* Count and log a request whose reply was sent by other means. */
void		 server_log(struct sb_ctx *, int status);

/* --- api.c --- */

/* Answer a Messaging API request (/v2/bot/...). */
void		 api_handle(struct sb_ctx *);

/* --- login.c --- */

struct sb_login	*login_new(void);
void		 login_free(struct sb_login *);
void		 login_reset(struct sb_login *);
void		 login_expire(struct sb_login *, int64_t now_ms);
/* Answer a LINE Login request; 0 if handled, -1 if not a login path. */
int		 login_handle(struct sb_ctx *);
/* Send a signed event (stolen) to a channel's webhook target, or to the
   only one configured when token is NULL; -1 if there is none. */
int		 login_send_event(struct sandbox *, const char *token,
		    json_t *event);

/* --- control.c --- */

/* Answer /sandbox/... */
void		 control_handle(struct sb_ctx *);
/* Stop streamed replies (at exit). */
void		 control_shutdown(struct sandbox *);

/* --- main.c --- */

/* Apply a new config (takes it) to the running sandbox. */
void		 sandbox_set_config(struct sandbox *, struct sb_config *);

#endif
