/* cli/main.c — the `mgl` command: parses the command line and calls the compiler.
 *
 * One table of commands, each with its help text; one table of options, shared by all of
 * them. Exit status: 0 success, 1 a bad model (or file), 2 bad usage.
 */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
	const char *name;
	int (*run)(Args *);
	const char *summary;
	const char *help;
	const char *options;  /* the options it accepts, space-separated */
} Command;

int usage_error(const char *cmd, const char *fmt, const char *arg)
{
	fprintf(stderr, "mgl: error: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\n  hint: see 'mgl %s%s--help'\n", cmd ? cmd : "", cmd ? " " : "");
	return 2;
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
	{"compile", cmd_compile, "compile a model to a plan for tp x dp ranks",
	 "usage: mgl compile FILE [--preset P] [--set ...] [--tp N] [--dp M] [--sp] [--batch B] [--seq T]\n"
	 "                   [--dtype f32|bf16] [-o PLAN] [--dump=PASS]\n"
	 "\n"
	 "Partitions the model over the ranks, differentiates it, and writes the plan every rank\n"
	 "runs: values with their layouts and arena offsets, parameters, and the forward, backward\n"
	 "and optimizer steps with the collectives between them (docs/plan.md). Without -o the\n"
	 "plan goes to standard output; with -o it is written to a temporary file and renamed.\n"
	 "\n"
	 "  --preset P        use the settings of preset P from the model file\n"
	 "  --set K=V,...     override config values (after the preset); may be repeated\n"
	 "  --tp N            tensor-parallel ranks (default 1)\n"
	 "  --dp N            data-parallel ranks (default 1)\n"
	 "  --sp              sequence parallelism: split layer norms and dropouts along the sequence\n"
	 "  --batch B         micro-batch size to compile for (default 8)\n"
	 "  --seq T           sequence length (default: the model's config seq)\n"
	 "  --dtype f32|bf16  storage of activations (default bf16, as the GPU runs)\n"
	 "  -o PLAN           where to write the plan\n"
	 "  --dump=PASS       print the result of one pass and stop: ast, graph, autodiff,\n"
	 "                    partition, optimizer, fuse or schedule (the finished plan)\n",
	 "--preset --set --dump --tp --dp --sp --batch --seq --dtype -o"},
	{"explain", cmd_explain, "what a plan costs per rank: FLOPs, collectives, bytes, memory",
	 "usage: mgl explain FILE [--preset P] [--set ...] [--tp N] [--dp M] [--sp] [--batch B] [--seq T]\n"
	 "                   [--dtype f32|bf16] [--json]\n"
	 "\n"
	 "Compiles the model and reports, per rank: parameters (and the vocabulary padding), FLOPs\n"
	 "per micro-batch forward and backward, collectives per Transformer layer and for the whole\n"
	 "model by kind and phase, bytes sent per micro-batch, and memory: weights, gradients,\n"
	 "optimizer state, activations, peak, and what one layer keeps for the backward pass.\n"
	 "\n"
	 "  --preset P        use the settings of preset P from the model file\n"
	 "  --set K=V,...     override config values (after the preset); may be repeated\n"
	 "  --tp N            tensor-parallel ranks (default 1)\n"
	 "  --dp N            data-parallel ranks (default 1)\n"
	 "  --sp              sequence parallelism: split layer norms and dropouts along the sequence\n"
	 "  --batch B         micro-batch size to compile for (default 8)\n"
	 "  --seq T           sequence length (default: the model's config seq)\n"
	 "  --dtype f32|bf16  storage of activations (default bf16, as the GPU runs)\n"
	 "  --json            one JSON object instead of the table\n",
	 "--preset --set --tp --dp --sp --batch --seq --dtype --json"},
	{"dot", cmd_dot, "draw a plan with Graphviz",
	 "usage: mgl dot FILE|PLAN [--preset P] [--set ...] [--tp N] [--sp] [--batch B] [--seq T]\n"
	 "               [--backward] [--layers N] [-o OUT.dot]\n"
	 "\n"
	 "Writes the plan as a Graphviz graph: one node per step, collectives as coloured nodes of\n"
	 "their own, layouts and shapes on the edges, one cluster per Transformer layer. Render it\n"
	 "with `dot -Tsvg OUT.dot -o OUT.svg`. Reads a model file (compiling it) or a plan.\n"
	 "\n"
	 "  --preset P        use the settings of preset P from the model file\n"
	 "  --set K=V,...     override config values (after the preset); may be repeated\n"
	 "  --tp N            tensor-parallel ranks (default 1)\n"
	 "  --dp N            data-parallel ranks (default 1)\n"
	 "  --sp              sequence parallelism: split layer norms and dropouts along the sequence\n"
	 "  --batch B         micro-batch size to compile for (default 8)\n"
	 "  --seq T           sequence length (default: the model's config seq)\n"
	 "  --dtype f32|bf16  storage of activations (default bf16, as the GPU runs)\n"
	 "  --backward        draw the backward pass too (default: forward only)\n"
	 "  --layers N        draw only the first N layers (and what is outside them)\n"
	 "  -o OUT.dot        where to write (default: standard output)\n",
	 "--preset --set --tp --dp --sp --batch --seq --dtype --backward --layers -o"},
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

/* A positive integer option value. */
static int int_opt(const char *cmd, const char *name, const char *val, int64_t max, int64_t *out)
{
	char *end;
	long long v = strtoll(val, &end, 10);
	if (*val < '0' || *val > '9' || *end || v < 1 || v > max) {
		fprintf(stderr, "mgl: error: %s takes a whole number from 1 to %lld, not '%s'\n", name, (long long)max, val);
		fprintf(stderr, "  hint: see 'mgl %s --help'\n", cmd);
		return 2;
	}
	*out = v;
	return 0;
}

/* Options as `--name value` or `--name=value`; flags take no value; the one positional
 * argument is the file. */
static int parse_args(const Command *cmd, int argc, char **argv, Args *a)
{
	static const char *const flags[] = {"--sp", "--json", "--backward"};
	a->dtype = MGL_BF16;
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
		while (hit && ((hit[len] != ' ' && hit[len] != 0) || (hit != opts && hit[-1] != ' ')))
			hit = strstr(hit + 1, name);
		if (!hit)
			return usage_error(cmd->name, "unknown option '%s'", name);
		bool flag = false;
		for (size_t k = 0; k < sizeof flags / sizeof flags[0]; k++)
			flag |= !strcmp(name, flags[k]);
		if (flag) {
			if (eq)
				return usage_error(cmd->name, "option '%s' takes no value", name);
			a->sp |= !strcmp(name, "--sp");
			a->json |= !strcmp(name, "--json");
			a->backward |= !strcmp(name, "--backward");
			continue;
		}
		const char *val = eq ? eq + 1 : NULL;
		if (!val) {
			if (i + 1 >= argc)
				return usage_error(cmd->name, "option '%s' needs a value", name);
			val = argv[++i];
		}
		int64_t n = 0;
		int st = 0;
		if (!strcmp(name, "--preset")) {
			a->preset = val;
		} else if (!strcmp(name, "--dump")) {
			if (!strcmp(cmd->name, "check") && strcmp(val, "ast") && strcmp(val, "graph"))
				return usage_error(cmd->name, "--dump takes ast or graph, not '%s'", val);
			a->dump = val;
		} else if (!strcmp(name, "-o")) {
			a->out = val;
		} else if (!strcmp(name, "--dtype")) {
			if (strcmp(val, "f32") && strcmp(val, "bf16"))
				return usage_error(cmd->name, "--dtype takes f32 or bf16, not '%s'", val);
			a->dtype = !strcmp(val, "f32") ? MGL_F32 : MGL_BF16;
		} else if (!strcmp(name, "--tp") || !strcmp(name, "--dp") || !strcmp(name, "--layers")) {
			if (!(st = int_opt(cmd->name, name, val, 4096, &n)))
				*(!strcmp(name, "--tp") ? &a->tp : !strcmp(name, "--dp") ? &a->dp : &a->layers) = (int)n;
		} else if (!strcmp(name, "--batch") || !strcmp(name, "--seq")) {
			if (!(st = int_opt(cmd->name, name, val, 1 << 20, &n)))
				*(!strcmp(name, "--batch") ? &a->batch : &a->seq) = n;
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
		if (st)
			return st;
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
