/* cli/tokenize.c — `mgl tokenize`: text files to the token shards `mgl train` reads.
 *
 * Each input is one document, followed by <|endoftext|> when the tokenizer has one (GPT-2;
 * the byte tokenizer has none), so a model learns where documents end. With --bert the
 * output is a BERT stream instead (runtime/bert_data.c, rt_bert_encode): documents at blank
 * lines and at each input's end, sentences, and [SEP] marking the ends of both. The ids go
 * into a shard (runtime/data.c), and with --val-fraction F the last F of them into a
 * second one for validation (for BERT, at the document boundary nearest that point).
 * Nothing is written unless every input was read and tokenized.
 *
 * Inputs are read in blocks, and GPT-2's text is encoded up to a point where cutting it
 * cannot change the ids (see cut_point), BERT's up to a blank line, so memory holds the
 * output shard, not the corpus.
 *
 * The command parses its own arguments: cmd_tokenize(argc, argv) with argv[0] the command
 * name, as main() gets them. Exit status: 0 written, 1 an input, tokenizer or write that
 * failed, 2 bad usage.
 */
#include "cli.h"
#include "../runtime/runtime.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
	"usage: mgl tokenize INPUT... -o OUT.bin [--bytes | --gpt2 DIR | --bert [--vocab FILE]]\n"
	"                    [--val-fraction F]\n"
	"\n"
	"Tokenizes text files into a token shard for `mgl train --data`: llm.c's .bin layout, a\n"
	"1024-byte header and then the ids as uint16. Each INPUT is one document ('-' is standard\n"
	"input); with --gpt2 each is followed by <|endoftext|> (id 50256). Prints one line: the\n"
	"tokens and the files written.\n"
	"\n"
	"  -o OUT.bin        where to write the tokens (required)\n"
	"  --bytes           ids are the bytes, 0..255 (the default)\n"
	"  --gpt2 DIR        GPT-2's BPE from DIR/encoder.json and DIR/vocab.bpe; the script\n"
	"                    examples/fetch_gpt2_tokenizer.sh DIR fetches them\n"
	"  --bert            for BERT's pre-training: documents end at blank lines and at the\n"
	"                    end of each INPUT, sentences after . ! or ? and white space; each\n"
	"                    sentence's ids are followed by [SEP], and each document by one more.\n"
	"                    Without --vocab the ids are the bytes, then [PAD] 256, [UNK] 257,\n"
	"                    [CLS] 258, [SEP] 259 and [MASK] 260 (a vocabulary of 261)\n"
	"  --vocab FILE      with --bert: WordPiece from a BERT vocab.txt (one token a line, the\n"
	"                    id its line number from 0, with [PAD] [UNK] [CLS] [SEP] [MASK]),\n"
	"                    encoding as BERT's uncased tokenizer does (lower case, no accents)\n"
	"  --val-fraction F  put the last F of the tokens (0 to 0.5; default 0, none) in\n"
	"                    OUT.val.bin, for `mgl train --val`, and the rest in OUT.bin (with\n"
	"                    --bert, whole documents: the split is at the nearest document end)\n"
	"\n"
	"Exit status: 0 written, 1 an unreadable input or tokenizer or a failed write, 2 bad usage.\n";


typedef struct {
	RtTokenizer *tok;
	const char *tok_name;
	bool bert;
	RtBertVocab bv;        /* with bert */
	uint16_t *out;         /* every token so far */
	int64_t n, cap;
	int32_t *ids;          /* one block's ids */
	size_t nids, ids_cap;
	int64_t bytes;         /* of text read */
} Run;

/* Appends one id to r->out, checking that it fits a uint16. */
static int put(Run *r, int32_t id, const char *name)
{
	/* a shard stores uint16: a vocabulary past 65536 cannot go into one */
	if (id < 0 || id > UINT16_MAX) {
		fprintf(stderr, "mgl: error: token id %ld (in '%s') does not fit a shard, whose ids are uint16 (the "
			"tokenizer has %s)\n", (long)id, name, mgl_commas(rt_tok_vocab(r->tok), (char[32]){0}));
		return 1;
	}
	if (r->n == r->cap) {
		int64_t ncap = r->cap ? 2 * r->cap : 1 << 20;
		uint16_t *p = realloc(r->out, (size_t)ncap * sizeof *p);
		if (!p) {
			char b[32];
			fprintf(stderr, "mgl: error: out of memory holding %s tokens\n", mgl_commas(ncap, b));
			return 1;
		}
		r->out = p;
		r->cap = ncap;
	}
	r->out[r->n++] = (uint16_t)id;
	return 0;
}

/* Appends the ids of text[0..len) to r->out. */
static int encode(Run *r, const char *text, size_t len, const char *name)
{
	r->nids = 0;
	if (r->bert ? rt_bert_encode(r->tok, &r->bv, text, len, &r->ids, &r->nids, &r->ids_cap) :
		      rt_tok_encode(r->tok, text, len, &r->ids, &r->nids, &r->ids_cap)) {
		fprintf(stderr, "mgl: error: out of memory tokenizing '%s'\n", name);
		return 1;
	}
	for (size_t i = 0; i < r->nids; i++)
		if (put(r, r->ids[i], name))
			return 1;
	return 0;
}

/* Where GPT-2's text[0..len) can be cut so that encoding the two parts apart gives the
 * ids of the whole: just before a '\n' that follows a byte which is ASCII and not white
 * space. Every pre-token before that byte ends by it, the one holding it ends there (a
 * newline joins no run of letters, numbers or symbols), and the white space that starts
 * at the newline is matched the same whatever precedes it. The last such point at or after
 * `from` (the text before it has none), or 0. */
static size_t cut_point(const char *text, size_t from, size_t len)
{
	for (size_t i = len; i-- > (from ? from : 1);) {
		unsigned char prev = (unsigned char)text[i - 1];
		if (text[i] == '\n' && prev < 0x80 && prev != ' ' && !(prev >= '\t' && prev <= '\r'))
			return i;
	}
	return 0;
}

/* Where BERT's text[0..len) can be cut: at the start of the last blank line (a line of
 * nothing but white space) after `from`, where a document ends whatever follows; or 0. */
static size_t bert_cut(const char *text, size_t from, size_t len)
{
	for (size_t i = len; i-- > (from ? from : 1);) {
		if (text[i] != '\n')
			continue;
		size_t j = i;
		while (j > 0 && (text[j - 1] == ' ' || text[j - 1] == '\t' || text[j - 1] == '\r' || text[j - 1] == '\f' ||
				 text[j - 1] == '\v'))
			j--;
		if (j > 0 && text[j - 1] == '\n')
			return j;
	}
	return 0;
}

enum { BLOCK = 16 << 20 };

/* Reads one input in blocks and appends its tokens, then the end-of-text id if any. */
static int tokenize_file(Run *r, const char *name, bool gpt2)
{
	bool in = !strcmp(name, "-");
	FILE *f = in ? stdin : fopen(name, "rb");
	if (!f) {
		fprintf(stderr, "mgl: error: %s: cannot open: %s\n", name, strerror(errno));
		return 1;
	}
	char *buf = NULL;
	size_t have = 0, cap = 0;
	int st = 0;
	for (;;) {
		if (cap - have < BLOCK) {
			size_t ncap = cap ? 2 * cap : 2 * (size_t)BLOCK;
			char *p = realloc(buf, ncap);
			if (!p) {
				fprintf(stderr, "mgl: error: out of memory reading '%s'\n", name);
				st = 1;
				break;
			}
			buf = p;
			cap = ncap;
		}
		size_t old = have, got = fread(buf + have, 1, BLOCK, f);
		have += got;
		r->bytes += (int64_t)got;
		if (ferror(f)) {
			fprintf(stderr, "mgl: error: %s: cannot read: %s\n", name, strerror(errno));
			st = 1;
			break;
		}
		if (feof(f)) {
			st = encode(r, buf, have, name);
			break;
		}
		/* bytes can be cut anywhere; GPT-2's text where cut_point says, BERT's at a blank
		 * line, and if a block has no such point the text waits for the next */
		size_t cut = gpt2 ? cut_point(buf, old, have) : r->bert ? bert_cut(buf, old, have) : have;
		if (cut) {
			if ((st = encode(r, buf, cut, name)))
				break;
			memmove(buf, buf + cut, have - cut);
			have -= cut;
		}
	}
	free(buf);
	if (!in)
		fclose(f);
	/* the end-of-text id after each document, where the tokenizer has one */
	if (!st && rt_tok_eot(r->tok) >= 0)
		st = put(r, rt_tok_eot(r->tok), name);
	return st;
}

/* The end of a BERT document (just after its closing [SEP] [SEP]) nearest r->out[at]; 0
 * or r->n when the stream holds one document. */
static int64_t bert_split(const Run *r, int64_t at)
{
	int64_t sep = r->bv.sep;
	for (int64_t d = 0; at - d > 0 || at + d < r->n; d++) {
		for (int k = -1; k <= 1; k += 2) {
			int64_t i = at + k * d;   /* a cut before r->out[i] */
			if (i >= 2 && i < r->n && r->out[i - 1] == sep && r->out[i - 2] == sep)
				return i;
		}
	}
	return 0;
}

/* An option's value: "--name value" or "--name=value"; NULL after a usage error. */
static const char *value(int argc, char **argv, int *i, const char *name, int *st)
{
	const char *arg = argv[*i], *eq = strchr(arg, '=');
	if (eq)
		return eq + 1;
	if (*i + 1 >= argc) {
		*st = usage_error("tokenize", "option '%s' needs a value", name);
		return NULL;
	}
	return argv[++*i];
}

/* OUT.bin -> OUT.val.bin (malloc'd); NULL when out does not end in .bin. */
static char *val_path(const char *out)
{
	size_t n = strlen(out);
	if (n < 4 || strcmp(out + n - 4, ".bin"))
		return NULL;
	char *p = mgl_xmalloc(n + 5, "the validation file's name");
	sprintf(p, "%.*s.val.bin", (int)(n - 4), out);
	return p;
}

RtTokenizer *cli_gpt2(const char *dir, const char *hint)
{
	char err[1024];
	RtTokenizer *t = rt_tok_gpt2(dir, err, sizeof err);
	if (!t)
		fprintf(stderr, "mgl: error: %s\n  hint: %s\n", err,
			hint ? hint : "examples/fetch_gpt2_tokenizer.sh DIR fetches GPT-2's encoder.json and vocab.bpe into DIR");
	return t;
}

RtTokenizer *cli_ckpt_gpt2(const char *gpt2, const char *tok, const char *sha, const char *path, const char **dir_out)
{
	const char *dir = gpt2 ? gpt2 : tok && !strncmp(tok, "gpt2:", 5) ? tok + 5 : NULL;
	if (!dir) {
		fprintf(stderr, "mgl: error: %s was trained on GPT-2 tokens and does not say where the tokenizer is\n"
			"  hint: give --gpt2 DIR, the directory with its encoder.json and vocab.bpe\n", path);
		return NULL;
	}
	char hint[1200];
	snprintf(hint, sizeof hint, "the checkpoint was trained with the tokenizer in %s; give --gpt2 DIR, the directory "
		 "that holds its encoder.json and vocab.bpe now", dir);
	RtTokenizer *t = cli_gpt2(dir, gpt2 ? NULL : hint);
	if (t && sha && strcmp(sha, rt_tok_digest(t))) {   /* sha: two digests, checked when read */
		fprintf(stderr, "mgl: error: %s/encoder.json and vocab.bpe are not the files %s was trained with (their SHA-256 "
			"are %.64s and %.64s; the checkpoint's, %.64s and %.64s)\n  hint: give --gpt2 DIR with the files it "
			"was trained with\n", dir, path, rt_tok_digest(t), rt_tok_digest(t) + 65, sha, sha + 65);
		rt_tok_free(t);
		return NULL;
	}
	if (dir_out)
		*dir_out = dir;
	return t;
}

int cmd_tokenize(int argc, char **argv)
{
	const char *out = NULL, *gpt2 = NULL, *vocab = NULL;
	bool bytes = false, bert = false, only_files = false;
	double frac = 0;
	const char **inputs = calloc((size_t)argc + 1, sizeof *inputs);
	int ninputs = 0, st = 0;
	if (!inputs) {
		fprintf(stderr, "mgl: error: out of memory\n");
		return 1;
	}
	for (int i = 1; i < argc && !st; i++) {
		const char *arg = argv[i];
		size_t len = strcspn(arg, "=");
		if (only_files || arg[0] != '-' || !strcmp(arg, "-")) {
			inputs[ninputs++] = arg;
		} else if (!strcmp(arg, "--")) {
			only_files = true;
		} else if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
			fputs(usage, stdout);
			free(inputs);
			return 0;
		} else if (!strcmp(arg, "--bytes")) {
			bytes = true;
		} else if (len == 2 && !strncmp(arg, "-o", 2)) {
			out = value(argc, argv, &i, "-o", &st);
		} else if (len == 6 && !strncmp(arg, "--gpt2", 6)) {
			gpt2 = value(argc, argv, &i, "--gpt2", &st);
		} else if (!strcmp(arg, "--bert")) {
			bert = true;
		} else if (len == 7 && !strncmp(arg, "--vocab", 7)) {
			vocab = value(argc, argv, &i, "--vocab", &st);
		} else if (len == 14 && !strncmp(arg, "--val-fraction", 14)) {
			const char *v = value(argc, argv, &i, "--val-fraction", &st);
			char *end;
			if (v && (frac = strtod(v, &end), end == v || *end || !(frac >= 0 && frac <= 0.5)))
				st = usage_error("tokenize", "--val-fraction takes a number from 0 to 0.5, not '%s'", v);
		} else {
			st = cli_unknown_option("tokenize", arg, "-o --bytes --gpt2 --bert --vocab --val-fraction --help");
		}
	}
	char *val = NULL;
	if (!st && !ninputs)
		st = usage_error("tokenize", "no input files given%s", "");
	else if (!st && !out)
		st = usage_error("tokenize", "no output given: -o OUT.bin%s", "");
	else if (!st && bytes + !!gpt2 + bert > 1)
		st = usage_error("tokenize", "%s exclude each other: give one tokenizer", bytes && gpt2 ? "--bytes and --gpt2" :
				 bytes ? "--bytes and --bert" : "--gpt2 and --bert");
	else if (!st && vocab && !bert)
		st = usage_error("tokenize", "--vocab is BERT's WordPiece vocabulary: it goes with --bert%s", "");
	else if (!st && frac > 0 && !(val = val_path(out)))
		st = usage_error("tokenize", "with --val-fraction, -o must end in .bin (the validation tokens go to "
				 "OUT.val.bin), not '%s'", out);
	if (st) {
		free(inputs);
		return st;
	}

	char err[1024];
	Run r = {.tok_name = gpt2 ? "gpt2" : vocab ? "bert, WordPiece" : bert ? "bert, bytes" : "bytes", .bert = bert};
	if (vocab && !(r.tok = rt_tok_wordpiece(vocab, err, sizeof err)))
		fprintf(stderr, "mgl: error: %s\n", err);
	else if (!vocab)
		r.tok = gpt2 ? cli_gpt2(gpt2, NULL) : bert ? rt_tok_bert_bytes() : rt_tok_bytes();
	if (r.tok && bert)
		rt_tok_bert(r.tok, &r.bv);
	if (!r.tok) {
		if (!gpt2 && !vocab)
			fprintf(stderr, "mgl: error: out of memory\n");
		free(inputs);
		free(val);
		return 1;
	}
	for (int i = 0; i < ninputs && !st; i++)
		st = tokenize_file(&r, inputs[i], gpt2 != NULL);
	int64_t nval = 0, ntrain = r.n;
	if (!st && !r.n) {
		fprintf(stderr, "mgl: error: no tokens: the input%s empty%s\n", ninputs > 1 ? "s are" : " is",
			bert ? " or white space" : "");
		st = 1;
	}
	if (!st && frac > 0) {
		/* at least one token each way, or the split is not worth having */
		nval = llround(frac * (double)r.n);
		if (nval < 1)
			nval = 1;
		ntrain = r.n - nval;
		if (bert)
			ntrain = bert_split(&r, ntrain), nval = r.n - ntrain;
		if (ntrain < 1 || nval < 1) {
			fprintf(stderr, "mgl: error: %s token%s%s: too few to split for --val-fraction\n", mgl_commas(r.n, (char[32]){0}),
				r.n == 1 ? "" : "s", bert ? " in one document" : "");
			st = 1;
		}
	}
	if (!st && (ntrain > INT32_MAX || nval > INT32_MAX)) {
		char b[32];
		fprintf(stderr, "mgl: error: %s tokens: a shard holds at most 2,147,483,647; tokenize the inputs in "
			"parts\n", mgl_commas(r.n, b));
		st = 1;
	}
	if (!st && (rt_shard_write(out, r.out, ntrain, err, sizeof err) ||
		    (val && rt_shard_write(val, r.out + ntrain, nval, err, sizeof err)))) {
		fprintf(stderr, "mgl: error: %s\n", err);
		st = 1;
	}
	if (!st) {
		char b1[32], b2[32], b3[32], b4[32];
		printf("%d file%s, %s bytes -> %s token%s", ninputs, ninputs == 1 ? "" : "s", mgl_commas(r.bytes, b1),
		       mgl_commas(r.n, b2), r.n == 1 ? "" : "s");
		if (bert) {   /* a [SEP] ends each sentence, and one more each document */
			int64_t seps = 0, docs = 0;
			for (int64_t i = 0; i < r.n; i++)
				if (r.out[i] == r.bv.sep)
					seps++, docs += i > 0 && r.out[i - 1] == r.bv.sep;
			printf(" in %s document%s of %s sentence%s", mgl_commas(docs, b1), docs == 1 ? "" : "s",
			       mgl_commas(seps - docs, b2), seps - docs == 1 ? "" : "s");
		}
		printf(" (%s): wrote %s (%s token%s)", r.tok_name, out, mgl_commas(ntrain, b3), ntrain == 1 ? "" : "s");
		if (val)
			printf(" and %s (%s token%s)", val, mgl_commas(nval, b4), nval == 1 ? "" : "s");
		printf("\n");
	}
	rt_tok_free(r.tok);
	free(r.out);
	free(r.ids);
	free(inputs);
	free(val);
	return st;
}
