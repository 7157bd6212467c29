/* compiler/elab.h — what elaborate.c and config.c share, private to them: the values an
 * elaboration computes with, and its state. mgl.h is the compiler's contract.
 */
#ifndef MGL_ELAB_H
#define MGL_ELAB_H

#include "mgl.h"

/* ---------------------------------------------------------------- values */

typedef enum { V_INT, V_REAL, V_BOOL, V_TENSOR, V_LIST } VKind;

typedef struct {
	VKind kind;
	int64_t i;          /* INT, BOOL */
	double r;           /* REAL */
	int node;           /* TENSOR */
	int64_t dims[MGL_MAX_RANK];  /* LIST */
	int ndims;
	int cfg;            /* the config entry it was read from, or -1: for notes */
} Value;

typedef enum { CFG_TODO, CFG_BUSY, CFG_DONE } CfgState;

typedef struct {
	const MglTok *key;      /* the name in the config section */
	const MglTok *def;      /* the definition in force: config, preset or --set */
	const MglExpr *expr;
	CfgState state;
	Value v;
} Cfg;

typedef struct {
	MglMap names;              /* variable name -> index in vals */
	Value *vals;
	const MglTok **defs;
	int n, cap, capdefs;
	const char *prefix;     /* parameter path: "" or "layers.3.attention." */
} Frame;

typedef struct {
	MglCtx *c;
	MglArena *a;
	const MglFile *f;
	MglGraph *g;
	Cfg *cfg;
	int ncfg;
	MglMap cfg_names, block_names, op_names, param_names, instance_names, sym_names;
	int cfg_stack[MGL_MAX_DEPTH];       /* config entries being evaluated: for cycles */
	int ncfg_stack;
	const MglBlock *blocks[MGL_MAX_DEPTH];  /* blocks being instantiated: for recursion */
	const MglTok *block_calls[MGL_MAX_DEPTH];
	int nblocks;
	long work;
	int layer;                          /* iteration of the model's outermost repeat, or -1 */
} Elab;

/* elaborate.c */
Value elab_eval(Elab *E, Frame *fr, const MglExpr *e, const char *target);
/* "an integer (768)", "a tensor f32[batch, seq, 768]": what the user passed, in words. */
const char *elab_describe(Elab *E, Value v);
const char *elab_tokstr(Elab *E, const MglTok *t);
/* The keys of a map, for "did you mean" (NUL-terminated copies). */
const char **elab_map_keys(MglArena *a, const MglMap *m, int *n);

/* config.c: the config, with the chosen preset and --set applied */
void elab_setup_config(Elab *E, const MglOptions *opt);
/* Config entry k's value, evaluated once (a cycle is an error). */
Value elab_config_value(Elab *E, int k);

#endif
