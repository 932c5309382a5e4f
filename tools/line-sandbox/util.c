/* SPDX-License-Identifier: ISC */
/*
 * util.c -- small helpers shared by the sandbox modules: the endpoint
 * table, a chained string map (tokens, codes), an open-addressing index
 * for records with fixed-size binary keys (users, retry keys), the
 * seedable xoshiro256** PRNG used for fault injection, clocks, and
 * parsing and formatting of LINE ids, UUIDs, ULIDs and form bodies.
 * Nothing here does I/O.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "musubi/crypto.h"
#include "musubi/xmalloc.h"

#include "sandbox.h"

const struct sb_ep_info sb_eps[SB_EP_COUNT] = {
	[SB_EP_PUSH] = { "POST /v2/bot/message/push", 2000, 2000,
	    SB_EPF_RETRY_KEY | SB_EPF_CHANNEL | SB_EPF_FAULTS },
	[SB_EP_MULTICAST] = { "POST /v2/bot/message/multicast", 200, 200,
	    SB_EPF_RETRY_KEY | SB_EPF_CHANNEL | SB_EPF_FAULTS },
	[SB_EP_BROADCAST] = { "POST /v2/bot/message/broadcast",
	    60.0 / 3600, 60,
	    SB_EPF_RETRY_KEY | SB_EPF_CHANNEL | SB_EPF_FAULTS },
	[SB_EP_REPLY] = { "POST /v2/bot/message/reply", 2000, 2000,
	    SB_EPF_CHANNEL | SB_EPF_FAULTS },
	[SB_EP_VALIDATE_REPLY] = { "POST /v2/bot/message/validate/reply",
	    2000, 2000, SB_EPF_CHANNEL | SB_EPF_FAULTS },
	[SB_EP_VALIDATE_PUSH] = { "POST /v2/bot/message/validate/push",
	    2000, 2000, SB_EPF_CHANNEL | SB_EPF_FAULTS },
	[SB_EP_VALIDATE_MULTICAST] = {
	    "POST /v2/bot/message/validate/multicast", 2000, 2000,
	    SB_EPF_CHANNEL | SB_EPF_FAULTS },
	[SB_EP_VALIDATE_NARROWCAST] = {
	    "POST /v2/bot/message/validate/narrowcast", 2000, 2000,
	    SB_EPF_CHANNEL | SB_EPF_FAULTS },
	[SB_EP_VALIDATE_BROADCAST] = {
	    "POST /v2/bot/message/validate/broadcast", 2000, 2000,
	    SB_EPF_CHANNEL | SB_EPF_FAULTS },
	[SB_EP_QUOTA] = { "GET /v2/bot/message/quota", 2000, 2000,
	    SB_EPF_CHANNEL | SB_EPF_FAULTS },
	[SB_EP_CONSUMPTION] = { "GET /v2/bot/message/quota/consumption",
	    2000, 2000, SB_EPF_CHANNEL | SB_EPF_FAULTS },
	[SB_EP_PROFILE] = { "GET /v2/bot/profile/{userId}", 2000, 2000,
	    SB_EPF_CHANNEL | SB_EPF_FAULTS },
	[SB_EP_LINK_TOKEN] = { "POST /v2/bot/user/{userId}/linkToken",
	    2000, 2000, SB_EPF_CHANNEL | SB_EPF_FAULTS },
	[SB_EP_ACCOUNT_LINK] = { "GET /dialog/bot/accountLink", 0, 0,
	    SB_EPF_LOGIN | SB_EPF_FAULTS },
	[SB_EP_AUTHORIZE] = { "GET /oauth2/v2.1/authorize", 0, 0,
	    SB_EPF_LOGIN | SB_EPF_FAULTS },
	[SB_EP_TOKEN] = { "POST /oauth2/v2.1/token", 0, 0,
	    SB_EPF_LOGIN | SB_EPF_FAULTS },
	[SB_EP_VERIFY_ID_TOKEN] = { "POST /oauth2/v2.1/verify", 0, 0,
	    SB_EPF_LOGIN | SB_EPF_FAULTS },
	[SB_EP_VERIFY_ACCESS_TOKEN] = { "GET /oauth2/v2.1/verify", 0, 0,
	    SB_EPF_LOGIN | SB_EPF_FAULTS },
	[SB_EP_USER_PROFILE] = { "GET /v2/profile", 0, 0,
	    SB_EPF_LOGIN | SB_EPF_FAULTS },
	[SB_EP_FRIENDSHIP] = { "GET /friendship/v1/status", 0, 0,
	    SB_EPF_LOGIN | SB_EPF_FAULTS },
	[SB_EP_UNKNOWN] = { "unknown", 0, 0, 0 },
	[SB_EP_CONTROL] = { "sandbox", 0, 0, 0 },
};

/* Hash bytes with FNV-1a and a final avalanche. */
uint64_t
sb_hash(const void *p, size_t len)
{
	const unsigned char	*s = p;
	uint64_t		 h = 0xcbf29ce484222325ULL;
	size_t			 i;

	for (i = 0; i < len; i++) {
		h ^= s[i];
		h *= 0x100000001b3ULL;
	}
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	return (h);
}

/* Make an empty string map. */
struct strmap *
strmap_new(void (*freefn)(void *))
{
	struct strmap	*m = xcalloc(1, sizeof *m);

	m->nbuckets = 64;
	m->buckets = xcalloc(m->nbuckets, sizeof *m->buckets);
	m->freefn = freefn;
	return (m);
}

/* Remove every entry. */
void
strmap_clear(struct strmap *m)
{
	struct strmap_ent	*e, *next;
	size_t			 i;

	for (i = 0; i < m->nbuckets; i++) {
		for (e = m->buckets[i]; e != NULL; e = next) {
			next = e->next;
			if (m->freefn != NULL)
				m->freefn(e->val);
			free(e->key);
			free(e);
		}
		m->buckets[i] = NULL;
	}
	m->n = 0;
}

/* Free a map and its values. */
void
strmap_free(struct strmap *m)
{
	if (m == NULL)
		return;
	strmap_clear(m);
	free(m->buckets);
	free(m);
}

/* Look a key up. */
void *
strmap_get(const struct strmap *m, const char *key)
{
	struct strmap_ent	*e;
	size_t			 b;

	b = sb_hash(key, strlen(key)) & (m->nbuckets - 1);
	for (e = m->buckets[b]; e != NULL; e = e->next) {
		if (strcmp(e->key, key) == 0)
			return (e->val);
	}
	return (NULL);
}

/* Double the bucket array. */
static void
strmap_grow(struct strmap *m)
{
	struct strmap_ent	**nb, *e, *next;
	size_t			  i, n = m->nbuckets * 2, b;

	nb = xcalloc(n, sizeof *nb);
	for (i = 0; i < m->nbuckets; i++) {
		for (e = m->buckets[i]; e != NULL; e = next) {
			next = e->next;
			b = sb_hash(e->key, strlen(e->key)) & (n - 1);
			e->next = nb[b];
			nb[b] = e;
		}
	}
	free(m->buckets);
	m->buckets = nb;
	m->nbuckets = n;
}

/* Insert or replace a key. */
void
strmap_put(struct strmap *m, const char *key, void *val)
{
	struct strmap_ent	*e;
	size_t			 b;

	b = sb_hash(key, strlen(key)) & (m->nbuckets - 1);
	for (e = m->buckets[b]; e != NULL; e = e->next) {
		if (strcmp(e->key, key) == 0) {
			if (m->freefn != NULL && e->val != val)
				m->freefn(e->val);
			e->val = val;
			return;
		}
	}
	e = xmalloc(sizeof *e);
	e->key = xstrdup(key);
	e->val = val;
	e->next = m->buckets[b];
	m->buckets[b] = e;
	if (++m->n > m->nbuckets)
		strmap_grow(m);
}

/* Delete a key. */
int
strmap_del(struct strmap *m, const char *key)
{
	struct strmap_ent	**pp, *e;
	size_t			  b;

	b = sb_hash(key, strlen(key)) & (m->nbuckets - 1);
	for (pp = &m->buckets[b]; (e = *pp) != NULL; pp = &e->next) {
		if (strcmp(e->key, key) == 0) {
			*pp = e->next;
			if (m->freefn != NULL)
				m->freefn(e->val);
			free(e->key);
			free(e);
			m->n--;
			return (0);
		}
	}
	return (-1);
}

/* Visit every entry, removing those fn asks to drop. */
void
strmap_sweep(struct strmap *m, int (*fn)(const char *, void *, void *),
    void *arg)
{
	struct strmap_ent	**pp, *e;
	size_t			  i;

	for (i = 0; i < m->nbuckets; i++) {
		pp = &m->buckets[i];
		while ((e = *pp) != NULL) {
			if (fn(e->key, e->val, arg) == 1) {
				*pp = e->next;
				if (m->freefn != NULL)
					m->freefn(e->val);
				free(e->key);
				free(e);
				m->n--;
			} else
				pp = &e->next;
		}
	}
}

/* Find a record by key. */
long
sb_idx_find(const struct sb_idx *idx, const void *base, size_t stride,
    size_t keyoff, const void *key, size_t keylen)
{
	const unsigned char	*b = base;
	size_t			 i, mask;
	uint32_t		 s;

	if (idx->cap == 0)
		return (-1);
	mask = idx->cap - 1;
	i = sb_hash(key, keylen) & mask;
	while ((s = idx->slots[i]) != 0) {
		if (memcmp(b + (size_t)(s - 1) * stride + keyoff, key,
		    keylen) == 0)
			return ((long)(s - 1));
		i = (i + 1) & mask;
	}
	return (-1);
}

/* Put record rec into its slot. */
static void
sb_idx_place(struct sb_idx *idx, const void *base, size_t stride,
    size_t keyoff, size_t keylen, uint32_t rec)
{
	const unsigned char	*b = base;
	size_t			 i, mask = idx->cap - 1;

	i = sb_hash(b + (size_t)rec * stride + keyoff, keylen) & mask;
	while (idx->slots[i] != 0)
		i = (i + 1) & mask;
	idx->slots[i] = rec + 1;
}

/* Add a record, growing the table at half load. */
void
sb_idx_add(struct sb_idx *idx, const void *base, size_t stride,
    size_t keyoff, size_t keylen, uint32_t rec)
{
	uint32_t	 r;

	if ((idx->n + 1) * 2 > idx->cap) {
		free(idx->slots);
		idx->cap = idx->cap == 0 ? 1024 : idx->cap * 2;
		idx->slots = xcalloc(idx->cap, sizeof *idx->slots);
		for (r = 0; r < rec; r++)
			sb_idx_place(idx, base, stride, keyoff, keylen, r);
	}
	sb_idx_place(idx, base, stride, keyoff, keylen, rec);
	idx->n = (size_t)rec + 1;
}

/* Release an index. */
void
sb_idx_free(struct sb_idx *idx)
{
	free(idx->slots);
	memset(idx, 0, sizeof *idx);
}

/* Advance a splitmix64 state. */
static uint64_t
sb_splitmix(uint64_t *x)
{
	uint64_t	 z = (*x += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return (z ^ (z >> 31));
}

/* Seed the PRNG. */
void
sb_rng_seed(struct sb_rng *r, uint64_t seed)
{
	int	 i;

	for (i = 0; i < 4; i++)
		r->s[i] = sb_splitmix(&seed);
}

/* Rotate left. */
static inline uint64_t
sb_rotl(uint64_t x, int k)
{
	return ((x << k) | (x >> (64 - k)));
}

/* Next xoshiro256** output. */
uint64_t
sb_rng_next(struct sb_rng *r)
{
	uint64_t	*s = r->s;
	uint64_t	 result = sb_rotl(s[1] * 5, 7) * 9;
	uint64_t	 t = s[1] << 17;

	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = sb_rotl(s[3], 45);
	return (result);
}

/* A uniform double in [0, 1). */
double
sb_rng_double(struct sb_rng *r)
{
	return ((double)(sb_rng_next(r) >> 11) * 0x1.0p-53);
}

/* Wall-clock milliseconds since the epoch. */
int64_t
sb_now_ms(void)
{
	struct timespec	 ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ((int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
}

/* Monotonic microseconds. */
int64_t
sb_mono_us(void)
{
	struct timespec	 ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000);
}

/* Value of one lowercase hex digit, -1 if not one. */
static int
sb_hexval_lower(int c)
{
	if (c >= '0' && c <= '9')
		return (c - '0');
	if (c >= 'a' && c <= 'f')
		return (c - 'a' + 10);
	return (-1);
}

/* Value of one hex digit of either case. */
static int
sb_hexval(int c)
{
	if (c >= 'A' && c <= 'F')
		return (c - 'A' + 10);
	return (sb_hexval_lower(c));
}

/* Parse a LINE user, group or room id. */
int
sb_id_parse(const char *s, uint8_t id[SB_ID_LEN], const char *kinds)
{
	int	 hi, lo;
	size_t	 i;

	if (s == NULL || s[0] == '\0' || strchr(kinds, s[0]) == NULL ||
	    strlen(s) != SB_ID_STRLEN)
		return (-1);
	id[0] = (uint8_t)s[0];
	for (i = 0; i < 16; i++) {
		hi = sb_hexval_lower((unsigned char)s[1 + 2 * i]);
		lo = sb_hexval_lower((unsigned char)s[2 + 2 * i]);
		if (hi < 0 || lo < 0)
			return (-1);
		id[1 + i] = (uint8_t)(hi << 4 | lo);
	}
	return (0);
}

/* Format an id back to its string form. */
void
sb_id_format(const uint8_t id[SB_ID_LEN], char out[SB_ID_STRLEN + 1])
{
	out[0] = (char)id[0];
	crypto_hex(id + 1, 16, out + 1);
}

/* Parse a UUID in 8-4-4-4-12 form. */
int
sb_uuid_parse(const char *s, uint8_t out[16])
{
	size_t	 i, j = 0;
	int	 hi, lo;

	if (s == NULL || strlen(s) != SB_UUID_STRLEN)
		return (-1);
	for (i = 0; i < SB_UUID_STRLEN;) {
		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (s[i] != '-')
				return (-1);
			i++;
			continue;
		}
		hi = sb_hexval((unsigned char)s[i]);
		lo = sb_hexval((unsigned char)s[i + 1]);
		if (hi < 0 || lo < 0)
			return (-1);
		out[j++] = (uint8_t)(hi << 4 | lo);
		i += 2;
	}
	return (j == 16 ? 0 : -1);
}

/* Format 16 bytes as a lowercase UUID. */
void
sb_uuid_format(const uint8_t in[16], char out[SB_UUID_STRLEN + 1])
{
	char	 hex[33];
	size_t	 i, j = 0;

	crypto_hex(in, 16, hex);
	for (i = 0; i < 32; i++) {
		if (i == 8 || i == 12 || i == 16 || i == 20)
			out[j++] = '-';
		out[j++] = hex[i];
	}
	out[j] = '\0';
}

/* Make a ULID: 48-bit milliseconds then 80 random bits. */
void
sb_ulid(char out[27])
{
	static const char	 b32[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
	unsigned char		 rnd[10];
	uint64_t		 t = (uint64_t)sb_now_ms();
	uint64_t		 hi, lo;
	int			 i;

	crypto_random(rnd, sizeof rnd);
	for (i = 9; i >= 0; i--) {
		out[i] = b32[t & 31];
		t >>= 5;
	}
	/* 80 bits as 16 base32 digits: split into two 40-bit halves. */
	hi = lo = 0;
	for (i = 0; i < 5; i++) {
		hi = hi << 8 | rnd[i];
		lo = lo << 8 | rnd[5 + i];
	}
	for (i = 7; i >= 0; i--) {
		out[10 + i] = b32[hi & 31];
		hi >>= 5;
		out[18 + i] = b32[lo & 31];
		lo >>= 5;
	}
	out[26] = '\0';
}

/* Percent-encode everything but RFC 3986 unreserved characters. */
char *
sb_urlencode(const char *s)
{
	static const char	 hex[] = "0123456789ABCDEF";
	size_t			 n = strlen(s), i, j = 0;
	char			*out = xmalloc(n * 3 + 1);
	unsigned char		 c;

	for (i = 0; i < n; i++) {
		c = (unsigned char)s[i];
		if (isalnum(c) || c == '-' || c == '.' || c == '_' ||
		    c == '~')
			out[j++] = (char)c;
		else {
			out[j++] = '%';
			out[j++] = hex[c >> 4];
			out[j++] = hex[c & 15];
		}
	}
	out[j] = '\0';
	return (out);
}

/* Parse a form body with libevent's query parser. */
int
sb_parse_form(const char *body, size_t len, struct evkeyvalq *q)
{
	char	*s = xstrndup(body != NULL ? body : "", len);
	int	 rc;

	TAILQ_INIT(q);
	rc = evhttp_parse_query_str(s, q);
	free(s);
	return (rc);
}
