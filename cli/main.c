/* cli/main.c — the `mgl` command: parses the command line and calls the compiler.
 *
 * One table of commands, each with its help text; one option parser shared by all of
 * them. Exit status: 0 success, 1 a bad model (or file), 2 bad usage.
 */
#include "../compiler/mgl.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
	const char *file;
	const char *preset;
	char *set;            /* every --set joined with ',' (malloc'd) */
	const char *dump;
	bool help;
} Args;

typedef struct {
	const char *name;
	int (*run)(Args *);
	const char *summary;
	const char *help;
	const char *options;  /* the options it accepts, space-separated */
} Command;

static int usage_error(const char *cmd, const char *fmt, const char *arg)
{
	fprintf(stderr, "mgl: error: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\n  hint: see 'mgl %s%s--help'\n", cmd ? cmd : "", cmd ? " " : "");
	return 2;
}

/* ---------------------------------------------------------------- mgl check */

/* "124439808" -> "124,439,808" */
static const char *commas(int64_t v, char *buf)
{
	char tmp[32];
	int n = snprintf(tmp, sizeof tmp, "%lld", (long long)v), o = 0;
	for (int i = 0; i < n; i++) {
		buf[o++] = tmp[i];
		if (tmp[i] != '-' && (n - 1 - i) % 3 == 0 && i != n - 1)
			buf[o++] = ',';
	}
	buf[o] = 0;
	return buf;
}

/* Parameter names with the layer index replaced by '*', so a 96-layer model prints one
 * row per kind of parameter: layers.*.attention.q.weight. */
static void pattern_of(const char *name, char *out, size_t n)
{
	size_t o = 0;
	for (const char *p = name; *p && o + 2 < n;) {
		if ((p == name || p[-1] == '.') && *p >= '0' && *p <= '9') {
			const char *q = p;
			while (*q >= '0' && *q <= '9')
				q++;
			if (*q == '.' || !*q) {
				out[o++] = '*';
				p = q;
				continue;
			}
		}
		out[o++] = *p++;
	}
	out[o] = 0;
}

/* A count, or "-" where the model has none (no attention: no heads). */
static const char *count(int64_t v, char *buf)
{
	if (!v)
		return "-";
	snprintf(buf, 16, "%lld", (long long)v);
	return buf;
}

static void print_summary(const MglGraph *g, const char *file)
{
	char buf[64], sh[160];
	printf("model %s (%s%s%s)\n\n", g->model, file, g->preset ? ", preset " : "", g->preset ? g->preset : "");
	printf("  parameters  %s\n", commas(mgl_param_count(g), buf));
	int64_t hidden = 0, heads = 0, vocab = 0;
	for (int i = 0; i < g->nnodes; i++) {
		const MglNode *nd = &g->nodes[i];
		if (nd->op == MGL_OP_ATTENTION && !heads) {
			heads = nd->heads;
			hidden = nd->shape.d[nd->shape.rank - 1].n;
		}
		if (nd->op == MGL_OP_EMBEDDING && !vocab && g->nodes[nd->in[1]].op == MGL_OP_INPUT)
			vocab = g->nodes[nd->in[0]].shape.d[0].n;
	}
	const char *rows[][2] = {{"layers", count(g->layers, buf)}, {"hidden", count(hidden, buf + 16)},
				 {"heads", count(heads, buf + 32)}, {"vocabulary", count(vocab, buf + 48)}};
	for (int i = 0; i < 4; i++)
		printf("  %-11s %s\n", rows[i][0], rows[i][1]);
	for (int i = 0; i < g->ninputs; i++) {
		const MglNode *in = &g->nodes[g->inputs[i]];
		printf("  %-11s %s %s%s", i ? "" : "inputs", in->name, in->dtype == MGL_I32 ? "i32" : "f32",
		       mgl_shape_str(g, &in->shape, sh, sizeof sh));
		const char *sep = "  (";
		for (int j = 0; j < in->shape.rank; j++) {
			int s = in->shape.d[j].sym;
			if (s >= 0 && g->syms[s].max) {
				printf("%s%s <= %lld", sep, g->syms[s].name, (long long)g->syms[s].max);
				sep = ", ";
			}
		}
		printf("%s\n", *sep == ',' ? ")" : "");
	}

	/* one row per pattern, shape and split, in order of first appearance */
	printf("\n  %-44s %-16s %-7s %6s %14s\n", "parameter", "shape", "split", "copies", "size");
	MglArena a = {0};
	MglMap groups = {0};
	int *first = mgl_alloc(&a, (size_t)(g->nparams + 1) * sizeof *first);
	int *copies = mgl_alloc(&a, (size_t)(g->nparams + 1) * sizeof *copies);
	const char **pats = mgl_alloc(&a, (size_t)(g->nparams + 1) * sizeof *pats);
	int ngroups = 0;
	for (int i = 0; i < g->nparams; i++) {
		char pat[256];
		pattern_of(g->params[i].name, pat, sizeof pat);
		const char *key = mgl_fmt(&a, "%s|%s|%d", pat, mgl_shape_str(g, &g->params[i].shape, sh, sizeof sh),
					  g->params[i].split);
		int k = mgl_map_get(&groups, key, (int)strlen(key));
		if (k < 0) {
			k = ngroups++;
			mgl_map_put(&a, &groups, key, (int)strlen(key), k);
			first[k] = i;
			pats[k] = mgl_strndup(&a, pat, strlen(pat));
		}
		copies[k]++;
	}
	for (int k = 0; k < ngroups; k++) {
		const MglParam *p = &g->params[first[k]];
		printf("  %-44s %-16s %-7s %6d %14s\n", pats[k], mgl_shape_str(g, &p->shape, sh, sizeof sh),
		       mgl_split_name[p->split], copies[k], commas(mgl_shape_numel(&p->shape) * copies[k], buf));
	}
	mgl_arena_free(&a);
}

static int cmd_check(Args *a)
{
	MglCtx c = {0};
	MglOptions opt = {.preset = a->preset};
	jmp_buf jb;
	c.fail = &jb;
	volatile int status = 0;
	if (!setjmp(jb)) {
		if (a->set)
			opt.overrides = mgl_source_from_string(&c, "--set", a->set, true);
		MglSource *src = mgl_read_file(&c, a->file);
		MglFile *f = mgl_parse(&c, src);
		if (a->dump && !strcmp(a->dump, "ast")) {
			mgl_dump_ast(stdout, f);
		} else {
			MglGraph *g = mgl_elaborate(&c, f, &opt);
			if (a->dump)
				mgl_dump_graph(stdout, g);
			else
				print_summary(g, a->file);
		}
	} else {
		status = c.status ? c.status : 1;
	}
	mgl_arena_free(&c.arena);
	return status;
}

/* ---------------------------------------------------------------- the command table */

static const Command commands[] = {
	{"check", cmd_check, "check a model file and print its summary",
	 "usage: mgl check FILE [--preset P] [--set K=V,...] [--dump=ast|graph]\n"
	 "\n"
	 "Parses and elaborates a model file. On success prints the model's exact parameter\n"
	 "count, its layers, hidden size, heads and vocabulary, and a table of parameters with\n"
	 "their shapes and the split each is marked with (one row per kind of parameter; the\n"
	 "layer index is shown as '*'). On an error prints file:line:col, the line and a caret.\n"
	 "\n"
	 "  --preset P        use the settings of preset P from the model file\n"
	 "  --set K=V,...     override config values (after the preset); may be repeated\n"
	 "  --dump=ast        print the parsed file instead of the summary\n"
	 "  --dump=graph      print the elaborated graph, one operation a line\n"
	 "\n"
	 "Exit status: 0 valid, 1 invalid model or unreadable file, 2 bad usage.\n",
	 "--preset --set --dump"},
};
enum { NCOMMANDS = sizeof commands / sizeof commands[0] };

static void print_help(void)
{
	printf("mgl %s — train Transformer language models with tensor model parallelism\n\n", MGL_VERSION);
	printf("usage: mgl COMMAND [ARGS]\n\ncommands:\n");
	for (int i = 0; i < NCOMMANDS; i++)
		printf("  %-10s %s\n", commands[i].name, commands[i].summary);
	printf("\n'mgl COMMAND --help' describes a command. 'mgl --version' prints the version.\n");
}

/* Options as `--name value` or `--name=value`; the one positional argument is the file. */
static int parse_args(const Command *cmd, int argc, char **argv, Args *a)
{
	for (int i = 0; i < argc; i++) {
		char *arg = argv[i];
		if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
			a->help = true;
			return 0;
		}
		if (arg[0] != '-' || arg[1] == 0) {
			if (a->file)
				return usage_error(cmd->name, "unexpected argument '%s': give one model file", arg);
			a->file = arg;
			continue;
		}
		char name[64];
		const char *eq = strchr(arg, '=');
		size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
		if (len >= sizeof name)
			return usage_error(cmd->name, "unknown option '%s'", arg);
		memcpy(name, arg, len);
		name[len] = 0;
		const char *opts = cmd->options;
		const char *hit = strstr(opts, name);
		if (!hit || (hit[len] != ' ' && hit[len] != 0) || (hit != opts && hit[-1] != ' '))
			return usage_error(cmd->name, "unknown option '%s'", name);
		const char *val = eq ? eq + 1 : NULL;
		if (!val) {
			if (i + 1 >= argc)
				return usage_error(cmd->name, "option '%s' needs a value", name);
			val = argv[++i];
		}
		if (!strcmp(name, "--preset")) {
			a->preset = val;
		} else if (!strcmp(name, "--dump")) {
			if (strcmp(val, "ast") && strcmp(val, "graph"))
				return usage_error(cmd->name, "--dump takes ast or graph, not '%s'", val);
			a->dump = val;
		} else if (!strcmp(name, "--set")) {
			size_t old = a->set ? strlen(a->set) : 0;
			char *s = realloc(a->set, old + strlen(val) + 2);
			if (!s)
				return usage_error(cmd->name, "out of memory%s", "");
			if (old)
				s[old++] = ',';
			strcpy(s + old, val);
			a->set = s;
		}
	}
	if (!a->file)
		return usage_error(cmd->name, "no model file given%s", "");
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		if (argc >= 3 && !strcmp(argv[1], "help")) {
			for (int i = 0; i < NCOMMANDS; i++)
				if (!strcmp(argv[2], commands[i].name)) {
					fputs(commands[i].help, stdout);
					return 0;
				}
			return usage_error(NULL, "no command '%s' to describe", argv[2]);
		}
		print_help();
		return argc < 2 ? 2 : 0;
	}
	if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V")) {
		printf("mgl %s\n", MGL_VERSION);
		return 0;
	}
	for (int i = 0; i < NCOMMANDS; i++) {
		if (strcmp(argv[1], commands[i].name))
			continue;
		Args a = {0};
		int st = parse_args(&commands[i], argc - 2, argv + 2, &a);
		if (!st && a.help)
			fputs(commands[i].help, stdout);
		else if (!st)
			st = commands[i].run(&a);
		free(a.set);
		return st;
	}
	const char *names[NCOMMANDS];
	for (int i = 0; i < NCOMMANDS; i++)
		names[i] = commands[i].name;
	fprintf(stderr, "mgl: error: unknown command '%s'\n", argv[1]);
	const char *best = mgl_closest(argv[1], (int)strlen(argv[1]), names, NCOMMANDS);
	if (best)
		fprintf(stderr, "  hint: did you mean 'mgl %s'?\n", best);
	else
		fprintf(stderr, "  hint: 'mgl --help' lists the commands\n");
	return 2;
}
