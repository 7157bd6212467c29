/* plan/plan.c — the plan's shared pieces: the arena, the op table, names of enums, and
 * the plan's text form (writer and reader; the format is docs/plan.md).
 *
 * The reader treats its input as hostile: every count, shape, offset and id is checked
 * before use, and a plan that is truncated, from another version, or inconsistent is
 * refused with the line that is wrong.
 */
#include "plan.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>

const MglOpInfo mgl_ops[MGL_OP_COUNT] = {
#define OP(id, name, pmin, pmax, kw, flags, sig, layouts) {#name, pmin, pmax, kw, flags, sig, layouts},
#include "../compiler/ops.def"
#undef OP
};

const char *const mgl_dtype_name[3] = {"f32", "i32", "bf16"};
const int mgl_dtype_size[3] = {4, 4, 2};
const char *const mgl_role_name[MGL_V_ROLE_COUNT] = {"input", "param", "act", "grad", "state"};
const char *const mgl_phase_name[3] = {"fwd", "bwd", "opt"};

const char *mgl_layout_str(MglLayout l, char buf[8])
{
	switch (l.kind) {
	case MGL_L_R: return "R";
	case MGL_L_P: return "P";
	case MGL_L_M: return "M";
	default: snprintf(buf, 8, "S%d", l.dim); return buf;
	}
}

/* ---------------------------------------------------------------- arena */

struct MglChunk { MglChunk *next; size_t size; _Alignas(16) unsigned char data[]; };

void *mgl_alloc(MglArena *a, size_t n)
{
	n = (n + 15) & ~(size_t)15;
	if (!a->head || a->cap - a->used < n) {
		size_t size = n > (64u << 10) ? n : (64u << 10);
		MglChunk *ch = malloc(sizeof *ch + size);
		if (!ch) {
			fprintf(stderr, "mgl: out of memory (asked for %zu bytes)\n", n);
			exit(1);
		}
		ch->next = a->head;
		ch->size = size;
		a->head = ch;
		a->used = 0;
		a->cap = size;
	}
	void *p = a->head->data + a->used;
	a->used += n;
	memset(p, 0, n);
	return p;
}

char *mgl_strndup(MglArena *a, const char *s, size_t n)
{
	char *d = mgl_alloc(a, n + 1);
	memcpy(d, s, n);
	return d;
}

char *mgl_fmt(MglArena *a, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	char *s = mgl_alloc(a, (size_t)n + 1);
	va_start(ap, fmt);
	vsnprintf(s, (size_t)n + 1, fmt, ap);
	va_end(ap);
	return s;
}

void mgl_arena_free(MglArena *a)
{
	for (MglChunk *ch = a->head, *next; ch; ch = next) {
		next = ch->next;
		free(ch);
	}
	a->head = NULL;
	a->used = a->cap = 0;
}


/* ---------------------------------------------------------------- a string -> int map */

static uint32_t hash(const char *s, int len)
{
	uint32_t h = 2166136261u;
	for (int i = 0; i < len; i++)
		h = (h ^ (unsigned char)s[i]) * 16777619u;
	return h;
}

static int map_slot(const MglMap *m, const char *k, int len)
{
	uint32_t i = hash(k, len) & (uint32_t)(m->cap - 1);
	while (m->keys[i] && (m->lens[i] != len || memcmp(m->keys[i], k, (size_t)len)))
		i = (i + 1) & (uint32_t)(m->cap - 1);
	return (int)i;
}

int mgl_map_get(const MglMap *m, const char *k, int len)
{
	if (!m->cap)
		return -1;
	int i = map_slot(m, k, len);
	return m->keys[i] ? m->vals[i] : -1;
}

void mgl_map_put(MglArena *a, MglMap *m, const char *k, int len, int v)
{
	if (2 * (m->n + 1) > m->cap) {
		MglMap old = *m;
		m->cap = old.cap ? 2 * old.cap : 16;
		m->keys = mgl_alloc(a, (size_t)m->cap * sizeof *m->keys);
		m->lens = mgl_alloc(a, (size_t)m->cap * sizeof *m->lens);
		m->vals = mgl_alloc(a, (size_t)m->cap * sizeof *m->vals);
		m->n = 0;
		for (int i = 0; i < old.cap; i++)
			if (old.keys[i])
				mgl_map_put(a, m, old.keys[i], old.lens[i], old.vals[i]);
	}
	int i = map_slot(m, k, len);
	if (!m->keys[i])
		m->n++;
	m->keys[i] = k;
	m->lens[i] = len;
	m->vals[i] = v;
}

