/* runtime/tokenizer.c — the tokenizers that turn training text into ids: bytes (id = byte),
 * GPT-2's byte-level BPE, which gives exactly the ids of OpenAI's encoder.py, and BERT's:
 * bytes with its special tokens, and WordPiece from a vocab.txt (its section below).
 *
 * GPT-2 encodes in three steps. A regex cuts the text into pre-tokens:
 *
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *
 * which pretoken_end() matches by hand over UTF-8, with the code point classes of
 * unicode_tables.h (\s is Unicode's White_Space, as in the `regex` module encoder.py uses;
 * JavaScript ports differ on U+0085 and U+FEFF). Each pre-token's bytes are then merged by
 * BPE: repeatedly, the adjacent pair of symbols with the lowest rank in vocab.bpe becomes
 * one symbol, until no pair has a rank. The symbols are finally looked up in encoder.json.
 * Text that is not UTF-8 is still encoded, and decoded back to the same bytes: a byte that
 * does not begin a well-formed sequence is one code point of its own, neither letter,
 * number nor space (what Python's "surrogateescape" decoding makes of it).
 *
 * encoder.json and vocab.bpe are read as untrusted input: the JSON by a parser for just
 * this shape (one flat object of string keys to integer ids), every key must be spelled
 * in GPT-2's byte alphabet, the ids must be 0..n-1 once each, every byte must have a
 * token, and every merge must join two tokens into a third that encoder.json holds. So
 * encoding can never meet a symbol without an id, and decoding checks each id it is given.
 *
 * BPE runs on ids rather than strings, with a heap of candidate pairs ordered by (rank,
 * position): O(n log n) for a pre-token of n bytes where encoder.py's loop is quadratic,
 * which matters because a pre-token can be a whole file of letters. That order gives
 * encoder.py's result provided no merge uses a token that a later merge makes (then a pair
 * created by a merge always ranks after it, and the heap merges every occurrence of a rank
 * left to right before any later rank, as encoder.py's passes do); the loader checks that,
 * and GPT-2's vocab.bpe, coming from BPE training, satisfies it. Results for short
 * pre-tokens are cached, as encoder.py caches them; the cache and the scratch arrays make a
 * tokenizer something one thread at a time encodes with.
 */
#include "runtime.h"
#include "unicode_tables.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { TOK_BYTES, TOK_GPT2, TOK_BERT_BYTES, TOK_WORDPIECE };

enum {
	MAX_VOCAB = 1 << 24,       /* ids and ranks; far from int32's limit, which heap keys need */
	CACHE_KEY_MAX = 64,        /* longer pre-tokens are rare: not worth a cache entry */
	CACHE_ENTRIES = 1 << 16,   /* then the cache is cleared, so memory stays bounded */
};

typedef struct { int32_t left, right, result; } Merge;

/* A cached pre-token: its bytes keys[key, key+klen) and its ids ids[at, at+n). */
typedef struct { uint64_t hash; uint32_t key, klen, at, n; } CacheSlot;

/* Token bytes -> id over a tokenizer's tokens (its bytes and off): open addressing, -1
 * empty, a power-of-two capacity at least twice the tokens. GPT-2's loader and WordPiece
 * both look tokens up in one (idmap_init, idmap_find). */
typedef struct {
	int32_t *slot;
	size_t cap;
} IdMap;

struct RtTokenizer {
	int kind, vocab, eot;
	char digest[2 * 64 + 2];   /* GPT-2: the SHA-256 of encoder.json and of vocab.bpe, in hex;
				      WordPiece: of vocab.txt */
	RtBertVocab bert;          /* BERT's: the special tokens */
	/* GPT-2 and WordPiece: token i is bytes[off[i] .. off[i+1]) */
	unsigned char *bytes;
	size_t *off;
	int32_t byte_id[256];
	Merge *merges;             /* by rank */
	int nmerges;
	uint64_t *pair_key;        /* (left << 32 | right) -> rank, open addressing; ~0 is empty */
	int32_t *pair_rank;
	size_t pair_cap;
	/* the cache */
	CacheSlot *slots;          /* 2 * CACHE_ENTRIES, klen 0 when empty */
	unsigned char *ckeys;
	int32_t *cids;
	size_t nslots_used, ckeys_len, ckeys_cap, cids_len, cids_cap;
	/* scratch for bpe_word, kept between calls */
	int32_t *sym;
	uint32_t *prv, *nxt;
	uint64_t *heap;
	size_t sym_cap, heap_cap;
	/* WordPiece: token bytes -> id; scratch for a word */
	IdMap wmap;
	uint32_t *wcp, *wfold;     /* a piece of text between white space, and it folded */
	size_t wcp_cap, wfold_cap;
	unsigned char *wkey;       /* a word in UTF-8, then a candidate token */
	size_t *wpos;              /* where each of the word's code points starts */
	size_t wkey_cap, wpos_cap;
};

/* Grows *p (elements of size `size`) to hold at least `need`; 0 or -1 (out of memory). */
static int grow(void *pp, size_t *cap, size_t need, size_t size)
{
	if (need <= *cap)
		return 0;
	size_t ncap = *cap ? *cap : 16;
	while (ncap < need) {
		if (ncap > SIZE_MAX / 2 / size)
			return -1;
		ncap *= 2;
	}
	void *np = realloc(*(void **)pp, ncap * size);
	if (!np)
		return -1;
	*(void **)pp = np;
	*cap = ncap;
	return 0;
}

static uint64_t hash_bytes(const unsigned char *s, size_t n)
{
	uint64_t h = 14695981039346656037u;
	for (size_t i = 0; i < n; i++)
		h = (h ^ s[i]) * 1099511628211u;
	return h;
}

static uint64_t mix64(uint64_t x)
{
	x ^= x >> 30, x *= 0xbf58476d1ce4e5b9u;
	x ^= x >> 27, x *= 0x94d049bb133111ebu;
	return x ^ (x >> 31);
}

/* ---------------------------------------------------------------- GPT-2's byte alphabet */

/* encoder.json and vocab.bpe spell each token's bytes with one printable code point per
 * byte: the printable Latin-1 bytes stand for themselves and the other 68 bytes, in
 * order, for U+0100..U+0143 (bytes_to_unicode in encoder.py). Only loading needs it. */
typedef struct {
	uint16_t cp_of_byte[256];
	int16_t byte_of_cp[0x144];   /* -1: not in the alphabet */
} Alphabet;

static void alphabet_init(Alphabet *a)
{
	int n = 0;
	for (int b = 0; b < 256; b++) {
		bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
		a->cp_of_byte[b] = (uint16_t)(printable ? b : 256 + n++);
	}
	for (int c = 0; c < 0x144; c++)
		a->byte_of_cp[c] = -1;
	for (int b = 0; b < 256; b++)
		a->byte_of_cp[a->cp_of_byte[b]] = (int16_t)b;
}

/* The byte a code point spells, or -1. */
static int alphabet_byte(const Alphabet *a, uint32_t cp)
{
	return cp < 0x144 ? a->byte_of_cp[cp] : -1;
}

/* ---------------------------------------------------------------- UTF-8 and code point classes */

enum { C_OTHER, C_LETTER, C_NUMBER, C_SPACE };

static bool in_table(const uint32_t (*t)[2], size_t n, uint32_t cp)
{
	size_t lo = 0, hi = n;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (cp < t[mid][0])
			hi = mid;
		else if (cp > t[mid][1])
			lo = mid + 1;
		else
			return true;
	}
	return false;
}

#define COUNT(a) (sizeof (a) / sizeof *(a))

static int class_of(uint32_t cp)
{
	if (cp < 0x80) {
		if ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z')
			return C_LETTER;
		if (cp >= '0' && cp <= '9')
			return C_NUMBER;
		return cp == ' ' || (cp >= '\t' && cp <= '\r') ? C_SPACE : C_OTHER;
	}
	if (in_table(uni_letter, COUNT(uni_letter), cp))
		return C_LETTER;
	if (in_table(uni_number, COUNT(uni_number), cp))
		return C_NUMBER;
	return in_table(uni_space, COUNT(uni_space), cp) ? C_SPACE : C_OTHER;
}

/* The code point at s[i] (i < n): its length in bytes, and its class in *cls. A byte that
 * starts no well-formed sequence is a code point of one byte, class OTHER. */
static size_t char_at(const unsigned char *s, size_t n, size_t i, int *cls)
{
	uint32_t cp;
	int len = rt_utf8_decode(s + i, n - i, &cp);
	if (!len) {
		*cls = C_OTHER;
		return 1;
	}
	*cls = class_of(cp);
	return (size_t)len;
}

/* ---------------------------------------------------------------- pre-tokenization */

/* Where the regex's match starting at s[i] ends (i < n). The alternatives are tried in
 * the regex's order; the regex always matches at least one code point. */
static size_t pretoken_end(const unsigned char *s, size_t n, size_t i)
{
	/* 's|'t|'re|'ve|'m|'ll|'d: lower case only, as in the regex */
	if (s[i] == '\'' && i + 1 < n) {
		unsigned char c = s[i + 1];
		if (c == 's' || c == 't' || c == 'm' || c == 'd')
			return i + 2;
		if (i + 2 < n && ((c == 'r' && s[i + 2] == 'e') || (c == 'v' && s[i + 2] == 'e') ||
				  (c == 'l' && s[i + 2] == 'l')))
			return i + 3;
	}
	int cls, k;
	size_t len = char_at(s, n, i, &cls), start = i;
	/* ` ?X+`: a space (U+0020 only) joins the run after it, unless white space follows */
	if (s[i] == ' ' && i + 1 < n) {
		size_t l1 = char_at(s, n, i + 1, &k);
		if (k != C_SPACE) {
			cls = k;
			len = 1 + l1;
		}
	}
	if (cls != C_SPACE) {
		/* \p{L}+, \p{N}+ or [^\s\p{L}\p{N}]+: a run of one class */
		for (i += len; i < n; i += len) {
			len = char_at(s, n, i, &k);
			if (k != cls)
				break;
		}
		return i;
	}
	/* \s+(?!\S)|\s+: a run of white space, less its last code point when something other
	 * than white space follows and the run has more than one; that last one then starts
	 * the next match (where a space can join a word: "  word" is " ", " word"). */
	size_t last = i;
	for (; i < n; i += len) {
		len = char_at(s, n, i, &k);
		if (k != C_SPACE)
			break;
		last = i;
	}
	return i < n && last > start ? last : i;
}

/* ---------------------------------------------------------------- the cache */

/* The slot of pre-token w[0..m) with hash h: its entry (klen != 0), or the empty slot
 * where it goes; NULL when the table cannot be allocated (then nothing is cached). */
static CacheSlot *cache_slot(RtTokenizer *t, uint64_t h, const unsigned char *w, size_t m)
{
	if (!t->slots && !(t->slots = calloc(2 * CACHE_ENTRIES, sizeof *t->slots)))
		return NULL;
	size_t mask = 2 * CACHE_ENTRIES - 1;
	for (size_t i = h & mask;; i = (i + 1) & mask) {
		CacheSlot *s = &t->slots[i];
		if (!s->klen || (s->hash == h && s->klen == m && !memcmp(t->ckeys + s->key, w, m)))
			return s;
	}
}

/* Remembers that w[0..m) encodes to ids[0..k). A full cache starts again empty: a
 * corpus has more distinct words than fit, and the frequent ones come back at once. */
static void cache_put(RtTokenizer *t, uint64_t h, const unsigned char *w, size_t m, const int32_t *ids, size_t k)
{
	if (t->nslots_used == CACHE_ENTRIES) {
		memset(t->slots, 0, 2 * CACHE_ENTRIES * sizeof *t->slots);
		t->nslots_used = t->ckeys_len = t->cids_len = 0;
	}
	CacheSlot *s = cache_slot(t, h, w, m);
	if (!s || s->klen || grow(&t->ckeys, &t->ckeys_cap, t->ckeys_len + m, 1) ||
	    grow(&t->cids, &t->cids_cap, t->cids_len + k, sizeof *t->cids))
		return;   /* the cache is only an optimization: without memory, go without it */
	memcpy(t->ckeys + t->ckeys_len, w, m);
	memcpy(t->cids + t->cids_len, ids, k * sizeof *ids);
	*s = (CacheSlot){.hash = h, .key = (uint32_t)t->ckeys_len, .klen = (uint32_t)m, .at = (uint32_t)t->cids_len,
			 .n = (uint32_t)k};
	t->ckeys_len += m;
	t->cids_len += k;
	t->nslots_used++;
}

/* ---------------------------------------------------------------- BPE */

static int32_t pair_rank(const RtTokenizer *t, int32_t left, int32_t right)
{
	uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
	size_t mask = t->pair_cap - 1;
	for (size_t i = mix64(key) & mask;; i = (i + 1) & mask) {
		if (t->pair_key[i] == key)
			return t->pair_rank[i];
		if (t->pair_key[i] == UINT64_MAX)
			return -1;
	}
}

/* A binary min-heap of (rank << 32 | position): the lowest rank first, and of equal
 * ranks the leftmost, which is the order encoder.py merges in. */
static void heap_push(uint64_t *h, size_t *n, uint64_t v)
{
	size_t i = (*n)++;
	while (i > 0 && h[(i - 1) / 2] > v) {
		h[i] = h[(i - 1) / 2];
		i = (i - 1) / 2;
	}
	h[i] = v;
}

static uint64_t heap_pop(uint64_t *h, size_t *n)
{
	uint64_t top = h[0], v = h[--*n];
	size_t i = 0;
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= *n)
			break;
		if (c + 1 < *n && h[c + 1] < h[c])
			c++;
		if (h[c] >= v)
			break;
		h[i] = h[c];
		i = c;
	}
	h[i] = v;
	return top;
}

enum { NONE = UINT32_MAX };
enum { DEAD = -1 };

/* Room for a pre-token of m bytes in the scratch arrays. */
static int scratch(RtTokenizer *t, size_t m)
{
	if (m <= t->sym_cap)
		return 0;
	size_t c = t->sym_cap ? t->sym_cap : 64;
	while (c < m)
		c *= 2;   /* m < 2^32, so no overflow */
	int32_t *a = realloc(t->sym, c * sizeof *a);
	if (!a)
		return -1;
	t->sym = a;
	uint32_t *b = realloc(t->prv, c * sizeof *b);
	if (!b)
		return -1;
	t->prv = b;
	uint32_t *d = realloc(t->nxt, c * sizeof *d);
	if (!d)
		return -1;
	t->nxt = d;
	t->sym_cap = c;
	return 0;
}

static int push_pair(RtTokenizer *t, size_t *nh, uint32_t pos)
{
	int32_t r = pair_rank(t, t->sym[pos], t->sym[t->nxt[pos]]);
	if (r < 0)
		return 0;
	if (grow(&t->heap, &t->heap_cap, *nh + 1, sizeof *t->heap))
		return -1;
	heap_push(t->heap, nh, (uint64_t)(uint32_t)r << 32 | pos);
	return 0;
}

static int reserve(int32_t **ids, size_t *cap, size_t need)
{
	return grow(ids, cap, need, sizeof **ids);
}

/* BPE on one pre-token w[0..m), m > 0: appends its ids to *out. 0, or -1 (out of memory). */
static int bpe_word(RtTokenizer *t, const unsigned char *w, size_t m, int32_t **out, size_t *n, size_t *cap)
{
	if (m == 1) {
		if (reserve(out, cap, *n + 1))
			return -1;
		(*out)[(*n)++] = t->byte_id[w[0]];
		return 0;
	}
	uint64_t h = 0;
	if (m <= CACHE_KEY_MAX) {
		h = hash_bytes(w, m);
		CacheSlot *s = cache_slot(t, h, w, m);
		if (s && s->klen) {
			if (reserve(out, cap, *n + s->n))
				return -1;
			memcpy(*out + *n, t->cids + s->at, s->n * sizeof **out);
			*n += s->n;
			return 0;
		}
	}
	/* positions are uint32 (NONE marks the ends): a single 4 GiB word is not text */
	if (m >= NONE || scratch(t, m))
		return -1;
	int32_t *sym = t->sym;
	uint32_t *prv = t->prv, *nxt = t->nxt;
	for (size_t i = 0; i < m; i++) {
		sym[i] = t->byte_id[w[i]];
		prv[i] = i ? (uint32_t)i - 1 : NONE;
		nxt[i] = i + 1 < m ? (uint32_t)i + 1 : NONE;
	}
	size_t nh = 0;
	for (uint32_t i = 0; i + 1 < m; i++)
		if (push_pair(t, &nh, i))
			return -1;
	/* A popped pair is stale when either symbol has changed since it was pushed; the
	 * merge table says which symbols a rank joins, so that is one comparison each. */
	while (nh) {
		uint64_t top = heap_pop(t->heap, &nh);
		uint32_t i = (uint32_t)top, j = nxt[i];
		const Merge *mg = &t->merges[top >> 32];
		if (sym[i] != mg->left || j == NONE || sym[j] != mg->right)
			continue;
		sym[i] = mg->result;
		sym[j] = DEAD;
		nxt[i] = nxt[j];
		if (nxt[j] != NONE)
			prv[nxt[j]] = i;
		if ((prv[i] != NONE && push_pair(t, &nh, prv[i])) || (nxt[i] != NONE && push_pair(t, &nh, i)))
			return -1;
	}
	size_t k = 0;
	for (uint32_t i = 0; i != NONE; i = nxt[i])
		k++;
	if (reserve(out, cap, *n + k))
		return -1;
	int32_t *o = *out + *n;
	k = 0;
	for (uint32_t i = 0; i != NONE; i = nxt[i])
		o[k++] = sym[i];
	if (m <= CACHE_KEY_MAX)
		cache_put(t, h, w, m, o, k);
	*n += k;
	return 0;
}

/* ---------------------------------------------------------------- encoding and decoding */

static int wordpiece_encode(RtTokenizer *t, const unsigned char *s, size_t len, int32_t **ids, size_t *n, size_t *cap);

RtTokenizer *rt_tok_bytes(void)
{
	RtTokenizer *t = calloc(1, sizeof *t);
	if (!t)
		return NULL;
	t->kind = TOK_BYTES;
	t->vocab = 256;
	t->eot = -1;
	return t;
}

RtTokenizer *rt_tok_bert_bytes(void)
{
	RtTokenizer *t = rt_tok_bytes();
	if (!t)
		return NULL;
	t->kind = TOK_BERT_BYTES;
	t->vocab = RT_BERT_BYTES_VOCAB;
	t->bert = (RtBertVocab){.vocab = RT_BERT_BYTES_VOCAB, .pad = 256, .unk = 257, .cls = 258, .sep = 259, .mask = 260};
	return t;
}

int rt_tok_vocab(const RtTokenizer *t) { return t->vocab; }
int rt_tok_eot(const RtTokenizer *t) { return t->eot; }

/* On failure (out of memory) *n is back to what it was: no half-encoded text. */
int rt_tok_encode(RtTokenizer *t, const char *text, size_t len, int32_t **ids, size_t *n, size_t *cap)
{
	const unsigned char *s = (const unsigned char *)text;
	if (t->kind == TOK_WORDPIECE)
		return wordpiece_encode(t, s, len, ids, n, cap);
	if (t->kind == TOK_BYTES || t->kind == TOK_BERT_BYTES) {
		if (len > SIZE_MAX - *n || reserve(ids, cap, *n + len))
			return -1;
		for (size_t i = 0; i < len; i++)
			(*ids)[*n + i] = s[i];
		*n += len;
		return 0;
	}
	size_t n0 = *n;
	for (size_t i = 0; i < len;) {
		size_t end = pretoken_end(s, len, i);
		if (bpe_word(t, s + i, end - i, ids, n, cap)) {
			*n = n0;
			return -1;
		}
		i = end;
	}
	return 0;
}

/* BERT's special tokens, in the order of the byte-level vocabulary's ids 256.. */
static const char *const bert_special_names[] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};

/* id's text into out (NULL: only its length): a byte, a token, or (BERT's bytes) a special
 * token's name. WordPiece's tokens are words: a space before each but the first, except
 * that a "##" continuation joins the one before without its "##". */
static size_t piece(const RtTokenizer *t, int32_t id, bool first, char *out)
{
	if (t->kind == TOK_BYTES || (t->kind == TOK_BERT_BYTES && id < 256)) {
		if (out)
			*out = (char)id;
		return 1;
	}
	const unsigned char *b;
	size_t n;
	if (t->kind == TOK_BERT_BYTES) {
		b = (const unsigned char *)bert_special_names[id - 256], n = strlen((const char *)b);
	} else {
		b = t->bytes + t->off[id], n = t->off[id + 1] - t->off[id];
	}
	size_t o = 0;
	if (t->kind == TOK_WORDPIECE && n > 2 && b[0] == '#' && b[1] == '#') {
		b += 2, n -= 2;
	} else if (t->kind == TOK_WORDPIECE && !first) {
		if (out)
			out[0] = ' ';
		o = 1;
	}
	if (out)
		memcpy(out + o, b, n);
	return o + n;
}

/* NULL for an id outside the vocabulary, or out of memory. */
char *rt_tok_decode(const RtTokenizer *t, const int32_t *ids, size_t n, size_t *len)
{
	size_t total = 0;
	for (size_t i = 0; i < n; i++) {
		if (ids[i] < 0 || ids[i] >= t->vocab)
			return NULL;
		total += piece(t, ids[i], i == 0, NULL);
	}
	char *out = malloc(total + 1);
	if (!out)
		return NULL;
	size_t o = 0;
	for (size_t i = 0; i < n; i++)
		o += piece(t, ids[i], i == 0, out + o);
	out[o] = 0;
	if (len)
		*len = o;
	return out;
}

void rt_tok_free(RtTokenizer *t)
{
	if (!t)
		return;
	free(t->bytes);
	free(t->off);
	free(t->merges);
	free(t->pair_key);
	free(t->pair_rank);
	free(t->slots);
	free(t->ckeys);
	free(t->cids);
	free(t->sym);
	free(t->prv);
	free(t->nxt);
	free(t->heap);
	free(t->wmap.slot);
	free(t->wcp);
	free(t->wfold);
	free(t->wkey);
	free(t->wpos);
	free(t);
}

const char *rt_tok_digest(const RtTokenizer *t)
{
	return t->kind == TOK_GPT2 || t->kind == TOK_WORDPIECE ? t->digest : NULL;
}

int rt_tok_bert(const RtTokenizer *t, RtBertVocab *v)
{
	if (t->kind != TOK_BERT_BYTES && t->kind != TOK_WORDPIECE)
		return -1;
	*v = t->bert;
	return 0;
}

/* ---------------------------------------------------------------- loading: shared */

/* SHA-256 (FIPS 180-4) of n bytes, as 64 hex digits into hex[65]: the checksum people
 * compare tokenizer files by (sha256sum, examples/fetch_gpt2_tokenizer.sh). */
static void sha256_hex(const unsigned char *p, size_t n, char *hex)
{
	static const uint32_t K[64] = {
		0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
		0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
		0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
		0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
		0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
		0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
		0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
		0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
	uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
#define ROR(x, k) ((x) >> (k) | (x) << (32 - (k)))
	/* the message, a 1 bit, zeros, and its length in bits: whole 64-byte blocks */
	size_t blocks = (n + 8) / 64 + 1;
	for (size_t blk = 0; blk < blocks; blk++) {
		unsigned char b[64];
		for (size_t i = 0; i < 64; i++) {
			size_t at = blk * 64 + i;
			b[i] = at < n ? p[at] : at == n ? 0x80 : 0;
		}
		if (blk == blocks - 1)
			for (int i = 0; i < 8; i++)
				b[56 + i] = (unsigned char)((uint64_t)n * 8 >> (56 - 8 * i));
		uint32_t w[64], s[8];
		for (int i = 0; i < 16; i++)
			w[i] = (uint32_t)b[4 * i] << 24 | (uint32_t)b[4 * i + 1] << 16 | (uint32_t)b[4 * i + 2] << 8 | b[4 * i + 3];
		for (int i = 16; i < 64; i++)
			w[i] = w[i - 16] + (ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3)) + w[i - 7] +
			       (ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10));
		memcpy(s, h, sizeof s);
		for (int i = 0; i < 64; i++) {
			uint32_t t1 = s[7] + (ROR(s[4], 6) ^ ROR(s[4], 11) ^ ROR(s[4], 25)) + ((s[4] & s[5]) ^ (~s[4] & s[6])) +
				      K[i] + w[i];
			uint32_t t2 = (ROR(s[0], 2) ^ ROR(s[0], 13) ^ ROR(s[0], 22)) + ((s[0] & s[1]) ^ (s[0] & s[2]) ^ (s[1] & s[2]));
			memmove(s + 1, s, 7 * sizeof *s);
			s[4] += t1;
			s[0] = t1 + t2;
		}
		for (int i = 0; i < 8; i++)
			h[i] += s[i];
	}
#undef ROR
	for (int i = 0; i < 8; i++)
		snprintf(hex + 8 * i, 9, "%08x", (unsigned)h[i]);
}

typedef struct {
	RtTokenizer *t;
	Alphabet abc;
	const char *path;            /* the file being read, for messages */
	const unsigned char *text;   /* its bytes */
	char *err;
	size_t errlen;
	IdMap map;                   /* token bytes -> id */
} Loader;

/* "path:line:col: message" for the byte at p of the file being read. */
static int bad_at(Loader *L, const unsigned char *p, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int bad_at(Loader *L, const unsigned char *p, const char *fmt, ...)
{
	int line = 1, col = 1;
	for (const unsigned char *q = L->text; q < p; q++) {
		if (*q == '\n')
			line++, col = 1;
		else if ((*q & 0xC0) != 0x80)
			col++;
	}
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	rt_errf(L->err, L->errlen, "%s:%d:%d: %s", L->path, line, col, msg);
	return -1;
}

/* A token's bytes as the files spell them, cut short if long, for messages. */
static const char *spell(const Loader *L, const unsigned char *b, size_t n, char *buf, size_t cap)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned cp = L->abc.cp_of_byte[b[i]];
		if (o + 2 + 4 > cap) {   /* room for this code point, then "..." and the NUL */
			memcpy(buf + o, "...", 3);
			o += 3;
			break;
		}
		if (cp < 0x80) {
			buf[o++] = (char)cp;
		} else {
			buf[o++] = (char)(0xC0 | cp >> 6);
			buf[o++] = (char)(0x80 | (cp & 0x3F));
		}
	}
	buf[o] = 0;
	return buf;
}

static const unsigned char *tok_bytes(const RtTokenizer *t, int32_t id, size_t *n)
{
	*n = t->off[id + 1] - t->off[id];
	return t->bytes + t->off[id];
}

/* An empty map for n tokens: 0, or -1 out of memory. */
static int idmap_init(IdMap *m, size_t n)
{
	m->cap = 16;
	while (m->cap < 2 * n)
		m->cap *= 2;
	if (!(m->slot = malloc(m->cap * sizeof *m->slot)))
		return -1;
	for (size_t i = 0; i < m->cap; i++)
		m->slot[i] = -1;
	return 0;
}

/* The id of t's token spelled b[0..n), or -1; with put >= 0, inserts it as that id when
 * absent. */
static int32_t idmap_find(const IdMap *m, const RtTokenizer *t, const unsigned char *b, size_t n, int32_t put)
{
	size_t mask = m->cap - 1;
	for (size_t i = hash_bytes(b, n) & mask;; i = (i + 1) & mask) {
		int32_t id = m->slot[i];
		if (id < 0) {
			if (put >= 0)
				m->slot[i] = put;
			return -1;
		}
		size_t len;
		const unsigned char *tb = tok_bytes(t, id, &len);
		if (len == n && !memcmp(tb, b, n))
			return id;
	}
}

static int32_t map_find(Loader *L, const unsigned char *b, size_t n, int32_t put)
{
	return idmap_find(&L->map, L->t, b, n, put);
}

/* ---------------------------------------------------------------- loading encoder.json */

/* The bytes of every key, back to back. */
typedef struct {
	Loader *L;
	unsigned char *b;
	size_t len, cap;
} Keys;

/* A key's character, which must spell a byte, appended as that byte. */
static int key_put(RtJson *j, void *ctx, uint32_t cp, size_t at)
{
	Keys *k = ctx;
	int b = alphabet_byte(&k->L->abc, cp);
	if (b < 0)
		return rt_json_fail(j, at, "U+%04X is not in GPT-2's byte alphabet (tokens spell bytes as code points "
				    "U+0021..U+0143)", (unsigned)cp);
	if (grow(&k->b, &k->cap, k->len + 1, 1))
		return rt_json_fail(j, at, "out of memory");
	k->b[k->len++] = (unsigned char)b;
	return 0;
}

/* encoder.json: one object {"token": id, ...}. Fills t->bytes, t->off, t->vocab. */
static int load_encoder(Loader *L, size_t len)
{
	RtTokenizer *t = L->t;
	RtJson j = {.s = L->text, .n = len, .ends = "the object is never closed"};
	Keys keys = {.L = L};
	size_t *koff = NULL, ncap = 0, n = 0;   /* entry i: key bytes at koff[i], id ids[i], at pos[i] */
	int32_t *ids = NULL, *slot = NULL;
	const unsigned char **pos = NULL;
	size_t ids_cap = 0, pos_cap = 0;
	int r = -1, more = 1;
	if (len >= 3 && !memcmp(j.s, "\xEF\xBB\xBF", 3))
		j.pos = 3;   /* a byte order mark, which some editors add */
	int c = rt_json_peek(&j);
	if (c != '{') {
		bad_at(L, j.s + j.pos, c < 0 ? "empty: expected a JSON object of tokens to ids" : "expected '{': the file "
		       "should be one JSON object of tokens to ids");
		goto out;
	}
	j.pos++;
	if (rt_json_peek(&j) == '}') {
		bad_at(L, j.s + j.pos, "no tokens: the object is empty");
		goto out;
	}
	while (more == 1) {
		rt_json_peek(&j);
		const unsigned char *at = j.s + j.pos;
		size_t k0 = keys.len;
		int64_t id;
		if (rt_json_string(&j, "expected a token (a string)", key_put, &keys))
			goto bad_json;
		if (keys.len == k0) {
			bad_at(L, at, "an empty token");
			goto out;
		}
		if (rt_json_expect(&j, ':', "expected ':' after the token") || rt_json_uint(&j, "an id", MAX_VOCAB - 1, &id))
			goto bad_json;
		if (grow(&koff, &ncap, n + 2, sizeof *koff) || grow(&ids, &ids_cap, n + 1, sizeof *ids) ||
		    grow(&pos, &pos_cap, n + 1, sizeof *pos)) {
			bad_at(L, at, "out of memory");
			goto out;
		}
		koff[n] = k0;
		koff[n + 1] = keys.len;
		ids[n] = (int32_t)id;
		pos[n++] = at;
		if ((more = rt_json_more(&j, '}', "expected ',' or '}' after an id")) < 0)
			goto bad_json;
	}
	if (rt_json_peek(&j) >= 0) {
		bad_at(L, j.s + j.pos, "text after the object");
		goto out;
	}
	if (n > MAX_VOCAB) {
		rt_errf(L->err, L->errlen, "%s: %s tokens, more than the %s a vocabulary may have here", L->path,
			mgl_commas((int64_t)n, (char[32]){0}), mgl_commas(MAX_VOCAB, (char[32]){0}));
		goto out;
	}
	/* The ids must be 0..n-1, once each: decoding indexes by them, and a hole or a
	 * repeat means the file is not an encoder. slot[id] is the entry that has it. */
	if (!(slot = malloc(n * sizeof *slot)))
		goto oom;
	for (size_t i = 0; i < n; i++)
		slot[i] = -1;
	for (size_t i = 0; i < n; i++) {
		if ((size_t)ids[i] >= n) {
			bad_at(L, pos[i], "id %ld is out of range: with %s tokens the ids must be 0..%zu", (long)ids[i],
			       mgl_commas((int64_t)n, (char[32]){0}), n - 1);
			goto out;
		}
		if (slot[ids[i]] >= 0) {
			bad_at(L, pos[i], "id %ld is given twice", (long)ids[i]);
			goto out;
		}
		slot[ids[i]] = (int32_t)i;
	}
	/* the tokens' bytes in id order */
	t->vocab = (int)n;
	if (!(t->bytes = malloc(keys.len ? keys.len : 1)) || !(t->off = malloc((n + 1) * sizeof *t->off)))
		goto oom;
	size_t o = 0;
	for (size_t id = 0; id < n; id++) {
		size_t e = (size_t)slot[id], kl = koff[e + 1] - koff[e];
		t->off[id] = o;
		memcpy(t->bytes + o, keys.b + koff[e], kl);
		o += kl;
	}
	t->off[n] = o;
	/* the map from bytes to ids, which also finds a token given twice */
	if (idmap_init(&L->map, n))
		goto oom;
	for (size_t id = 0; id < n; id++) {
		size_t kl;
		const unsigned char *kb = tok_bytes(t, (int32_t)id, &kl);
		int32_t prev = map_find(L, kb, kl, (int32_t)id);
		if (prev >= 0) {
			char buf[64];
			bad_at(L, pos[slot[id]], "the token '%s' is given twice (ids %ld and %zu)",
			       spell(L, kb, kl, buf, sizeof buf), (long)prev, id);
			goto out;
		}
	}
	r = 0;
	goto out;
bad_json:
	bad_at(L, j.s + j.e.at, "%s", j.e.msg);
	goto out;
oom:
	rt_errf(L->err, L->errlen, "%s: out of memory", L->path);
out:
	free(keys.b);
	free(koff);
	free(ids);
	free(pos);
	free(slot);
	return r;
}

/* ---------------------------------------------------------------- loading vocab.bpe */

/* A field of vocab.bpe, s[0..n), as the bytes it spells, into out (n bytes at most). */
static int merge_field(Loader *L, const unsigned char *s, size_t n, unsigned char *out, size_t *outn)
{
	size_t o = 0;
	for (size_t i = 0; i < n;) {
		uint32_t cp;
		int len = rt_utf8_decode(s + i, n - i, &cp);
		if (!len)
			return bad_at(L, s + i, "bytes that are not UTF-8");
		int b = alphabet_byte(&L->abc, cp);
		if (b < 0)
			return bad_at(L, s + i, "U+%04X is not in GPT-2's byte alphabet (tokens spell bytes as code points "
				      "U+0021..U+0143)", (unsigned)cp);
		out[o++] = (unsigned char)b;
		i += (size_t)len;
	}
	*outn = o;
	return 0;
}

static bool is_blank(unsigned char c) { return c == ' ' || c == '\t'; }

/* vocab.bpe: "#version: 0.2", then one merge a line, "left right", by rank. Fills the
 * merge table; the tokens must be encoder.json's. */
static int load_merges(Loader *L, size_t len)
{
	RtTokenizer *t = L->t;
	const unsigned char *p = L->text, *end = p + len;
	unsigned char *buf = NULL;
	int32_t *prod = NULL;
	const unsigned char **where = NULL;   /* each merge's line, for messages */
	size_t mcap = 0, wcap = 0;
	int r = -1;
	if (p >= end || *p != '#') {
		bad_at(L, p, p >= end ? "empty: expected a '#version' line, then merges" : "expected a '#version' line first");
		goto out;
	}
	/* every line is shorter than the file: one buffer holds any field or the two joined */
	if (!(buf = malloc(len)))
		goto oom;
	while (p < end && *p != '\n')
		p++;
	while (p < end) {
		const unsigned char *line = ++p, *e = p;
		while (e < end && *e != '\n')
			e++;
		p = e;
		if (e > line && e[-1] == '\r')
			e--;   /* CRLF: encoder.py's split() drops the \r too */
		const unsigned char *a = line;
		while (a < e && is_blank(*a))
			a++;
		if (a == e)
			continue;   /* blank lines hold no merge; skipping them keeps the ranks' order */
		const unsigned char *ae = a;
		while (ae < e && !is_blank(*ae))
			ae++;
		const unsigned char *b = ae;
		while (b < e && is_blank(*b))
			b++;
		const unsigned char *be = b;
		while (be < e && !is_blank(*be))
			be++;
		const unsigned char *z = be;
		while (z < e && is_blank(*z))
			z++;
		if (b == e || z != e) {
			bad_at(L, line, "expected a merge: two tokens separated by a space");
			goto out;
		}
		size_t na, nb;
		if (merge_field(L, a, (size_t)(ae - a), buf, &na) || merge_field(L, b, (size_t)(be - b), buf + na, &nb))
			goto out;
		int32_t left = map_find(L, buf, na, -1), right = map_find(L, buf + na, nb, -1);
		int32_t result = map_find(L, buf, na + nb, -1);
		const unsigned char *missing = left < 0 ? a : right < 0 ? b : NULL;
		if (missing || result < 0) {
			char s[64];
			if (missing)
				bad_at(L, missing, "'%.*s' is not a token of encoder.json",
				       (int)((missing == a ? ae : be) - missing), (const char *)missing);
			else
				bad_at(L, a, "the merge makes '%s', which is not a token of encoder.json",
				       spell(L, buf, na + nb, s, sizeof s));
			goto out;
		}
		if (t->nmerges >= MAX_VOCAB) {
			bad_at(L, line, "more than %s merges", mgl_commas(MAX_VOCAB, (char[32]){0}));
			goto out;
		}
		if (grow(&t->merges, &mcap, (size_t)t->nmerges + 1, sizeof *t->merges) ||
		    grow(&where, &wcap, (size_t)t->nmerges + 1, sizeof *where))
			goto oom;
		where[t->nmerges] = line;
		t->merges[t->nmerges++] = (Merge){left, right, result};
	}
	/* the table from pairs to ranks, which also finds a merge given twice */
	t->pair_cap = 16;
	while (t->pair_cap < 2 * (size_t)t->nmerges)
		t->pair_cap *= 2;
	if (!(t->pair_key = malloc(t->pair_cap * sizeof *t->pair_key)) ||
	    !(t->pair_rank = malloc(t->pair_cap * sizeof *t->pair_rank)))
		goto oom;
	memset(t->pair_key, 0xFF, t->pair_cap * sizeof *t->pair_key);
	size_t mask = t->pair_cap - 1;
	for (int32_t rk = 0; rk < t->nmerges; rk++) {
		const Merge *m = &t->merges[rk];
		uint64_t key = (uint64_t)(uint32_t)m->left << 32 | (uint32_t)m->right;
		size_t i = mix64(key) & mask;
		while (t->pair_key[i] != UINT64_MAX && t->pair_key[i] != key)
			i = (i + 1) & mask;
		if (t->pair_key[i] == key) {
			const unsigned char *first = where[t->pair_rank[i]];
			int line = 1;
			for (const unsigned char *q = L->text; q < first; q++)
				line += *q == '\n';
			bad_at(L, where[rk], "this merge is given already, on line %d", line);
			goto out;
		}
		t->pair_key[i] = key;
		t->pair_rank[i] = rk;
	}
	/* The heap in bpe_word gives encoder.py's result only if no merge uses a token that a
	 * later merge makes (see the top of this file): prod[id] is the last rank making id. */
	if (!(prod = malloc((size_t)t->vocab * sizeof *prod)))
		goto oom;
	for (int i = 0; i < t->vocab; i++)
		prod[i] = -1;
	for (int32_t rk = 0; rk < t->nmerges; rk++)
		prod[t->merges[rk].result] = rk;
	for (int32_t rk = 0; rk < t->nmerges; rk++) {
		const Merge *m = &t->merges[rk];
		int32_t side = prod[m->left] > rk ? m->left : prod[m->right] > rk ? m->right : -1;
		if (side >= 0) {
			char s[64];
			size_t n;
			const unsigned char *tb = tok_bytes(t, side, &n);
			int line = 1;
			for (const unsigned char *q = L->text; q < where[prod[side]]; q++)
				line += *q == '\n';
			bad_at(L, where[rk], "this merge uses '%s', which only a later merge (line %d) makes: merges must "
			       "come in the order BPE learned them", spell(L, tb, n, s, sizeof s), line);
			goto out;
		}
	}
	r = 0;
	goto out;
oom:
	rt_errf(L->err, L->errlen, "%s: out of memory", L->path);
out:
	free(buf);
	free(prod);
	free(where);
	return r;
}

/* ---------------------------------------------------------------- loading: the entry point */

/* dir/name, malloc'd. */
static char *join(const char *dir, const char *name)
{
	size_t n = strlen(dir);
	bool slash = n && dir[n - 1] == '/';
	char *p = malloc(n + strlen(name) + 2);
	if (p)
		sprintf(p, "%s%s%s", dir, slash ? "" : "/", name);
	return p;
}

RtTokenizer *rt_tok_gpt2_files(const char *epath, const char *vpath, char *err, size_t errlen)
{
	Loader L = {.err = err, .errlen = errlen};
	alphabet_init(&L.abc);
	char *etext = NULL, *vtext = NULL;
	RtTokenizer *t = calloc(1, sizeof *t);
	if (!t) {
		rt_errf(err, errlen, "%s: out of memory", epath);
		goto bad;
	}
	t->kind = TOK_GPT2;
	size_t elen, vlen;
	if (!(etext = mgl_read_whole(epath, RT_TOK_MAX_FILE_BYTES, "tokenizer files", &elen, err, errlen)) ||
	    !(vtext = mgl_read_whole(vpath, RT_TOK_MAX_FILE_BYTES, "tokenizer files", &vlen, err, errlen)))
		goto bad;
	sha256_hex((const unsigned char *)etext, elen, t->digest);
	t->digest[64] = ' ';
	sha256_hex((const unsigned char *)vtext, vlen, t->digest + 65);
	L.t = t;
	L.path = epath;
	L.text = (const unsigned char *)etext;
	if (load_encoder(&L, elen))
		goto bad;
	for (int b = 0; b < 256; b++) {
		unsigned char c = (unsigned char)b;
		if ((t->byte_id[b] = map_find(&L, &c, 1, -1)) < 0) {
			rt_errf(err, errlen, "%s: no token for the byte 0x%02x (spelled U+%04X): every byte needs one", epath, b,
			        L.abc.cp_of_byte[b]);
			goto bad;
		}
	}
	/* encoder.py encodes the text "<|endoftext|>" as ordinary text; the id is only for
	 * whoever marks document ends (mgl tokenize). */
	t->eot = map_find(&L, (const unsigned char *)"<|endoftext|>", 13, -1);
	L.path = vpath;
	L.text = (const unsigned char *)vtext;
	if (load_merges(&L, vlen))
		goto bad;
	free(L.map.slot);
	free(etext);
	free(vtext);
	return t;
bad:
	free(L.map.slot);
	free(etext);
	free(vtext);
	rt_tok_free(t);
	return NULL;
}

RtTokenizer *rt_tok_gpt2(const char *dir, char *err, size_t errlen)
{
	char *epath = join(dir, "encoder.json"), *vpath = join(dir, "vocab.bpe");
	RtTokenizer *t = NULL;
	if (!epath || !vpath)
		rt_errf(err, errlen, "%s: out of memory", dir);
	else
		t = rt_tok_gpt2_files(epath, vpath, err, errlen);
	free(epath);
	free(vpath);
	return t;
}

/* ---------------------------------------------------------------- BERT's WordPiece */

/* BERT's tokenization.py, in two steps. BasicTokenizer drops control characters, cuts the
 * text at white space and around each CJK ideograph, lower-cases each piece and strips its
 * accents (NFD, then no nonspacing marks), and cuts it again before and after every
 * punctuation character. WordpieceTokenizer then splits each word greedily into the longest
 * tokens of vocab.txt, from the left, the ones after the first spelled with "##"; a word
 * that cannot be split so, or has more than WP_MAX_WORD code points, is [UNK]. Text that
 * is not UTF-8 loses the bytes that start no well-formed sequence (Python would read them as
 * U+FFFD, which BasicTokenizer drops). unicode_tables.h says what is folded per code point
 * and what is not (NFD's canonical reordering). */
enum { WP_MAX_WORD = 100 };

/* BERT's _is_chinese_char: the CJK Unified Ideographs blocks and their extensions. */
static bool is_cjk(uint32_t c)
{
	static const uint32_t cjk[][2] = {{0x3400, 0x4DBF}, {0x4E00, 0x9FFF}, {0xF900, 0xFAFF}, {0x20000, 0x2A6DF},
					  {0x2A700, 0x2B73F}, {0x2B740, 0x2B81F}, {0x2B820, 0x2CEAF}, {0x2F800, 0x2FA1F}};
	return in_table(cjk, COUNT(cjk), c);
}

/* BERT's _is_punctuation: the ASCII symbols as well as Unicode's P*. */
static bool is_punct(uint32_t c)
{
	if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126))
		return true;
	return c >= 0x80 && in_table(uni_punct, COUNT(uni_punct), c);
}

/* Lower-cased and stripped of accents: c's code points into out[0..3), how many. */
static int fold(uint32_t c, uint32_t out[3])
{
	if (c < 0x80) {
		out[0] = c >= 'A' && c <= 'Z' ? c + 32 : c;
		return 1;
	}
	if (c >= 0xAC00 && c <= 0xD7A3) {   /* a Hangul syllable: NFD by arithmetic (Unicode 3.12) */
		uint32_t s = c - 0xAC00;
		out[0] = 0x1100 + s / 588, out[1] = 0x1161 + s % 588 / 28, out[2] = 0x11A7 + s % 28;
		return s % 28 ? 3 : 2;
	}
	size_t lo = 0, hi = COUNT(uni_fold);
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (c < uni_fold[mid][0])
			hi = mid;
		else if (c > uni_fold[mid][0])
			lo = mid + 1;
		else {
			int n = 0;
			while (n < 3 && uni_fold[mid][n + 1])
				out[n] = uni_fold[mid][n + 1], n++;
			return n;
		}
	}
	if (in_table(uni_mn, COUNT(uni_mn), c))
		return 0;
	out[0] = c;
	return 1;
}

/* str.lower()'s capital sigma at w[i] of w[0..n): final (U+03C2) after a cased letter
 * (case-ignorable ones skipped) and not before one, else U+03C3. */
static uint32_t sigma(const uint32_t *w, size_t n, size_t i)
{
	size_t j = i;
	while (j > 0 && in_table(uni_case_ignorable, COUNT(uni_case_ignorable), w[j - 1]))
		j--;
	if (j == 0 || !in_table(uni_cased, COUNT(uni_cased), w[j - 1]))
		return 0x3C3;
	for (j = i + 1; j < n && in_table(uni_case_ignorable, COUNT(uni_case_ignorable), w[j]); j++)
		;
	return j < n && in_table(uni_cased, COUNT(uni_cased), w[j]) ? 0x3C3 : 0x3C2;
}

static int32_t wp_find(const RtTokenizer *t, const unsigned char *b, size_t n)
{
	return idmap_find(&t->wmap, t, b, n, -1);
}

/* WordPiece on the word w[0..m), m > 0: appends its ids. */
static int wp_word(RtTokenizer *t, const uint32_t *w, size_t m, int32_t **ids, size_t *n, size_t *cap)
{
	if (reserve(ids, cap, *n + m))   /* a word has at most m pieces */
		return -1;
	if (m > WP_MAX_WORD) {
		(*ids)[(*n)++] = t->bert.unk;
		return 0;
	}
	/* the word in UTF-8 at wkey, code point i at pos[i]; a candidate, "##" first, after it */
	if (grow(&t->wkey, &t->wkey_cap, 2 + 8 * m, 1) || grow(&t->wpos, &t->wpos_cap, m + 1, sizeof *t->wpos))
		return -1;
	unsigned char *word = t->wkey, *cand = t->wkey + 4 * m;
	size_t *pos = t->wpos;
	pos[0] = 0;
	for (size_t i = 0; i < m; i++)
		pos[i + 1] = pos[i] + rt_utf8_encode(word + pos[i], w[i]);
	size_t n0 = *n;
	for (size_t start = 0; start < m;) {
		int32_t id = -1;
		size_t end = m;
		for (; end > start; end--) {
			size_t k = start ? 2 : 0, len = pos[end] - pos[start];
			cand[0] = cand[1] = '#';
			memcpy(cand + k, word + pos[start], len);
			if ((id = wp_find(t, cand, k + len)) >= 0)
				break;
		}
		if (id < 0) {   /* a piece with no token: the whole word is unknown */
			*n = n0;
			(*ids)[(*n)++] = t->bert.unk;
			return 0;
		}
		(*ids)[(*n)++] = id;
		start = end;
	}
	return 0;
}

/* A piece of text between white space, w[0..m): lower-cased, stripped of accents, cut at
 * punctuation, and each word's ids appended. */
static int wp_token(RtTokenizer *t, const uint32_t *w, size_t m, int32_t **ids, size_t *n, size_t *cap)
{
	if (grow(&t->wfold, &t->wfold_cap, 3 * m, sizeof *t->wfold))
		return -1;
	uint32_t *f = t->wfold;
	size_t k = 0;
	for (size_t i = 0; i < m; i++) {
		if (w[i] == 0x3A3)
			f[k++] = sigma(w, m, i);
		else
			k += (size_t)fold(w[i], f + k);
	}
	size_t word = 0;
	for (size_t i = 0; i < k; i++) {
		if (!is_punct(f[i]))
			continue;
		if ((i > word && wp_word(t, f + word, i - word, ids, n, cap)) || wp_word(t, f + i, 1, ids, n, cap))
			return -1;
		word = i + 1;
	}
	return k > word ? wp_word(t, f + word, k - word, ids, n, cap) : 0;
}

static int wordpiece_encode(RtTokenizer *t, const unsigned char *s, size_t len, int32_t **ids, size_t *n, size_t *cap)
{
	size_t n0 = *n, m = 0;
	for (size_t i = 0; i <= len;) {
		uint32_t c = ' ';
		if (i < len) {
			int l = rt_utf8_decode(s + i, len - i, &c);
			i += l ? (size_t)l : 1;
			if (!l || c == 0 || c == 0xFFFD || (c < 0x20 && c != '\t' && c != '\n' && c != '\r') ||
			    (c >= 0x7F && in_table(uni_control, COUNT(uni_control), c)))
				continue;   /* not UTF-8, or dropped: control characters, NUL, U+FFFD */
		} else {
			i++;
		}
		bool space = c == ' ' || c == '\t' || c == '\n' || c == '\r' ||
			     (c >= 0x80 && in_table(uni_bert_space, COUNT(uni_bert_space), c));
		bool cjk = !space && is_cjk(c);
		if (!space && !cjk) {
			if (grow(&t->wcp, &t->wcp_cap, m + 1, sizeof *t->wcp))
				goto oom;
			t->wcp[m++] = c;
			continue;
		}
		if (m && wp_token(t, t->wcp, m, ids, n, cap))
			goto oom;
		m = 0;
		if (cjk && wp_token(t, &c, 1, ids, n, cap))
			goto oom;
	}
	return 0;
oom:
	*n = n0;
	return -1;
}

/* ---------------------------------------------------------------- loading vocab.txt */

/* vocab.txt: one token a line, its id the line's number from 0; "\r\n" ends a line too. */
static int load_vocab(RtTokenizer *t, const char *path, const unsigned char *text, size_t len, char *err, size_t errlen)
{
	size_t ntok = 0, cap = 0, p = 0;
	if (len >= 3 && !memcmp(text, "\xEF\xBB\xBF", 3))
		p = 3;   /* a byte order mark, which some editors add */
	t->bytes = malloc(len ? len : 1);
	if (!t->bytes)
		goto oom;
	size_t o = 0;
	for (int line = 1; p < len; line++) {
		size_t e = p;
		while (e < len && text[e] != '\n')
			e++;
		size_t end = e > p && text[e - 1] == '\r' ? e - 1 : e;
		if (end == p) {
			rt_errf(err, errlen, "%s:%d: an empty line: every line of vocab.txt is a token, its id the line's "
				"number from 0", path, line);
			return -1;
		}
		for (size_t i = p; i < end;) {
			uint32_t c;
			int l = rt_utf8_decode(text + i, end - i, &c);
			if (!l) {
				rt_errf(err, errlen, "%s:%d: not valid UTF-8 (byte 0x%02x)", path, line, text[i]);
				return -1;
			}
			i += (size_t)l;
		}
		if (ntok >= RT_WORDPIECE_MAX_VOCAB) {
			rt_errf(err, errlen, "%s:%d: more than %s tokens: the ids must fit a token shard's uint16", path, line,
				mgl_commas(RT_WORDPIECE_MAX_VOCAB, (char[32]){0}));
			return -1;
		}
		if (grow(&t->off, &cap, ntok + 2, sizeof *t->off))
			goto oom;
		t->off[ntok] = o;
		memcpy(t->bytes + o, text + p, end - p);
		o += end - p;
		t->off[++ntok] = o;
		p = e + 1;
	}
	if (!ntok) {
		rt_errf(err, errlen, "%s: empty: expected one token a line", path);
		return -1;
	}
	t->vocab = (int)ntok;
	if (idmap_init(&t->wmap, ntok))
		goto oom;
	for (size_t id = 0; id < ntok; id++) {
		size_t n;
		const unsigned char *b = tok_bytes(t, (int32_t)id, &n);
		int32_t prev = idmap_find(&t->wmap, t, b, n, (int32_t)id);
		if (prev >= 0) {
			rt_errf(err, errlen, "%s:%zu: the token '%.*s' is given already, on line %ld", path, id + 1,
				(int)(n > 64 ? 64 : n), (const char *)b, (long)prev + 1);
			return -1;
		}
	}
	int32_t *special[] = {&t->bert.pad, &t->bert.unk, &t->bert.cls, &t->bert.sep, &t->bert.mask};
	for (size_t k = 0; k < COUNT(special); k++) {
		const char *name = bert_special_names[k];
		if ((*special[k] = wp_find(t, (const unsigned char *)name, strlen(name))) < 0) {
			rt_errf(err, errlen, "%s: no %s token: a BERT vocabulary needs [PAD], [UNK], [CLS], [SEP] and [MASK], "
				"each on a line of its own", path, name);
			return -1;
		}
	}
	t->bert.vocab = t->vocab;
	return 0;
oom:
	rt_errf(err, errlen, "%s: out of memory", path);
	return -1;
}

RtTokenizer *rt_tok_wordpiece(const char *path, char *err, size_t errlen)
{
	RtTokenizer *t = calloc(1, sizeof *t);
	if (!t) {
		rt_errf(err, errlen, "%s: out of memory", path);
		return NULL;
	}
	t->kind = TOK_WORDPIECE;
	t->eot = -1;
	size_t len;
	char *text = mgl_read_whole(path, RT_TOK_MAX_FILE_BYTES, "vocabulary files", &len, err, errlen);
	if (!text || load_vocab(t, path, (const unsigned char *)text, len, err, errlen)) {
		free(text);
		rt_tok_free(t);
		return NULL;
	}
	sha256_hex((const unsigned char *)text, len, t->digest);
	free(text);
	return t;
}
