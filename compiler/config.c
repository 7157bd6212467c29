/* compiler/config.c — a model's config: the values of its config section, overridden by
 * the chosen preset and then by --set, each evaluated once, on first use, so a value may
 * use the others in any order; a cycle is reported with its path, at --set when an
 * override closed it.
 */
#include "elab.h"

#include <string.h>

static _Noreturn void config_cycle(Elab *E, int k)
{
	int start = 0;
	while (E->cfg_stack[start] != k)
		start++;
	char path[512];
	size_t n = 0;
	for (int i = start; i <= E->ncfg_stack && n < sizeof path; i++) {
		int j = i < E->ncfg_stack ? E->cfg_stack[i] : k;
		n += (size_t)snprintf(path + n, sizeof path - n, "%s%.*s", i > start ? " -> " : "",
				      E->cfg[j].key->len, E->cfg[j].key->p);
	}
	const MglTok *at = E->cfg[k].def;
	for (int i = start; i < E->ncfg_stack; i++)   /* a cycle made by --set is reported there */
		if (E->cfg[E->cfg_stack[i]].def->src->cmdline)
			at = E->cfg[E->cfg_stack[i]].def;
	mgl_report(E->c, "error", at, "config '%.*s' depends on itself: %s",
		   E->cfg[k].key->len, E->cfg[k].key->p, path);
	mgl_hint(E->c, "each config value may use the others, but not in a circle");
	mgl_fail(E->c);
}

Value elab_config_value(Elab *E, int k)
{
	Cfg *cf = &E->cfg[k];
	if (cf->state == CFG_DONE)
		return cf->v;
	if (cf->state == CFG_BUSY)
		config_cycle(E, k);
	if (E->ncfg_stack == MGL_MAX_DEPTH)
		mgl_error(E->c, cf->def, "config values refer to each other too deeply (more than %d)",
			  MGL_MAX_DEPTH);
	cf->state = CFG_BUSY;
	E->cfg_stack[E->ncfg_stack++] = k;
	Value v = elab_eval(E, NULL, cf->expr, NULL);
	if (v.kind != V_INT && v.kind != V_REAL && v.kind != V_BOOL)
		mgl_error(E->c, cf->expr->tok, "config values are numbers; this is %s", elab_describe(E, v));
	E->ncfg_stack--;
	v.cfg = k;
	cf->v = v;
	cf->state = CFG_DONE;
	return v;
}

/* Applies the bindings of a preset or --set to the config: each must name a known key. */
static void override(Elab *E, const MglBinding *b, int n, const char *what)
{
	for (int i = 0; i < n; i++) {
		int k = mgl_map_get(&E->cfg_names, b[i].key->p, b[i].key->len);
		if (k < 0) {
			mgl_report(E->c, "error", b[i].key, "%s sets '%.*s', which is not in the config",
				   what, b[i].key->len, b[i].key->p);
			int nk;
			const char **keys = elab_map_keys(E->a, &E->cfg_names, &nk);
			const char *best = mgl_closest(b[i].key->p, b[i].key->len, keys, nk);
			if (best)
				mgl_hint(E->c, "did you mean '%s'?", best);
			mgl_fail(E->c);
		}
		E->cfg[k].expr = b[i].value;
		E->cfg[k].def = b[i].key;
	}
}

void elab_setup_config(Elab *E, const MglOptions *opt)
{
	const MglFile *f = E->f;
	E->cfg = mgl_alloc(E->a, (size_t)(f->nconfig + 1) * sizeof *E->cfg);
	for (int i = 0; i < f->nconfig; i++) {
		const MglTok *key = f->config[i].key;
		int prev = mgl_map_get(&E->cfg_names, key->p, key->len);
		if (prev >= 0) {
			mgl_report(E->c, "error", key, "'%.*s' is set twice in the config", key->len, key->p);
			mgl_report(E->c, "note", E->cfg[prev].key, "the first is here");
			mgl_fail(E->c);
		}
		mgl_map_put(E->a, &E->cfg_names, key->p, key->len, E->ncfg);
		E->cfg[E->ncfg++] = (Cfg){.key = key, .def = key, .expr = f->config[i].value};
	}
	for (int i = 0; i < f->npresets; i++)
		for (int j = 0; j < i; j++) {
			const MglTok *a = f->presets[i].name, *b = f->presets[j].name;
			if (a->len == b->len && !memcmp(a->p, b->p, (size_t)a->len)) {
				mgl_report(E->c, "error", a, "a second preset named '%.*s'", a->len, a->p);
				mgl_report(E->c, "note", b, "the first is here");
				mgl_fail(E->c);
			}
		}
	if (opt && opt->preset) {
		const MglPreset *chosen = NULL;
		const char **names = mgl_alloc(E->a, (size_t)(f->npresets + 1) * sizeof *names);
		for (int i = 0; i < f->npresets; i++) {
			names[i] = elab_tokstr(E, f->presets[i].name);
			if (!strcmp(names[i], opt->preset))
				chosen = &f->presets[i];
		}
		if (!chosen) {
			mgl_report(E->c, "error", NULL, "%s has no preset '%s'", f->src->name, opt->preset);
			E->c->status = 2;   /* a bad --preset is a usage error */
			const char *best = mgl_closest(opt->preset, (int)strlen(opt->preset), names, f->npresets);
			if (best)
				mgl_hint(E->c, "did you mean '%s'?", best);
			if (f->npresets) {
				char list[1024];
				size_t n = 0;
				for (int i = 0; i < f->npresets && n < sizeof list; i++)
					n += (size_t)snprintf(list + n, sizeof list - n, "%s%s", i ? ", " : "", names[i]);
				mgl_hint(E->c, "the presets are: %s", list);
			}
			mgl_fail(E->c);
		}
		E->g->preset = opt->preset;
		override(E, chosen->set, chosen->nset, mgl_fmt(E->a, "preset '%s'", opt->preset));
	}
	if (opt && opt->overrides) {
		int n;
		MglBinding *b = mgl_parse_overrides(E->c, opt->overrides, &n);
		override(E, b, n, "--set");
	}
	E->g->config = mgl_alloc(E->a, (size_t)(E->ncfg + 1) * sizeof *E->g->config);
	for (int i = 0; i < E->ncfg; i++) {
		Value v = elab_config_value(E, i);
		E->g->config[i] = (MglConfigValue){.key = elab_tokstr(E, E->cfg[i].key), .is_int = v.kind != V_REAL,
						   .i = v.i, .r = v.kind == V_REAL ? v.r : (double)v.i,
						   .tok = E->cfg[i].def};
	}
	E->g->nconfig = E->ncfg;
}
