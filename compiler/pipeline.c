/* compiler/pipeline.c — the passes after elaboration, in order: from the typed graph to
 * the finished plan.
 */
#include "mgl.h"

MglPlan *mgl_build_plan(MglCtx *c, const MglGraph *g, const MglTarget *t)
{
	MglPlan *p = mgl_lower(c, g, t);
	mgl_partition(c, p);
	mgl_adamw(c, p);
	mgl_fuse(p);
	mgl_memplan(p);
	return p;
}
