/* compiler/pipeline.c — the passes after elaboration, in order: from the typed graph to
 * the finished plan. The one driver: `mgl compile --dump=PASS` stops it after a pass with
 * its hook; everything else runs it whole.
 */
#include "mgl.h"

const char *const mgl_passes[MGL_NPASSES] = {"autodiff", "partition", "recompute", "adamw", "hfuse", "schedule", "fuse", "memplan"};

MglPlan *mgl_run_passes(MglCtx *c, const MglGraph *g, const MglTarget *t, MglPassHook *hook, void *arg)
{
	MglPlan *p = NULL;
	for (int i = 0; i < MGL_NPASSES; i++) {
		switch (i) {   /* in the order of mgl_passes */
		case 0: p = mgl_lower(c, g, t); break;
		case 1: mgl_partition(c, p); break;
		case 2: mgl_recompute(c, p); break;
		case 3: mgl_adamw(c, p, t->bf16_grads); break;
		case 4: mgl_hfuse(c, p); break;
		case 5: mgl_schedule(p); break;
		case 6: mgl_fuse(p); break;
		case 7: mgl_memplan(p); break;
		}
		if (hook && hook(mgl_passes[i], p, arg))
			break;
	}
	return p;
}

MglPlan *mgl_build_plan(MglCtx *c, const MglGraph *g, const MglTarget *t) { return mgl_run_passes(c, g, t, NULL, NULL); }
