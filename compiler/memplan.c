/* compiler/memplan.c — the memory plan: where every value lives.
 *
 * Parameters, their gradients and the AdamW moments are persistent: each role has its own
 * region, values laid end to end. Activations, activation gradients and the step's inputs
 * share one arena: a value occupies [offset, offset + bytes) from the step that makes it
 * (the first step for inputs) to the last step that reads it, and offsets are chosen
 * first-fit as the steps run in order, so the arena's size is the peak of what is alive
 * at once — the activations the backward pass needs are simply alive across it. A value
 * that no step reads (the loss) is the plan's output and lives to the end. The steps'
 * order is the plan's: forward, backward, optimizer, as the passes emitted them; this pass
 * never reorders them.
 *
 * A fused group (fuse.c: a GEMM with its epilogue, a chain of elementwise steps) runs as
 * one kernel, which reads all of the group's inputs while it writes the group's outputs.
 * So the inputs of any step of a group live to the group's last step: no output of the
 * group may take their bytes, not even at the same offset (a broadcast input, read at
 * i % n, would be overwritten before other threads read it). Without this the kernels
 * raced with themselves once tensors spanned many thread blocks (issue 8).
 *
 * Under ZeRO-1 a parameter's and its gradient's buffers hold dp equal pieces (plan.h:
 * mgl_zero_piece), the last padded past the tensor's end.
 *
 * A span's members (plan.h: MglSpan; hfuse.c makes them) are laid out one after another in
 * the span's order where the first of them comes, with no padding between them (hfuse.c
 * takes only members of a multiple of 32 bytes, so that each, and its bf16 copy on the
 * cuda backend, stays 16-byte aligned), and the span takes their bytes. Activations too
 * (a layout span, of no value of its own): the members' bytes are taken together when the
 * first of them is made and given back when the last of them dies.
 */
#include "mgl.h"

#include <stdlib.h>
#include <string.h>

enum { ALIGN = 256 };

static int64_t aligned_bytes(const MglValue *v) { return (mgl_value_bytes(v) + ALIGN - 1) / ALIGN * ALIGN; }

typedef struct { int64_t off, end; int v; } Block;   /* v: a value, or n + i for p->spans[i] */

/* block v out of the live ones (none where -1 or not among them) */
static void drop(Block *live, int *nlive, int v)
{
	for (int i = 0; v >= 0 && i < *nlive; i++)
		if (live[i].v == v) {
			memmove(live + i, live + i + 1, (size_t)(*nlive - i - 1) * sizeof *live);
			(*nlive)--;
			return;
		}
}

void mgl_memplan(MglPlan *p)
{
	MglArena a = {0};
	int n = p->nvalues;
	int *first = mgl_alloc(&a, (size_t)n * sizeof *first), *last = mgl_alloc(&a, (size_t)n * sizeof *last);
	mgl_plan_lifetimes(p, first, last);
	memset(p->persistent_bytes, 0, sizeof p->persistent_bytes);
	int *span_of = mgl_alloc(&a, (size_t)n * sizeof *span_of);   /* a member's span in p->spans, or -1 */
	for (int v = 0; v < n; v++)
		span_of[v] = -1;
	bool *placed = mgl_alloc(&a, (size_t)n * sizeof *placed);
	for (int i = 0; i < p->nspans; i++) {
		for (int k = 0; k < p->spans[i].n; k++)
			span_of[p->spans[i].member[k]] = i;
		if (p->spans[i].value >= 0)
			placed[p->spans[i].value] = true;   /* where its first member goes */
	}
	for (int v = 0; v < n; v++) {
		MglValue *x = &p->values[v];
		x->bytes = aligned_bytes(x);
		if (p->zero && (x->role == MGL_V_PARAM || x->role == MGL_V_GRAD)) {
			int64_t whole = mgl_zero_chunk(mgl_numel(x), p->dp) * p->dp * mgl_dtype_size[x->dtype];
			x->bytes = (whole + ALIGN - 1) / ALIGN * ALIGN;
		}
	}
	for (int v = 0; v < n; v++) {
		MglValue *x = &p->values[v];
		if (placed[v] || x->role == MGL_V_ACT || x->role == MGL_V_INPUT)
			continue;
		const MglSpan *sp = span_of[v] >= 0 ? &p->spans[span_of[v]] : NULL;
		for (int k = 0; k < (sp ? sp->n : 1); k++) {
			MglValue *m = &p->values[sp ? sp->member[k] : v];
			if (sp)
				m->bytes = mgl_value_bytes(m);
			m->offset = p->persistent_bytes[m->role];
			p->persistent_bytes[m->role] += m->bytes;
			placed[sp ? sp->member[k] : v] = true;
		}
		if (sp && sp->value < 0) {
			int64_t *end = &p->persistent_bytes[x->role];
			*end = (*end + ALIGN - 1) / ALIGN * ALIGN;
		} else if (sp) {
			MglValue *w = &p->values[sp->value];
			int64_t *end = &p->persistent_bytes[w->role];
			w->offset = p->values[sp->member[0]].offset;
			w->bytes = *end - w->offset;
			*end = (*end + ALIGN - 1) / ALIGN * ALIGN;
		}
	}

	/* steps' outputs in order of making; freed after their last reader */
	int *born = mgl_alloc(&a, (size_t)(n + 1) * sizeof *born), nborn = 0;
	int *dies_at = mgl_alloc(&a, (size_t)(p->nsteps + 1) * sizeof *dies_at);   /* head of a list */
	int *next_dead = mgl_alloc(&a, (size_t)n * sizeof *next_dead);
	for (int s = 0; s <= p->nsteps; s++)
		dies_at[s] = -1;
	for (int v = 0; v < n; v++) {
		const MglValue *x = &p->values[v];
		if ((x->role != MGL_V_ACT && x->role != MGL_V_INPUT) || first[v] < 0)
			continue;
		next_dead[v] = dies_at[last[v]];
		dies_at[last[v]] = v;
	}
	/* activation spans: their bytes from the first member's making to the last's death */
	int64_t *span_bytes = mgl_alloc(&a, (size_t)(p->nspans + 1) * sizeof *span_bytes);
	int *span_last = mgl_alloc(&a, (size_t)(p->nspans + 1) * sizeof *span_last);
	for (int i = 0; i < p->nspans; i++) {
		span_bytes[i] = 0, span_last[i] = -1;
		for (int k = 0; k < p->spans[i].n; k++) {
			int m = p->spans[i].member[k];
			span_bytes[i] += mgl_value_bytes(&p->values[m]);
			span_last[i] = last[m] > span_last[i] ? last[m] : span_last[i];
		}
		span_bytes[i] = (span_bytes[i] + ALIGN - 1) / ALIGN * ALIGN;
	}
	Block *live = mgl_alloc(&a, (size_t)(n + p->nspans + 1) * sizeof *live);
	int nlive = 0;
	int64_t peak = 0;
	for (int s = 0; s < p->nsteps; s++) {
		nborn = 0;
		if (s == 0)
			for (int v = 0; v < n; v++)
				if (p->values[v].role == MGL_V_INPUT && first[v] == 0)
					born[nborn++] = v;
		for (int k = 0; k < p->steps[s].nout; k++) {
			int v = p->steps[s].out[k];
			if (p->values[v].role == MGL_V_ACT && first[v] == s)
				born[nborn++] = v;
		}
		for (int b = 0; b < nborn; b++) {   /* first fit among the live blocks, sorted by offset */
			MglValue *x = &p->values[born[b]];
			const MglSpan *sp = span_of[born[b]] >= 0 ? &p->spans[span_of[born[b]]] : NULL;
			if (placed[born[b]])   /* a span's member, placed with the first of them */
				continue;
			int64_t at = 0, bytes = sp ? span_bytes[sp - p->spans] : x->bytes;
			int i = 0;
			for (; i < nlive; i++) {
				if (live[i].off - at >= bytes)
					break;
				at = live[i].end;
			}
			memmove(live + i + 1, live + i, (size_t)(nlive - i) * sizeof *live);
			live[i] = (Block){at, at + bytes, sp ? n + (int)(sp - p->spans) : born[b]};
			nlive++;
			for (int k = 0; k < (sp ? sp->n : 1); k++) {
				MglValue *m = &p->values[sp ? sp->member[k] : born[b]];
				if (sp)
					m->bytes = mgl_value_bytes(m);
				m->offset = at;
				at += m->bytes;
				placed[sp ? sp->member[k] : born[b]] = sp != NULL;
			}
			if (live[i].end > peak)
				peak = live[i].end;
		}
		for (int v = dies_at[s]; v >= 0; v = next_dead[v])
			drop(live, &nlive, span_of[v] >= 0 ? -1 : v);
		for (int i = 0; i < p->nspans; i++)
			if (span_last[i] == s)
				drop(live, &nlive, n + i);
	}
	p->arena_bytes = peak;
	if (getenv("MGL_NO_REUSE")) {   /* debugging: every value its own bytes */
		int64_t at = 0;
		for (int v = 0; v < n; v++)
			if (p->values[v].role == MGL_V_ACT || p->values[v].role == MGL_V_INPUT)
				p->values[v].offset = at, at += (p->values[v].bytes + ALIGN - 1) / ALIGN * ALIGN;
		p->arena_bytes = at;
	}
	mgl_arena_free(&a);
	char why[300];   /* the rule every reader of a plan holds it to (plan.c) */
	if (mgl_plan_check_memory(p, why, sizeof why)) {
		fprintf(stderr, "mgl: internal error in the memory plan: %s\n", why);
		abort();
	}
}
