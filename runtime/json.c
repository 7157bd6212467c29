/* runtime/json.c — what the runtime's two JSON readers share: UTF-8 decoding and the
 * characters of a JSON string.
 *
 * checkpoint.c (a safetensors header) and tokenizer.c (encoder.json) each parse only the
 * shapes their format has, but a string is the same for both (RFC 8259): the escapes
 * \" \\ \/ \b \f \n \r \t and \uXXXX, a UTF-16 surrogate pair written as two \u escapes
 * that must come together, no unescaped control characters, and well-formed UTF-8 for
 * everything else. The input is untrusted: every error has its place and its reason.
 */
#include "runtime.h"

#include <stdarg.h>
#include <stdio.h>

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

static int fail_at(RtJsonError *e, size_t at, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail_at(RtJsonError *e, size_t at, const char *fmt, ...)
{
	e->at = at;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(e->msg, sizeof e->msg, fmt, ap);
	va_end(ap);
	return -1;
}

/* The four hex digits at s[*pos]; -1 at the first that is not one. */
static int hex4(const unsigned char *s, size_t n, size_t *pos, uint32_t *v, RtJsonError *e)
{
	*v = 0;
	for (int i = 0; i < 4; i++, ++*pos) {
		int c = *pos < n ? s[*pos] : -1, d;
		if (c >= '0' && c <= '9')
			d = c - '0';
		else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
			d = (c | 0x20) - 'a' + 10;
		else
			return fail_at(e, *pos, "\\u must be followed by four hex digits");
		*v = *v << 4 | (uint32_t)d;
	}
	return 0;
}

int rt_json_char(const unsigned char *s, size_t n, size_t open, size_t *pos, uint32_t *cp, RtJsonError *e)
{
	size_t at = *pos;
	if (at >= n)
		return fail_at(e, open, "a string that is never closed");
	unsigned c = s[at];
	if (c == '"') {
		*pos = at + 1;
		return 0;
	}
	if (c < 0x20)
		return fail_at(e, at, "a control character (0x%02x) in a string: JSON wants it escaped", c);
	if (c != '\\') {
		int len = rt_utf8_decode(s + at, n - at, cp);
		if (!len)
			return fail_at(e, at, "a string is not valid UTF-8");
		*pos = at + (size_t)len;
		return 1;
	}
	*pos = at + 1;
	int esc = *pos < n ? s[(*pos)++] : -1;
	switch (esc) {
	case '"': *cp = '"'; break;
	case '\\': *cp = '\\'; break;
	case '/': *cp = '/'; break;
	case 'b': *cp = '\b'; break;
	case 'f': *cp = '\f'; break;
	case 'n': *cp = '\n'; break;
	case 'r': *cp = '\r'; break;
	case 't': *cp = '\t'; break;
	case 'u':
		if (hex4(s, n, pos, cp, e))
			return -1;
		if (*cp >= 0xDC00 && *cp <= 0xDFFF)
			return fail_at(e, at, "a lone low surrogate \\u%04X (no high one before it)", (unsigned)*cp);
		if (*cp >= 0xD800 && *cp <= 0xDBFF) {
			uint32_t lo;
			if (n - *pos < 2 || s[*pos] != '\\' || s[*pos + 1] != 'u')
				return fail_at(e, at, "a high surrogate \\u%04X without a low one after it", (unsigned)*cp);
			*pos += 2;
			if (hex4(s, n, pos, &lo, e))
				return -1;
			if (lo < 0xDC00 || lo > 0xDFFF)
				return fail_at(e, at, "a high surrogate \\u%04X without a low one after it", (unsigned)*cp);
			*cp = 0x10000 + ((*cp - 0xD800) << 10) + (lo - 0xDC00);
		}
		break;
	default:
		return fail_at(e, at, "an invalid escape in a string");
	}
	return 1;
}
