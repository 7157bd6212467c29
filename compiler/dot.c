/* compiler/dot.c — a plan as a Graphviz graph, for people to read.
 *
 * One node per step: computation as boxes, collectives as filled ellipses coloured by
 * kind. An edge per value from the step that makes it to each step that reads it, labelled
 * with its layout and this rank's shape; a legend under the drawing says what the layouts
 * and colours mean. Steps of one Transformer layer sit in a cluster. Parameters and the
 * optimizer are left out: they would drown the dataflow.
 *
 * The layers of a deep model are alike, and all 40 of them drawn make an image taller than
 * viewers open. So the caller may draw the first few: the others are folded into one node
 * per phase, which takes every edge that crosses the cut. Every node drawn then has an
 * edge, and the drawing still runs from the tokens to the loss. Inputs no drawn step reads
 * (d_loss in a forward-only drawing) are not drawn.
 */
#include "mgl.h"

#include <limits.h>
#include <string.h>

/* Nodes are numbered: steps 0..nsteps-1, then inputs (nsteps + value id); the folded
 * layers' node of a phase is FOLDED(phase). */
#define FOLDED(phase) (-1 - (int)(phase))
enum { NONE = INT_MIN };

typedef struct { int from, to, value; } Edge;

static const struct { MglOp op; const char *color; } collectives[] = {
	{MGL_OP_ALL_REDUCE, "#f4a6a6"},
	{MGL_OP_ALL_GATHER, "#a6c8f4"},
	{MGL_OP_REDUCE_SCATTER, "#a6f4b4"},
	{MGL_OP_SLICE, "#dddddd"},
};
enum { NCOLLECTIVES = sizeof collectives / sizeof collectives[0] };

static const char *const layout_legend[][2] = {
	{"R", "replicated: every rank holds the whole tensor"},
	{"S1", "split over the ranks along the last dimension (S2: the one before it)"},
	{"P", "partial sums: the tensor is the sum of the ranks' parts"},
	{"M", "partial maxima: the tensor is the maximum of the ranks' parts"},
};

static const char *color(MglOp op)
{
	for (int i = 0; i < NCOLLECTIVES; i++)
		if (collectives[i].op == op)
			return collectives[i].color;
	return NULL;
}

/* s inside a Graphviz "string" (html false) or an HTML-like label (html true): names may
 * come from a plan file, so quotes, backslashes and markup are escaped. */
static void put(FILE *f, const char *s, bool html)
{
	for (; *s; s++) {
		if (html && (*s == '<' || *s == '>' || *s == '&' || *s == '"'))
			fputs(*s == '<' ? "&lt;" : *s == '>' ? "&gt;" : *s == '&' ? "&amp;" : "&quot;", f);
		else if (!html && (*s == '"' || *s == '\\'))
			fprintf(f, "\\%c", *s);
		else
			fputc(*s, f);
	}
}

static void put_node(FILE *f, const MglPlan *p, int n)
{
	if (n < 0)
		fprintf(f, "folded_%s", mgl_phase_name[FOLDED(0) - n]);
	else if (n < p->nsteps)
		fprintf(f, "s%d", n);
	else
		fprintf(f, "v%d", n - p->nsteps);
}

/* Where step i is drawn: its own node, its phase's folded node (a layer from `layers`
 * on), or NONE (the optimizer; the backward pass unless asked for). */
static int node_of(const MglPlan *p, int i, int layers, bool backward)
{
	const MglStep *s = &p->steps[i];
	if (s->phase == MGL_OPT || (s->phase == MGL_BWD && !backward))
		return NONE;
	return layers > 0 && s->layer >= layers ? FOLDED(s->phase) : i;
}

/* Whether every layer from `from` on has the steps of layer from-1 in phase ph: the same
 * ops in the same order (compared by a hash of the sequence and its length). */
static bool alike(MglArena *a, const MglPlan *p, int from, MglPhase ph)
{
	uint64_t *hash = mgl_alloc(a, (size_t)p->nlayers * sizeof *hash);
	int *count = mgl_alloc(a, (size_t)p->nlayers * sizeof *count);
	for (int i = 0; i < p->nsteps; i++) {
		const MglStep *s = &p->steps[i];
		if (s->layer >= 0 && s->phase == ph) {
			hash[s->layer] = (hash[s->layer] ^ (uint64_t)(s->op + 1)) * 1099511628211u;   /* FNV-1a */
			count[s->layer]++;
		}
	}
	for (int l = from; l < p->nlayers; l++)
		if (hash[l] != hash[from - 1] || count[l] != count[from - 1])
			return false;
	return true;
}

/* Whether two edges would be drawn alike: the same ends, layout and shape. */
static bool same_edge(const MglPlan *p, const Edge *x, const Edge *y)
{
	const MglValue *a = &p->values[x->value], *b = &p->values[y->value];
	return x->from == y->from && x->to == y->to && a->layout.kind == b->layout.kind && a->layout.dim == b->layout.dim &&
	       a->rank == b->rank && !memcmp(a->shape, b->shape, (size_t)a->rank * sizeof a->shape[0]);
}

static void legend(FILE *f, const MglPlan *p)
{
	fprintf(f, "  labelloc=b; labeljust=l;\n  label=<<table border=\"0\" cellborder=\"1\" cellspacing=\"0\" "
		   "cellpadding=\"4\">\n    <tr><td colspan=\"2\"><b>");
	put(f, p->model, true);
	if (p->preset) {
		fputc(' ', f);
		put(f, p->preset, true);
	}
	fprintf(f, ": tp %d%s</b></td></tr>\n", p->tp, p->sp ? ", sp" : "");
	fprintf(f, "    <tr><td colspan=\"2\">an edge is a value: its layout and this rank's shape, "
		   "e.g. S1 [8,64,32]</td></tr>\n");
	for (size_t i = 0; i < sizeof layout_legend / sizeof layout_legend[0]; i++)
		fprintf(f, "    <tr><td>%s</td><td align=\"left\">%s</td></tr>\n", layout_legend[i][0], layout_legend[i][1]);
	for (int i = 0; i < NCOLLECTIVES; i++)
		fprintf(f, "    <tr><td bgcolor=\"%s\">%s</td><td align=\"left\">a collective over the ranks</td></tr>\n",
			collectives[i].color, mgl_ops[collectives[i].op].name);
	fprintf(f, "  </table>>;\n");
}

static void put_step(FILE *f, const MglPlan *p, int i)
{
	const MglStep *s = &p->steps[i];
	const char *c = color(s->op);
	fprintf(f, "    s%d [label=\"", i);
	put(f, mgl_ops[s->op].name, false);
	if (c) {
		fprintf(f, "\", shape=ellipse, style=filled, fillcolor=\"%s\"];\n", c);
		return;
	}
	fputs("\\n", f);
	put(f, s->nout ? p->values[s->out[0]].name : "", false);
	fprintf(f, "\"%s];\n", s->phase == MGL_BWD ? ", color=\"#888888\"" : "");
}

void mgl_dot(FILE *f, const MglPlan *p, int layers, bool backward)
{
	MglArena a = {0};
	if (layers >= p->nlayers)
		layers = 0;
	int *maker = mgl_alloc(&a, (size_t)p->nvalues * sizeof *maker);
	for (int v = 0; v < p->nvalues; v++)
		maker[v] = -1;
	for (int i = 0; i < p->nsteps; i++)
		for (int k = 0; k < p->steps[i].nout; k++)
			if (maker[p->steps[i].out[k]] < 0)
				maker[p->steps[i].out[k]] = i;

	/* the edges first: they say which inputs and folded nodes are drawn */
	int nedges = 0, cap = 0;
	for (int i = 0; i < p->nsteps; i++)
		cap += p->steps[i].nin;
	Edge *edges = mgl_alloc(&a, (size_t)(cap + 1) * sizeof *edges);
	uint8_t *into_folded = mgl_alloc(&a, (size_t)p->nvalues);   /* bit ph: an edge to FOLDED(ph) drawn */
	bool *drawn_input = mgl_alloc(&a, (size_t)p->nvalues), drawn_folded[2] = {false, false};
	for (int i = 0; i < p->nsteps; i++) {
		int to = node_of(p, i, layers, backward), first = nedges;
		for (int k = 0; to != NONE && k < p->steps[i].nin; k++) {
			int v = p->steps[i].in[k], m = maker[v];
			MglRole role = p->values[v].role;
			int from = m >= 0 ? node_of(p, m, layers, backward) : role == MGL_V_INPUT ? p->nsteps + v : NONE;
			if (role == MGL_V_PARAM || role == MGL_V_STATE || from == NONE ||
			    (from < 0 && to < 0))
				continue;   /* left out, not drawn, or inside the folded layers */
			if (to < 0) {
				unsigned bit = 1u << p->steps[i].phase;
				if (into_folded[v] & bit)
					continue;   /* one edge per value into a folded node */
				into_folded[v] |= (uint8_t)bit;
			}
			Edge e = {from, to, v};
			bool seen = false;   /* the layer norm's weight and bias gradients: one edge */
			for (int j = first; j < nedges && !seen; j++)
				seen = same_edge(p, &edges[j], &e);
			if (seen)
				continue;
			edges[nedges++] = e;
			for (int n = 0; n < 2; n++) {
				int end = n ? to : from;
				if (end < 0)
					drawn_folded[FOLDED(0) - end] = true;
				else if (end >= p->nsteps)
					drawn_input[end - p->nsteps] = true;
			}
		}
	}

	fprintf(f, "digraph plan {\n  rankdir=TB;\n  node [shape=box, fontname=\"Helvetica\", fontsize=10];\n");
	fprintf(f, "  edge [fontname=\"Helvetica\", fontsize=8];\n  fontname=\"Helvetica\"; fontsize=10;\n");
	legend(f, p);
	int shown = layers > 0 ? layers : p->nlayers;
	for (int l = -1; l < shown; l++) {
		if (l >= 0)
			fprintf(f, "  subgraph cluster_%d {\n    label=\"layer %d\"; labelloc=t; style=rounded; "
				   "color=\"#999999\";\n", l, l);
		for (int i = 0; i < p->nsteps; i++)
			if (p->steps[i].layer == l && node_of(p, i, layers, backward) == i)
				put_step(f, p, i);
		if (l >= 0)
			fprintf(f, "  }\n");
	}
	for (int ph = MGL_FWD; ph <= MGL_BWD; ph++) {
		if (!drawn_folded[ph])
			continue;
		int n = p->nlayers - layers;
		char which[48];
		if (n > 1)
			snprintf(which, sizeof which, "layers %d-%d", layers, p->nlayers - 1);
		else
			snprintf(which, sizeof which, "layer %d", layers);
		fprintf(f, "  folded_%s [label=\"%s%s\\n%d more %s layer %d\", shape=box3d, style=dashed, fontsize=12];\n",
			mgl_phase_name[ph], which, ph == MGL_BWD ? " (backward)" : "", n,
			alike(&a, p, layers, (MglPhase)ph) ? "like" : "(not drawn), unlike", layers - 1);
	}
	for (int v = 0; v < p->nvalues; v++)
		if (drawn_input[v]) {
			fprintf(f, "  v%d [label=\"", v);
			put(f, p->values[v].name, false);
			fprintf(f, "\", shape=plaintext];\n");
		}
	char buf[8];
	for (int e = 0; e < nedges; e++) {
		const MglValue *x = &p->values[edges[e].value];
		fputs("  ", f);
		put_node(f, p, edges[e].from);
		fputs(" -> ", f);
		put_node(f, p, edges[e].to);
		fprintf(f, " [label=\"%s [", mgl_layout_str(x->layout, buf));
		for (int d = 0; d < x->rank; d++)
			fprintf(f, "%s%lld", d ? "," : "", (long long)x->shape[d]);
		fprintf(f, "]\"];\n");
	}
	fprintf(f, "}\n");
	mgl_arena_free(&a);
}
