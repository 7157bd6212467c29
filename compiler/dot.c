/* compiler/dot.c — a plan as a Graphviz graph, for people to read.
 *
 * One node per step: computation as boxes, collectives as filled ellipses coloured by
 * kind (all-reduce red, all-gather blue, reduce-scatter green, slice grey). An edge per
 * value from the step that makes it to each step that reads it, labelled with its layout
 * and this rank's shape. Steps of one Transformer layer sit in a cluster. Parameters and
 * the optimizer are left out: they would drown the dataflow.
 */
#include "mgl.h"

static const char *color(MglOp op)
{
	switch (op) {
	case MGL_OP_ALL_REDUCE: return "#f4a6a6";
	case MGL_OP_ALL_GATHER: return "#a6c8f4";
	case MGL_OP_REDUCE_SCATTER: return "#a6f4b4";
	case MGL_OP_SLICE: return "#dddddd";
	default: return NULL;
	}
}

static bool shown(const MglStep *s, int layers, bool backward)
{
	if (s->phase == MGL_OPT || (s->phase == MGL_BWD && !backward))
		return false;
	return layers <= 0 || s->layer < layers;
}

void mgl_dot(FILE *f, const MglPlan *p, int layers, bool backward)
{
	MglArena a = {0};
	int *maker = mgl_alloc(&a, (size_t)p->nvalues * sizeof *maker);
	for (int v = 0; v < p->nvalues; v++)
		maker[v] = -1;
	for (int i = 0; i < p->nsteps; i++)
		for (int k = 0; k < p->steps[i].nout; k++)
			if (maker[p->steps[i].out[k]] < 0)
				maker[p->steps[i].out[k]] = i;
	fprintf(f, "digraph plan {\n  rankdir=TB;\n  node [shape=box, fontname=\"Helvetica\", fontsize=10];\n");
	fprintf(f, "  edge [fontname=\"Helvetica\", fontsize=8];\n");
	fprintf(f, "  label=\"%s%s%s: tp %d%s\";\n", p->model, p->preset ? " " : "", p->preset ? p->preset : "", p->tp,
		p->sp ? ", sp" : "");
	for (int l = -1; l < p->nlayers; l++) {
		if (layers > 0 && l >= layers)
			break;
		if (l >= 0)
			fprintf(f, "  subgraph cluster_%d {\n    label=\"layer %d\"; style=rounded; color=\"#999999\";\n", l, l);
		for (int i = 0; i < p->nsteps; i++) {
			const MglStep *s = &p->steps[i];
			if (s->layer != l || !shown(s, layers, backward))
				continue;
			const char *c = color(s->op);
			const char *name = s->nout ? p->values[s->out[0]].name : "";
			if (c)
				fprintf(f, "    s%d [label=\"%s\", shape=ellipse, style=filled, fillcolor=\"%s\"];\n", i,
					mgl_ops[s->op].name, c);
			else
				fprintf(f, "    s%d [label=\"%s\\n%s\"%s];\n", i, mgl_ops[s->op].name, name,
					s->phase == MGL_BWD ? ", color=\"#888888\"" : "");
		}
		if (l >= 0)
			fprintf(f, "  }\n");
	}
	/* inputs, then the edges */
	for (int v = 0; v < p->nvalues; v++)
		if (p->values[v].role == MGL_V_INPUT)
			fprintf(f, "  v%d [label=\"%s\", shape=plaintext];\n", v, p->values[v].name);
	char buf[8];
	for (int i = 0; i < p->nsteps; i++) {
		const MglStep *s = &p->steps[i];
		if (!shown(s, layers, backward))
			continue;
		for (int k = 0; k < s->nin; k++) {
			int v = s->in[k];
			const MglValue *x = &p->values[v];
			if (x->role == MGL_V_PARAM || x->role == MGL_V_GRAD || x->role == MGL_V_STATE)
				continue;
			int m = maker[v];
			if (m >= 0 && !shown(&p->steps[m], layers, backward))
				continue;
			if (m < 0 && x->role != MGL_V_INPUT)
				continue;
			if (m >= 0)
				fprintf(f, "  s%d -> s%d [label=\"%s [", m, i, mgl_layout_str(x->layout, buf));
			else
				fprintf(f, "  v%d -> s%d [label=\"%s [", v, i, mgl_layout_str(x->layout, buf));
			for (int d = 0; d < x->rank; d++)
				fprintf(f, "%s%lld", d ? "," : "", (long long)x->shape[d]);
			fprintf(f, "]\"];\n");
		}
	}
	fprintf(f, "}\n");
	mgl_arena_free(&a);
}
