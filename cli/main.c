/* cli/main.c — the `mgl` command: parses the command line and calls the compiler.
 *
 * One table of commands, each with its help text; one table of options, shared by all of
 * them. Exit status: 0 success, 1 a bad model (or file), 2 bad usage.
 */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
	const char *name;
	int (*run)(Args *);
	int (*raw)(int argc, char **argv);   /* a command that parses its own arguments */
	const char *summary;
	const char *help;
	const char *options;  /* the options it accepts, space-separated */
	const char *arg;      /* its one argument, for "no ... given": NULL a model file, "" none;
			       * in brackets ("[plan]") optional */
} Command;

int usage_error(const char *cmd, const char *fmt, const char *arg)
{
	fprintf(stderr, "mgl: error: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\n  hint: see 'mgl %s%s--help'\n", cmd ? cmd : "", cmd ? " " : "");
	return 2;
}

int cli_unknown_option(const char *cmd, const char *name, const char *options)
{
	char copy[1024];
	const char *cands[64];
	int n = 0;
	snprintf(copy, sizeof copy, "%s", options);
	for (char *s = strtok(copy, " "); s && n < 64; s = strtok(NULL, " "))
		cands[n++] = s;
	const char *best = mgl_closest(name, (int)strlen(name), cands, n);
	fprintf(stderr, "mgl: error: unknown option '%s'\n", name);
	if (best)
		fprintf(stderr, "  hint: did you mean '%s'?\n", best);
	else
		fprintf(stderr, "  hint: see 'mgl %s --help'\n", cmd);
	return 2;
}

FILE *cli_out_open(const char *path)
{
	char err[1024];
	FILE *f = path ? rt_atomic_open(path, err, sizeof err) : stdout;
	if (!f)
		fprintf(stderr, "mgl: error: %s\n", err);
	return f;
}

int cli_out_close(FILE *f, const char *path)
{
	char err[1024];
	if (!path)
		return fflush(f) != 0;
	if (!rt_atomic_commit(f, path, err, sizeof err))
		return 0;
	fprintf(stderr, "mgl: error: %s\n", err);
	return 1;
}

void cli_json_str(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	putchar('"');
}

/* ---------------------------------------------------------------- the command table */

/* Option help shared by the commands that load a model, and by those that compile it. */
#define MODEL_OPTIONS \
	"  --preset P        use the settings of preset P from the model file\n" \
	"  --set K=V,...     override config values (after the preset); may be repeated\n"
#define TARGET_OPTIONS \
	"  --tp N            tensor-parallel ranks (default 1)\n" \
	"  --dp M            data-parallel ranks (default 1)\n" \
	"  --sp              sequence parallelism: split layer norms and dropouts along the sequence\n" \
	"  --zero 0|1        1: ZeRO stage 1, AdamW's state sharded over the dp ranks (dp >= 2)\n" \
	"  --recompute none|selective|full\n" \
	"                    run forward steps again in the backward pass instead of keeping their\n" \
	"                    outputs: selective, norms and activations; full, each layer from its input\n" \
	"  --batch B         micro-batch size to compile for (default 8)\n" \
	"  --seq T           sequence length (default: the model's config seq)\n" \
	"  --dtype f32|bf16  storage of activations (default bf16, as the GPU runs)\n" \
	"  --accum A         micro-batches a step, as mgl train's (default 1; above 1 the linears'\n" \
	"                    weight gradients are f32, not bf16: the next micro-batch adds into them)\n"
#define LINK_OPTIONS \
	"  --link-gbs G --link-us U\n" \
	"                    the time of the collectives predicted as U microseconds each and their\n" \
	"                    bytes at G GB/s (default 229 and 10: two H200s over NVLink)\n"

static const Command commands[] = {
	{"check", cmd_check, NULL, "check a model file and print its summary",
	 "usage: mgl check FILE [--preset P] [--set K=V,...] [--dump=ast|graph]\n"
	 "\n"
	 "Parses and elaborates a model file. On success prints the model's exact parameter\n"
	 "count, its layers, hidden size, heads and vocabulary, and a table of parameters with\n"
	 "their shapes and the split each is marked with (one row per kind of parameter; the\n"
	 "layer index is shown as '*'). On an error prints file:line:col, the line and a caret.\n"
	 "\n"
	 MODEL_OPTIONS
	 "  --dump=ast        print the parsed file instead of the summary\n"
	 "  --dump=graph      print the elaborated graph, one operation a line\n"
	 "\n"
	 "Exit status: 0 valid, 1 invalid model or unreadable file, 2 bad usage.\n",
	 "--preset --set --dump", NULL},
	{"compile", cmd_compile, NULL, "compile a model to a plan for tp x dp ranks",
	 "usage: mgl compile FILE [--preset P] [--set ...] [--tp N] [--dp M] [--sp] [--batch B] [--seq T]\n"
	 "                   [--zero 0|1] [--recompute none|selective|full]\n"
	 "                   [--dtype f32|bf16] [--accum A] [-o PLAN] [--dump=PASS]\n"
	 "\n"
	 "Partitions the model over the ranks, differentiates it, and writes the plan every rank\n"
	 "runs: values with their layouts and arena offsets, parameters, and the forward, backward\n"
	 "and optimizer steps with the collectives between them (docs/plan.md). Without -o the\n"
	 "plan goes to standard output; with -o it is written to a temporary file and renamed.\n"
	 "\n"
	 MODEL_OPTIONS TARGET_OPTIONS
	 "  -o PLAN           where to write the plan\n"
	 "  --dump=PASS       print the result of one pass and stop: ast, graph, autodiff,\n"
	 "                    partition, recompute, adamw, hfuse, schedule, fuse or memplan (the finished plan)\n"
	 "\n"
	 "Exit status: 0 written, 1 an invalid model (or one that cannot be split over the ranks\n"
	 "asked for) or a file that cannot be read or written, 2 bad usage.\n",
	 "--preset --set --dump --tp --dp --sp --zero --recompute --batch --seq --dtype --accum -o", NULL},
	{"explain", cmd_explain, NULL, "what a plan costs per rank: FLOPs, collectives, bytes, memory",
	 "usage: mgl explain FILE|PLAN [--preset P] [--set ...] [--tp N] [--dp M] [--sp] [--batch B] [--seq T]\n"
	 "                        [--zero 0|1] [--recompute none|selective|full]\n"
	 "                        [--dtype f32|bf16] [--accum A] [--link-gbs G] [--link-us U] [--json]\n"
	 "\n"
	 "Compiles the model and reports, per rank: parameters (and the vocabulary padding), FLOPs\n"
	 "per micro-batch forward and backward, collectives per Transformer layer and for the whole\n"
	 "model by kind and phase, bytes sent per micro-batch and the time the collectives take,\n"
	 "and memory: weights, gradients, optimizer state, activations, peak, and what one layer\n"
	 "keeps for the backward pass.\n"
	 "Reads a model file (compiling it) or a plan that `mgl compile` wrote, which is compiled\n"
	 "already: with a plan, the options below but --json are refused.\n"
	 "\n"
	 MODEL_OPTIONS TARGET_OPTIONS
	 LINK_OPTIONS
	 "  --json            one JSON object instead of the table\n"
	 "\n"
	 "Exit status: 0 explained, 1 an invalid model or plan or a file that cannot be read,\n"
	 "2 bad usage.\n",
	 "--preset --set --tp --dp --sp --zero --recompute --batch --seq --dtype --accum --link-gbs --link-us --json",
	 "model file or plan"},
	{"dot", cmd_dot, NULL, "draw a plan with Graphviz",
	 "usage: mgl dot FILE|PLAN [--preset P] [--set ...] [--tp N] [--dp M] [--sp] [--batch B] [--seq T]\n"
	 "               [--zero 0|1] [--recompute none|selective|full]\n"
	 "               [--dtype f32|bf16] [--accum A] [--backward] [--layers N|all] [-o OUT.dot]\n"
	 "\n"
	 "Writes the plan as a Graphviz graph: one node per step, collectives as coloured nodes of\n"
	 "their own, layouts and shapes on the edges (a legend says what R, S1, P and M mean), one\n"
	 "cluster per Transformer layer. The first layer is drawn, with the embedding and the\n"
	 "head; the other layers are folded into one node that takes their edges. Render it with\n"
	 "`dot -Tsvg OUT.dot -o OUT.svg`. Reads a model file (compiling it) or a plan that\n"
	 "`mgl compile` wrote, which is compiled already: with a plan, the options from --preset\n"
	 "to --accum are refused.\n"
	 "\n"
	 MODEL_OPTIONS TARGET_OPTIONS
	 "  --backward        draw the backward pass too (default: forward only)\n"
	 "  --layers N|all    draw the first N layers (default 1), folding the others; all: every one\n"
	 "  -o OUT.dot        where to write (default: standard output)\n"
	 "\n"
	 "Exit status: 0 written, 1 an invalid model or plan or a file that cannot be read or\n"
	 "written, 2 bad usage.\n",
	 "--preset --set --tp --dp --sp --zero --recompute --batch --seq --dtype --accum --backward --layers -o", "model file or plan"},
	{"tokenize", NULL, cmd_tokenize, "turn text files into token shards (bytes, GPT-2 BPE, or BERT streams)", NULL, NULL, NULL},
	{"train", cmd_train, NULL, "train a model on token shards",
	 "usage: mgl train FILE [--preset P] [--set ...] --data TRAIN.bin [--val VAL.bin] [--tp N] [--dp M] [--sp]\n"
	 "                 [--zero 0|1] [--recompute none|selective|full]\n"
	 "                 [--backend cpu|cuda] [--steps S] [--batch B] [--seq T] [--accum A] [--lr LR]\n"
	 "                 [--save DIR] [--resume DIR] [--log metrics.jsonl] [--tensorboard DIR]\n"
	 "                 [--gpt2 DIR | --vocab FILE] ...\n"
	 "       mgl train [FILE] --init DIR --data TRAIN.bin ...   (fine-tune a checkpoint's weights)\n"
	 "\n"
	 "Trains with AdamW on random windows of TRAIN.bin (a token shard: `mgl tokenize`), every\n"
	 "rank of the tp x dp job a thread on the cpu backend, or one GPU on the cuda backend (the\n"
	 "default where a GPU can be used: docs/gpu.md). Once every input is checked, prints\n"
	 "what it trains; then progress (rewritten every step on a terminal; elsewhere a line every\n"
	 "10 s, or every --log-every steps) and a summary at the end. Ctrl-C stops after the step\n"
	 "and saves; a second Ctrl-C stops at once, without saving. --log writes one JSON object per\n"
	 "step (step, loss, lr, grad_norm, tokens_per_s, and val_loss, val_ppl when evaluated);\n"
	 "--tensorboard the same and more as TensorBoard scalars (docs/train.md lists them).\n"
	 "A BERT (models/bert.mgl, told by its inputs) trains on a BERT stream (mgl tokenize\n"
	 "--bert) and reports its masked-LM loss, sentence-order loss and accuracy too\n"
	 "(mlm_loss, sop_loss, sop_acc; docs/train.md).\n"
	 "\n"
	 MODEL_OPTIONS
	 "  --data F          training tokens (required);  --val F  validation tokens\n"
	 "  --steps S         optimizer steps (default 200); with --resume, the step to reach\n"
	 "                    (default: the checkpoint's; so are --lr, --min-lr and --warmup)\n"
	 "  --batch B         sequences per micro-batch and dp rank (default 8)\n"
	 "  --seq T           sequence length (default: the model's config seq)\n"
	 "  --accum A         micro-batches per optimizer step (default 1)\n"
	 "  --interleave      run them two at a time (A even), each one's steps beside the\n"
	 "                    other's collectives: tp's all-reduces hidden under compute, twice\n"
	 "                    the activation memory of one micro-batch (docs/train.md)\n"
	 "  --lr LR           peak learning rate (default 6e-4); --min-lr (default LR/10)\n"
	 "  --warmup W        warm-up steps (default steps/10, at most 100), then cosine decay\n"
	 "  --weight-decay X  AdamW weight decay of matrices (default 0.1; none on biases, norms)\n"
	 "  --clip X          clip the gradient's global norm (default 1)\n"
	 "  --seed N          data, dropout and initialization (default 1337)\n"
	 "  --eval-every N    evaluate every N steps (default steps/10 with --val)\n"
	 "  --eval-batches N  validation batches per evaluation (default 8)\n"
	 "  --save DIR        write DIR/checkpoint.safetensors at the end (and on Ctrl-C)\n"
	 "  --save-every N    ... and every N steps\n"
	 "  --save-shards N   ... as N shard files and an index (Hugging Face's form); by\n"
	 "                    default one file, shards past 5 GB or across processes\n"
	 "  --resume DIR      continue from a checkpoint (at any --tp)\n"
	 "  --init DIR        start from a checkpoint's weights (mgl import's, or any mgl train\n"
	 "                    wrote) at any --tp: a fresh optimizer, step 0; FILE may then be left\n"
	 "                    out: the checkpoint's model, preset and set (and --set after them)\n"
	 "  --log FILE        metrics as JSON lines\n"
	 "  --tensorboard DIR TensorBoard scalars: a new events file in DIR (created) each run\n"
	 "  --log-every N     a progress line every N steps (default: every 10 s off a terminal)\n"
	 "  --gpt2 DIR        the data is GPT-2 BPE (from DIR): the checkpoint records DIR's absolute\n"
	 "                    path and its files' SHA-256, so `mgl sample` decodes with the same files\n"
	 "  --vocab FILE      BERT: the data is WordPiece of FILE (mgl tokenize --bert --vocab FILE;\n"
	 "                    without it, BERT's byte vocabulary), recorded as --gpt2 DIR is\n"
	 "  --dump-first DIR  write DIR/checkpoint.safetensors (the initial weights),\n"
	 "                    DIR/grads.safetensors (the first step's gradients) and\n"
	 "                    DIR/batch.safetensors (its inputs; not with --accum): for comparisons\n"
	 "  --tp N --dp M --sp  the job: tp x dp ranks (threads on the cpu, one GPU each on cuda)\n"
	 "  --zero 1          ZeRO stage 1: AdamW's state sharded over the dp ranks (dp >= 2)\n"
	 "  --recompute M     none (default), selective (norms, activations) or full (each layer\n"
	 "                    from its input): less activation memory for more compute\n"
	 "  --backend cpu|cuda the default is cuda where a GPU can be used, else cpu\n"
	 "  --gpus N          GPUs to use: must be tp x dp (the default)\n"
	 "\n"
	 "Exit status: 0 trained, 1 an invalid model, shard or checkpoint, a file that cannot be\n"
	 "written, or a NaN loss, 2 bad usage, 130 stopped by Ctrl-C.\n",
	 "--preset --set --data --val --tp --dp --sp --zero --recompute --backend --gpus --steps --batch --seq --accum --interleave --lr --min-lr "
	 "--warmup --weight-decay --clip --seed --eval-every --eval-batches --save --save-every --save-shards --resume --log --tensorboard --log-every "
	 "--gpt2 --vocab --dump-first --init", NULL},
	{"sample", cmd_sample, NULL, "generate text from a checkpoint",
	 "usage: mgl sample CHECKPOINT [--prompt TEXT] [--tokens N] [--temperature T] [--top-k K] [--seed S]\n"
	 "                  [--seq T] [--gpt2 DIR]\n"
	 "\n"
	 "Continues the prompt with tokens drawn from the model of a checkpoint written by\n"
	 "`mgl train --save` (the directory or its checkpoint.safetensors): the model's source\n"
	 "travels in the checkpoint, and so does which tokenizer it was trained with (bytes, or\n"
	 "GPT-2's directory and the SHA-256 of its files).\n"
	 "\n"
	 "  --prompt TEXT     the text to continue (default: none, a new document)\n"
	 "  --tokens N        tokens to generate (default 200)\n"
	 "  --temperature T   the softmax's temperature, 0 to 100; 0 is greedy (default 1)\n"
	 "  --top-k K         draw from the K likeliest tokens only (default: all)\n"
	 "  --seed S          the same seed gives the same text (default 1337)\n"
	 "  --seq T           the window: the last T tokens (default: the model's config seq)\n"
	 "  --gpt2 DIR        GPT-2's encoder.json and vocab.bpe are in DIR (default: the directory\n"
	 "                    the checkpoint records); they must be the files it was trained with\n"
	 "\n"
	 "Exit status: 0 generated, 1 a checkpoint or tokenizer that cannot be read or is damaged,\n"
	 "2 bad usage.\n",
	 "--prompt --tokens --temperature --top-k --seed --seq --gpt2", "checkpoint"},
	{"eval", cmd_eval, NULL, "zero-shot evaluation of a checkpoint: WikiText perplexity, LAMBADA accuracy",
	 "usage: mgl eval CHECKPOINT --wikitext wiki.test.tokens [--stride N] [--tp N] [--dp M] [--batch B]\n"
	 "                [--seq T] [--backend cpu|cuda] [--gpt2 DIR] [--json]\n"
	 "       mgl eval CHECKPOINT --lambada lambada_test.jsonl [--tp N] [--dp M] [--batch B] [--seq T]\n"
	 "                [--backend cpu|cuda] [--gpt2 DIR] [--json]\n"
	 "\n"
	 "Evaluates the model of a checkpoint written by `mgl train --save` (the directory or its\n"
	 "checkpoint.safetensors) with the tokenizer it was trained with, as Megatron-LM's paper\n"
	 "reports it (its Table 3; docs/eval.md says what each number means). Nothing is\n"
	 "downloaded: the data sets are files in their published formats.\n"
	 "\n"
	 "--wikitext: WikiText-103's wiki.test.tokens, detokenized as Megatron-LM does, then the\n"
	 "perplexity over windows of T tokens that overlap, each N after the one before, so every\n"
	 "token after the first window is predicted from at least T - N tokens before it. Prints\n"
	 "the loss a token, the perplexity, and the adjusted perplexity: the same summed loss\n"
	 "normalised by the file's original (word-level) tokens.\n"
	 "--lambada: LAMBADA's cloze accuracy: the last word of each text counts as right only\n"
	 "when every one of its tokens is the model's greedy prediction (Megatron-LM's strict form).\n"
	 "\n"
	 "  --stride N        a window advances N tokens (1 to T; default 32, or T / 2 if less)\n"
	 "  --tp N --dp M     the job (threads on the cpu, one GPU each on cuda; default 1 x 1)\n"
	 "  --batch B         windows or texts per forward pass and dp rank (default 8)\n"
	 "  --seq T           the window (default: the model's config seq)\n"
	 "  --backend cpu|cuda the default is cuda where a GPU can be used, else cpu\n"
	 "  --gpt2 DIR        GPT-2's encoder.json and vocab.bpe are in DIR (default: the directory\n"
	 "                    the checkpoint records); they must be the files it was trained with\n"
	 "  --json            one JSON object instead of the sentences\n"
	 "\n"
	 "Exit status: 0 evaluated, 1 a checkpoint, tokenizer or data file that cannot be read or\n"
	 "is damaged, 2 bad usage.\n",
	 "--wikitext --lambada --stride --tp --dp --batch --seq --backend --gpt2 --json", "checkpoint"},
	{"plot", cmd_plot, NULL, "draw a training log: the loss and learning rate against steps (SVG)",
	 "usage: mgl plot metrics.jsonl [-o loss.svg]\n"
	 "\n"
	 "Draws the log that `mgl train --log metrics.jsonl` writes: the training loss at every\n"
	 "step and the validation loss at each evaluation against the steps, and the learning\n"
	 "rate under them, as one SVG file a browser opens. A resumed run's log (appended to)\n"
	 "is drawn as the run that was kept: a step logged again replaces the later ones.\n"
	 "\n"
	 "  -o loss.svg       where to write (default: standard output)\n"
	 "\n"
	 "Exit status: 0 drawn, 1 a log that cannot be read or is not one, or a failed write,\n"
	 "2 bad usage.\n",
	 "-o", "log file"},
	{"export", cmd_export, NULL, "a GPT-2 checkpoint as Hugging Face's GPT2LMHeadModel",
	 "usage: mgl export CHECKPOINT [--hf] -o DIR [--gpt2 DIR]\n"
	 "       mgl export CHECKPOINT [--hf] -o FILE.safetensors\n"
	 "\n"
	 "Writes a checkpoint of models/gpt2.mgl (the directory or its checkpoint.safetensors) in\n"
	 "Hugging Face's GPT-2 format. --hf names that format; it is the only one and the default,\n"
	 "so it may be left out.\n"
	 "\n"
	 "-o DIR (created if missing) gets what transformers' from_pretrained(DIR) loads:\n"
	 "model.safetensors, config.json (GPT2Config: the sizes, heads, layer norm epsilon and\n"
	 "dropout of the model) and, when the model reads GPT-2's tokens, the tokenizer's files\n"
	 "(vocab.json and merges.txt, from the directory the checkpoint recorded or --gpt2 DIR,\n"
	 "and tokenizer_config.json). -o FILE.safetensors gets the tensors alone (so --gpt2 DIR\n"
	 "is refused with it).\n"
	 "\n"
	 "The tensors are under GPT-2's names: Conv1D weights as [in, out], q, k and v fused into\n"
	 "c_attn, the output layer tied to transformer.wte. Optimizer state is left out. Other\n"
	 "models (the README's first.mgl names its layers otherwise) are refused.\n"
	 "\n"
	 "Exit status: 0 written, 1 a checkpoint that cannot be read or is not of models/gpt2.mgl,\n"
	 "or a failed write, 2 bad usage.\n",
	 "--hf -o --gpt2", "checkpoint"},
	{"import", cmd_import, NULL, "a Hugging Face GPT-2 checkpoint as an mgl checkpoint",
	 "usage: mgl import FILE --hf FILE_OR_DIR -o DIR [--preset P] [--set K=V,...]\n"
	 "\n"
	 "Reads a Hugging Face GPT-2 checkpoint (GPT2LMHeadModel's save_pretrained directory:\n"
	 "config.json and model.safetensors, or model.safetensors.index.json and its shards; or\n"
	 "one of those files, config.json beside it) and writes DIR/checkpoint.safetensors, a\n"
	 "checkpoint of the model FILE (models/gpt2.mgl) that `mgl sample` and `mgl train --init\n"
	 "DIR` use. Without --preset, config.json sets the model's sizes (vocab, seq, d, heads,\n"
	 "layers, ffn: as --set would, before --set's own); with --preset they must agree, and the\n"
	 "first difference is named. The tensors are mapped back from GPT-2's names (the table mgl\n"
	 "export uses), F32, F16 or BF16; each must have the shape the model gives it: a missing,\n"
	 "extra or misshapen tensor is named. GPT-2's tokenizer files (vocab.json, merges.txt)\n"
	 "beside it are copied into DIR as encoder.json and vocab.bpe and recorded as `mgl train\n"
	 "--gpt2 DIR` records them. The checkpoint holds weights only: no optimizer state, no step.\n"
	 "\n"
	 MODEL_OPTIONS
	 "  --hf FILE_OR_DIR  the Hugging Face checkpoint (required)\n"
	 "  -o DIR            where to write (created if missing; required)\n"
	 "\n"
	 "Exit status: 0 written, 1 a checkpoint that cannot be read, is damaged or does not match\n"
	 "the model, or a failed write, 2 bad usage.\n",
	 "--hf -o --preset --set", NULL},
	{"bench", cmd_bench, NULL, "time whole training steps: tokens/s, TFLOP/s, MFU, memory, a profile",
	 "usage: mgl bench FILE [--preset P] [--set ...] [--tp N] [--dp M] [--sp] [--batch B] [--seq T]\n"
	 "                 [--zero 0|1] [--recompute none|selective|full] [--accum A [--interleave]]\n"
	 "                 [--steps K] [--warmup W] [--backend cpu|cuda] [--seed S] [--json] [--profile]\n"
	 "                 [--link-gbs G] [--link-us U]\n"
	 "\n"
	 "Runs whole training steps (forward, backward, AdamW) as `mgl train` runs them, on random\n"
	 "tokens drawn from the seed: W untimed steps, then K timed ones. Prints the median time of\n"
	 "a step (and the least and most), tokens/s, TFLOP/s per GPU with FLOPs counted as the\n"
	 "PyTorch baseline counts them (6 N + 12 L d T a token, N = 12 L d^2 + V d), MFU against the\n"
	 "GEMM rate measured on the same device in the same run (cuBLASLt bf16 8192^3 on a GPU; the\n"
	 "cpu backend's GEMM on the cpu), the memory mgl allocated per GPU, and a `RESULT {json}`\n"
	 "line with the baseline's keys (docs/bench.md).\n"
	 "\n"
	 MODEL_OPTIONS
	 "  --tp N --dp M --sp  the job, as mgl train's (one GPU a rank on cuda)\n"
	 "  --zero 1 --recompute M  as mgl train's\n"
	 "  --batch B         sequences per micro-batch and dp rank (default 8)\n"
	 "  --accum A --interleave  micro-batches a step, and two at a time, as mgl train's\n"
	 "  --seq T           sequence length (default: the model's config seq)\n"
	 "  --steps K         timed steps (default 10)\n"
	 "  --warmup W        untimed steps first (default 3: the cuda backend captures its CUDA\n"
	 "                    graphs in the first two)\n"
	 "  --backend cpu|cuda the default is cuda where a GPU can be used, else cpu\n"
	 "  --seed S          the tokens and the initial weights (default 1337)\n"
	 "  --json            one JSON object with every figure instead of the table\n"
	 "  --profile         then K more steps, each step of the plan timed (on a GPU: eager, CUDA\n"
	 "                    events), and the time a step spends by kind: attention, gemm, layernorm,\n"
	 "                    classifier, optimizer, collectives, other; on more than one rank, K\n"
	 "                    more with each collective waited for at once, for its whole time, beside\n"
	 "                    the time mgl explain predicts for them:\n"
	 LINK_OPTIONS
	 "\n"
	 "Exit status: 0 measured, 1 an invalid model or a run that failed, 2 bad usage.\n",
	 "--preset --set --tp --dp --sp --zero --recompute --batch --seq --accum --interleave --steps --warmup --backend --seed --json "
	 "--profile --link-gbs --link-us", NULL},
	{"kernels", cmd_kernels, NULL, "compile the GPU kernels with NVRTC (no GPU needed)",
	 "usage: mgl kernels [PLAN] [--arch sm_XY]\n"
	 "\n"
	 "Compiles kernels/ops.cu, the kernels the cuda backend runs, for an architecture (default\n"
	 "sm_90, the H100) and reports success or NVRTC's log; given a plan (`mgl compile`), the\n"
	 "elementwise chains generated for it too, in the one source a GPU loads for that plan.\n"
	 "Needs no GPU (CI runs it), but an mgl built with the CUDA toolkit: make finds it at\n"
	 "CUDA_HOME (default /usr/local/cuda).\n"
	 "\n"
	 "Exit status: 0 compiled, 1 NVRTC failed, an invalid plan, or this mgl was built without\n"
	 "CUDA, 2 bad usage.\n",
	 "--arch", "[plan]"},
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

/* Every option any command takes: its kind, where it goes, and its largest value. Which
 * command accepts which is the command's `options` string. An option that means something
 * else to one command has a row of its own, for it alone (`only`), first. */
typedef enum { O_STR, O_INT, O_REAL, O_FLAG, O_SET, O_DTYPE } OptKind;
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
static const struct {
	const char *name;
	OptKind kind;
	size_t at;
	double max;
	const char *only;     /* the command this row is for, or NULL (left out): every other */
} options[] = {
	{"--hf", O_STR, offsetof(Args, hf_path), 0, "import"}, {"--init", O_STR, offsetof(Args, init), 0, NULL},
	{"--preset", O_STR, offsetof(Args, preset), 0},      {"--set", O_SET, offsetof(Args, set), 0},
	{"--dump", O_STR, offsetof(Args, dump), 0},          {"-o", O_STR, offsetof(Args, out), 0},
	{"--tp", O_INT, offsetof(Args, tp), 4096},           {"--dp", O_INT, offsetof(Args, dp), 4096},
	{"--sp", O_FLAG, offsetof(Args, sp), 0},             {"--json", O_FLAG, offsetof(Args, json), 0},
	{"--zero", O_STR, offsetof(Args, zero_s), 0},        {"--recompute", O_STR, offsetof(Args, recompute_s), 0},
	{"--backward", O_FLAG, offsetof(Args, backward), 0}, {"--layers", O_STR, offsetof(Args, layers), 0},
	{"--batch", O_INT, offsetof(Args, batch), 1 << 20},  {"--seq", O_INT, offsetof(Args, seq), 1 << 20},
	{"--dtype", O_DTYPE, offsetof(Args, dtype), 0},      {"--data", O_STR, offsetof(Args, data), 0},
	{"--val", O_STR, offsetof(Args, val), 0},            {"--save", O_STR, offsetof(Args, save), 0},
	{"--resume", O_STR, offsetof(Args, resume), 0},      {"--log", O_STR, offsetof(Args, log), 0},
	{"--tensorboard", O_STR, offsetof(Args, tensorboard), 0},
	{"--backend", O_STR, offsetof(Args, backend), 0},    {"--steps", O_INT, offsetof(Args, steps), 1e12},
	{"--accum", O_INT, offsetof(Args, accum), 1 << 20},  {"--warmup", O_INT, offsetof(Args, warmup), 1e12},
	{"--interleave", O_FLAG, offsetof(Args, interleave), 0},
	{"--seed", O_INT, offsetof(Args, seed), 9e18},       {"--eval-every", O_INT, offsetof(Args, eval_every), 1e12},
	{"--eval-batches", O_INT, offsetof(Args, eval_batches), 1 << 20},
	{"--save-every", O_INT, offsetof(Args, save_every), 1e12},
	{"--save-shards", O_INT, offsetof(Args, save_shards), 99999}, {"--log-every", O_INT, offsetof(Args, log_every), 1e12},
	{"--lr", O_REAL, offsetof(Args, lr), 10},            {"--min-lr", O_REAL, offsetof(Args, min_lr), 10},
	{"--weight-decay", O_REAL, offsetof(Args, weight_decay), 10}, {"--clip", O_REAL, offsetof(Args, clip), 1e6},
	{"--prompt", O_STR, offsetof(Args, prompt), 0},      {"--tokens", O_INT, offsetof(Args, tokens), 1 << 24},
	{"--top-k", O_INT, offsetof(Args, top_k), 1 << 24},  {"--temperature", O_REAL, offsetof(Args, temperature), 100},
	{"--bytes", O_FLAG, offsetof(Args, bytes), 0},       {"--gpt2", O_STR, offsetof(Args, gpt2), 0},
	{"--vocab", O_STR, offsetof(Args, vocab), 0},
	{"--val-fraction", O_REAL, offsetof(Args, val_fraction), 0.5},
	{"--gpus", O_INT, offsetof(Args, gpus), 4096},       {"--arch", O_STR, offsetof(Args, arch), 0},
	{"--hf", O_FLAG, offsetof(Args, hf), 0},             {"--dump-first", O_STR, offsetof(Args, dump_first), 0},
	{"--profile", O_FLAG, offsetof(Args, profile), 0},
	{"--link-gbs", O_REAL, offsetof(Args, link_gbs), 1e6}, {"--link-us", O_REAL, offsetof(Args, link_us), 1e6},
	{"--wikitext", O_STR, offsetof(Args, wikitext), 0},  {"--lambada", O_STR, offsetof(Args, lambada), 0},
	{"--stride", O_INT, offsetof(Args, stride), 1 << 20},
};
#pragma GCC diagnostic pop

static int bad_value(const char *cmd, const char *name, const char *val, double max, bool real)
{
	char b[32];   /* the limit as people write it: 16,777,216 and 1,000,000, but 0.5 */
	if (max == floor(max))
		mgl_commas((int64_t)max, b);
	else
		snprintf(b, sizeof b, "%g", max);
	fprintf(stderr, "mgl: error: %s takes %s from %s to %s, not '%s'\n", name, real ? "a number" : "a whole number",
		real ? "0" : "1", b, val);
	fprintf(stderr, "  hint: see 'mgl %s --help'\n", cmd);
	return 2;
}

/* Whether a command's options (space-separated) include name. */
static bool takes(const Command *cmd, const char *name)
{
	const char *o = cmd->options, *at = o ? strstr(o, name) : NULL;
	size_t len = strlen(name);
	while (at && ((at != o && at[-1] != ' ') || (at[len] != ' ' && at[len] != 0)))
		at = strstr(at + 1, name);
	return at != NULL;
}

/* An option of other commands: which take it ("mgl compile, explain and dot"). */
static int wrong_command(const Command *cmd, const char *name)
{
	const char *takers[NCOMMANDS];
	int n = 0;
	for (int i = 0; i < NCOMMANDS; i++)
		if (takes(&commands[i], name))
			takers[n++] = commands[i].name;
	if (!n)
		return cli_unknown_option(cmd->name, name, cmd->options);
	fprintf(stderr, "mgl: error: mgl %s has no option '%s'\n  hint: it is an option of mgl", cmd->name, name);
	for (int i = 0; i < n; i++)
		fprintf(stderr, "%s%s", i == 0 ? " " : i == n - 1 ? " and " : ", ", takers[i]);
	fprintf(stderr, "; 'mgl %s --help' lists its own\n", cmd->name);
	return 2;
}

/* Options as `--name value` or `--name=value`; flags take no value; positional arguments
 * are the files (most commands take one). */
static int parse_args(const Command *cmd, int argc, char **argv, Args *a)
{
	a->dtype = MGL_BF16;
	a->lr = a->min_lr = a->weight_decay = a->clip = a->temperature = a->val_fraction = a->link_gbs = a->link_us = NAN;
	for (int i = 0; i < argc; i++) {
		char *arg = argv[i];
		if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
			a->help = true;
			return 0;
		}
		if (arg[0] != '-' || arg[1] == 0) {
			if (cmd->arg && !*cmd->arg)
				return usage_error(cmd->name, "unexpected argument '%s': the command takes no file", arg);
			if (a->file)
				return usage_error(cmd->name, "unexpected argument '%s': give one file", arg);
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
		size_t k = 0;
		while (k < sizeof options / sizeof options[0] &&
		       (strcmp(options[k].name, name) || (options[k].only && strcmp(options[k].only, cmd->name))))
			k++;
		if (k == sizeof options / sizeof options[0])
			return cli_unknown_option(cmd->name, name, cmd->options);
		if (!takes(cmd, name))
			return wrong_command(cmd, name);
		char *field = (char *)a + options[k].at;
		if (options[k].kind == O_FLAG) {
			if (eq)
				return usage_error(cmd->name, "option '%s' takes no value", name);
			*(bool *)field = true;
			continue;
		}
		const char *val = eq ? eq + 1 : NULL;
		if (!val) {
			if (i + 1 >= argc)
				return usage_error(cmd->name, "option '%s' needs a value", name);
			val = argv[++i];
		}
		char *end;
		switch (options[k].kind) {
		case O_STR:
			*(const char **)field = val;
			break;
		case O_INT: {
			errno = 0;
			long long v = strtoll(val, &end, 10);
			if (*val < '0' || *val > '9' || *end || errno || v < 1 || (double)v > options[k].max)
				return bad_value(cmd->name, name, val, options[k].max, false);
			*(int64_t *)field = v;
			break;
		}
		case O_REAL: {
			double v = strtod(val, &end);
			if (end == val || *end || !(v >= 0 && v <= options[k].max))
				return bad_value(cmd->name, name, val, options[k].max, true);
			*(double *)field = v;
			break;
		}
		case O_DTYPE:
			if (strcmp(val, "f32") && strcmp(val, "bf16"))
				return usage_error(cmd->name, "--dtype takes f32 or bf16, not '%s'", val);
			a->dtype = !strcmp(val, "f32") ? MGL_F32 : MGL_BF16;
			a->dtype_given = true;
			break;
		case O_SET: {
			size_t old = a->set ? strlen(a->set) : 0;
			char *s = mgl_xrealloc(a->set, old + strlen(val) + 2, "the --set options");
			if (old)
				s[old++] = ',';
			strcpy(s + old, val);
			a->set = s;
			break;
		}
		case O_FLAG:
			break;
		}
		if (!strcmp(name, "--dump") && !strcmp(cmd->name, "check") && strcmp(val, "ast") && strcmp(val, "graph"))
			return usage_error(cmd->name, "--dump takes ast or graph, not '%s'", val);
	}
	if (a->zero_s) {
		if (strcmp(a->zero_s, "0") && strcmp(a->zero_s, "1"))
			return usage_error(cmd->name, "--zero takes 0 or 1 (ZeRO stage 1: the sharded optimizer), not '%s'", a->zero_s);
		a->zero = *a->zero_s == '1';
		if (a->zero && a->dp < 2)
			return usage_error(cmd->name, "--zero 1 shards the optimizer over the data-parallel ranks: it needs "
				"--dp 2 or more%s", "");
	}
	if (a->recompute_s) {
		int k = 0;
		while (k < 3 && strcmp(a->recompute_s, mgl_recompute_name[k]))
			k++;
		if (k == 3)
			return usage_error(cmd->name, "--recompute takes none, selective or full, not '%s'", a->recompute_s);
		a->recompute = (MglRecompute)k;
	}
	/* mgl train --init DIR may take the model from the checkpoint */
	if (!a->file && !(cmd->arg && (!*cmd->arg || *cmd->arg == '[')) && !(a->init && cmd->run == cmd_train))
		return usage_error(cmd->name, "no %s given", cmd->arg ? cmd->arg : "model file");
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		if (argc >= 3 && !strcmp(argv[1], "help")) {
			for (int i = 0; i < NCOMMANDS; i++)
				if (!strcmp(argv[2], commands[i].name)) {
					if (commands[i].raw)
						return commands[i].raw(2, (char *[]){argv[2], "--help", NULL});
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
		if (commands[i].raw)
			return commands[i].raw(argc - 1, argv + 1);
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
