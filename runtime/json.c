/* runtime/json.c — the one JSON reader: for safetensors headers (checkpoint.c), GPT-2's
 * encoder.json (tokenizer.c) and the lines of `mgl train --log` (cli/plot.c).
 *
 * Each of those knows the shape of its own file and walks it with these calls (peek,
 * expect a byte, "another element or the closing bracket", a string, a number), so there
 * is no tree of values to build or to bound. The grammar is RFC 8259's: white space is
 * space, tab, CR and LF; a string has the escapes \" \\ \/ \b \f \n \r \t and \uXXXX, a
 * UTF-16 surrogate pair written as two \u escapes that must come together, no unescaped
 * control characters, and well-formed UTF-8 for everything else; a number is
 * -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?. The input is untrusted: every error has
 * its place (an offset into the text, which each caller turns into its own "byte N" or
 * "line:col") and its reason, and a text that ends early says what its reader calls that.
 */
#include "runtime.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int rt_utf8_decode(const unsigned char *s, size_t n, uint32_t *cp)
{
	unsigned b = s[0];
	if (b < 0x80) {
		*cp = b;
		return 1;
	}
	int len;
	unsigned lo = 0x80, hi = 0xBF;   /* the range of the second byte */
	uint32_t c;
	if (b >= 0xC2 && b <= 0xDF)
		len = 2, c = b & 0x1F;
	else if (b >= 0xE0 && b <= 0xEF)
		len = 3, c = b & 0x0F, lo = b == 0xE0 ? 0xA0 : 0x80, hi = b == 0xED ? 0x9F : 0xBF;
	else if (b >= 0xF0 && b <= 0xF4)
		len = 4, c = b & 0x07, lo = b == 0xF0 ? 0x90 : 0x80, hi = b == 0xF4 ? 0x8F : 0xBF;
	else
		return 0;
	if (n < (size_t)len || s[1] < lo || s[1] > hi)
		return 0;
	c = c << 6 | (s[1] & 0x3F);
	for (int i = 2; i < len; i++) {
		if ((s[i] & 0xC0) != 0x80)
			return 0;
		c = c << 6 | (s[i] & 0x3F);
	}
	*cp = c;
	return len;
}

size_t rt_utf8_encode(unsigned char *o, uint32_t c)
{
	if (c < 0x80)
		return o[0] = (unsigned char)c, 1;
	if (c < 0x800)
		return o[0] = (unsigned char)(0xC0 | c >> 6), o[1] = (unsigned char)(0x80 | (c & 0x3F)), 2;
	if (c < 0x10000)
		return o[0] = (unsigned char)(0xE0 | c >> 12), o[1] = (unsigned char)(0x80 | (c >> 6 & 0x3F)),
		       o[2] = (unsigned char)(0x80 | (c & 0x3F)), 3;
	return o[0] = (unsigned char)(0xF0 | c >> 18), o[1] = (unsigned char)(0x80 | (c >> 12 & 0x3F)),
	       o[2] = (unsigned char)(0x80 | (c >> 6 & 0x3F)), o[3] = (unsigned char)(0x80 | (c & 0x3F)), 4;
}

int rt_json_fail(RtJson *j, size_t at, const char *fmt, ...)
{
	j->e.at = at;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(j->e.msg, sizeof j->e.msg, fmt, ap);
	va_end(ap);
	return -1;
}

/* -1: what was expected is not at j->pos; the reader's words for a text that ends there. */
static int missing(RtJson *j, const char *what)
{
	return rt_json_fail(j, j->pos, "%s", j->pos < j->n ? what : j->ends ? j->ends : "the text ends early");
}

int rt_json_peek(RtJson *j)
{
	while (j->pos < j->n && (j->s[j->pos] == ' ' || j->s[j->pos] == '\t' || j->s[j->pos] == '\n' || j->s[j->pos] == '\r'))
		j->pos++;
	return j->pos < j->n ? j->s[j->pos] : -1;
}

int rt_json_expect(RtJson *j, int c, const char *what)
{
	if (rt_json_peek(j) != c)
		return missing(j, what);
	j->pos++;
	return 0;
}

int rt_json_more(RtJson *j, int close, const char *what)
{
	int c = rt_json_peek(j);
	if (c == ',') {
		j->pos++;
		return rt_json_peek(j) == close ? rt_json_fail(j, j->pos, "a ',' before the closing bracket") : 1;
	}
	if (c != close)
		return missing(j, what);
	j->pos++;
	return 0;
}

/* ---------------------------------------------------------------- strings */

/* The four hex digits at j->pos; -1 at the first that is not one. */
static int hex4(RtJson *j, uint32_t *v)
{
	*v = 0;
	for (int i = 0; i < 4; i++, j->pos++) {
		int c = j->pos < j->n ? j->s[j->pos] : -1, d;
		if (c >= '0' && c <= '9')
			d = c - '0';
		else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
			d = (c | 0x20) - 'a' + 10;
		else
			return rt_json_fail(j, j->pos, "\\u must be followed by four hex digits");
		*v = *v << 4 | (uint32_t)d;
	}
	return 0;
}

/* One character of the string whose opening quote is at open, read at j->pos: 1 with its
 * code point (never a surrogate), 0 at the closing quote, -1 if the string is not valid. */
static int string_char(RtJson *j, size_t open, uint32_t *cp)
{
	size_t at = j->pos;
	if (at >= j->n)
		return rt_json_fail(j, open, "a string that is never closed");
	unsigned c = j->s[at];
	if (c == '"') {
		j->pos = at + 1;
		return 0;
	}
	if (c < 0x20)
		return rt_json_fail(j, at, "a control character (0x%02x) in a string: JSON wants it escaped", c);
	if (c != '\\') {
		int len = rt_utf8_decode(j->s + at, j->n - at, cp);
		if (!len)
			return rt_json_fail(j, at, "a string is not valid UTF-8");
		j->pos = at + (size_t)len;
		return 1;
	}
	/* an escape: the table of the one-letter ones, then \uXXXX */
	static const char one[] = "\"\\/bfnrt", is[] = "\"\\/\b\f\n\r\t";
	int esc = ++j->pos < j->n ? j->s[j->pos++] : -1;
	const char *k = esc > 0 ? strchr(one, esc) : NULL;
	if (k) {
		*cp = (unsigned char)is[k - one];
		return 1;
	}
	if (esc != 'u')
		return rt_json_fail(j, at, "an invalid escape in a string");
	if (hex4(j, cp))
		return -1;
	if (*cp >= 0xDC00 && *cp <= 0xDFFF)
		return rt_json_fail(j, at, "a lone low surrogate \\u%04X (no high one before it)", (unsigned)*cp);
	if (*cp >= 0xD800 && *cp <= 0xDBFF) {
		uint32_t lo;
		if (j->n - j->pos < 2 || j->s[j->pos] != '\\' || j->s[j->pos + 1] != 'u')
			return rt_json_fail(j, at, "a high surrogate \\u%04X without a low one after it", (unsigned)*cp);
		j->pos += 2;
		if (hex4(j, &lo))
			return -1;
		if (lo < 0xDC00 || lo > 0xDFFF)
			return rt_json_fail(j, at, "a high surrogate \\u%04X without a low one after it", (unsigned)*cp);
		*cp = 0x10000 + ((*cp - 0xD800) << 10) + (lo - 0xDC00);
	}
	return 1;
}

int rt_json_string(RtJson *j, const char *what, RtJsonPut *put, void *ctx)
{
	if (rt_json_peek(j) != '"')
		return missing(j, what);
	size_t open = j->pos++;
	for (;;) {
		size_t at = j->pos;
		uint32_t cp;
		int k = string_char(j, open, &cp);
		if (k <= 0)
			return k;
		if (put && put(j, ctx, cp, at))
			return -1;
	}
}

/* ---------------------------------------------------------------- numbers */

static bool digit_at(const RtJson *j, size_t i) { return i < j->n && j->s[i] >= '0' && j->s[i] <= '9'; }

/* The number at j->pos (after white space), in RFC 8259's form: its end in *end, and
 * whether it is a whole number of no sign, fraction or exponent in *plain. */
static int scan_number(RtJson *j, const char *what, size_t *end, bool *plain)
{
	rt_json_peek(j);
	size_t p = j->pos, q = p + (p < j->n && j->s[p] == '-');
	if (!digit_at(j, q))
		return p < j->n ? rt_json_fail(j, p, "expected %s", what) : missing(j, what);
	if (j->s[q] == '0' && digit_at(j, q + 1))
		return rt_json_fail(j, p, "a number with a leading zero, which JSON does not allow");
	while (digit_at(j, q))
		q++;
	*plain = j->s[p] != '-';
	if (q < j->n && j->s[q] == '.') {
		*plain = false;
		if (!digit_at(j, ++q))
			return rt_json_fail(j, q, "a number ends early");
		while (digit_at(j, q))
			q++;
	}
	if (q < j->n && (j->s[q] == 'e' || j->s[q] == 'E')) {
		*plain = false;
		q++;
		q += q < j->n && (j->s[q] == '+' || j->s[q] == '-');
		if (!digit_at(j, q))
			return rt_json_fail(j, q, "a number ends early");
		while (digit_at(j, q))
			q++;
	}
	*end = q;
	return 0;
}

int rt_json_uint(RtJson *j, const char *what, int64_t max, int64_t *v)
{
	size_t end;
	bool plain;
	if (scan_number(j, what, &end, &plain))
		return -1;
	if (!plain)
		return rt_json_fail(j, j->pos, "%s must be a non-negative integer", what);
	int64_t x = 0;
	for (size_t i = j->pos; i < end; i++)
		if (__builtin_mul_overflow(x, 10, &x) || __builtin_add_overflow(x, j->s[i] - '0', &x) || x > max)
			return rt_json_fail(j, j->pos, "%s is more than %s", what, mgl_commas(max, (char[32]){0}));
	j->pos = end;
	*v = x;
	return 0;
}

int rt_json_number(RtJson *j, const char *what, double *v)
{
	size_t end;
	bool plain;
	if (scan_number(j, what, &end, &plain))
		return -1;
	char num[64];
	if (end - j->pos >= sizeof num)
		return rt_json_fail(j, j->pos, "a number of more than %zu characters", sizeof num - 1);
	memcpy(num, j->s + j->pos, end - j->pos);
	num[end - j->pos] = 0;
	*v = strtod(num, NULL);
	j->pos = end;
	return 0;
}

static int skip(RtJson *j, int left, int max)
{
	int c = rt_json_peek(j);
	if (c == '"')
		return rt_json_string(j, "expected a value", NULL, NULL);
	if (c == '{' || c == '[') {
		if (!left)
			return rt_json_fail(j, j->pos, "values nested more than %d deep", max);
		j->pos++;
		int close = c == '{' ? '}' : ']', more = 1;
		if (rt_json_peek(j) == close)
			j->pos++, more = 0;
		while (more == 1) {
			if (c == '{' && (rt_json_string(j, "expected a key in double quotes", NULL, NULL) ||
					 rt_json_expect(j, ':', "expected ':' after a key")))
				return -1;
			if (skip(j, left - 1, max))
				return -1;
			more = rt_json_more(j, close, c == '{' ? "expected ',' or '}'" : "expected ',' or ']'");
		}
		return more;
	}
	static const char *const words[] = {"true", "false", "null"};
	for (int w = 0; w < 3; w++) {
		size_t k = strlen(words[w]);
		if (j->n - j->pos >= k && !memcmp(j->s + j->pos, words[w], k)) {
			j->pos += k;
			return 0;
		}
	}
	double v;
	return rt_json_number(j, "a value", &v);
}

int rt_json_skip(RtJson *j, int max) { return skip(j, max, max); }
