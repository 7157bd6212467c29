/* runtime/runtime.h — the runtime's contract: it executes plans (plan/plan.h) and knows the
 * compiler through nothing else.
 *
 *   data.c        token shards (the llm.c / nanoGPT .bin layout) and the batch loader
 *   tokenizer.c   byte-level, GPT-2 BPE and BERT WordPiece tokenizers
 *   bert_data.c   BERT's pre-training examples: sentence pairs, masked tokens
 *   checkpoint.c  safetensors files: full (unsharded) tensors by name, plus metadata
 *                 (the keys mgl writes, checked when read)
 *   hf.c          GPT-2 as Hugging Face keeps it: the name mapping both ways, config.json,
 *                 sharded checkpoints (model.safetensors.index.json)
 *   json.c        the JSON reader (checkpoints' headers, GPT-2's encoder.json, logs) and UTF-8
 *   io.c          messages, files replaced whole or not at all, bf16 conversion
 *   backend.h     the interface a backend implements (cpu.c; cuda/ later)
 *   exec.c        a job: tp x dp ranks running one plan, one thread per rank (or one
 *                 process per rank, launch.c)
 *   launch.c      processes: the launcher's rank and size, MPI or a TCP rendezvous between them
 *   train.c       the training loop: schedule, accumulation, clipping, evaluation,
 *                 checkpoints, logging, signals
 *   tensorboard.c TensorBoard event files (TFRecords of Event protobufs, by hand)
 *   eval.c        zero-shot evaluation: WikiText perplexity, LAMBADA accuracy (docs/eval.md)
 *
 * Exported names start with rt_ / Rt.
 */
#ifndef MGL_RUNTIME_H
#define MGL_RUNTIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "plan.h"

/* ---------------------------------------------------------------- messages, files, bf16 (io.c) */

/* vsnprintf's message into err, unless err is NULL or errlen 0. */
void rt_errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* A file replaced whole or not at all: written to path RT_TMP_SUFFIX, flushed, synced,
 * renamed over path, and path's directory synced. Messages in err name path, never the
 * temporary file. */
#define RT_TMP_SUFFIX ".tmp"
/* The temporary name of path into buf (n bytes): 0, or -1 if it does not fit. */
int rt_tmp_name(const char *path, char *buf, size_t n);
/* Creates path's temporary file (over a stale one) for writing: the stream, or NULL with
 * err when it cannot be created or path exists and is not a regular file (a directory). */
FILE *rt_atomic_open(const char *path, char *err, size_t errlen);
/* Finishes what rt_atomic_open began: 0 once path is the new file; -1 with err ("cannot
 * write", "cannot sync", "cannot replace"), the temporary file removed and path as it was,
 * or ("written, but syncing its directory failed") with the new file in place. A directory
 * that cannot be synced at all (EINVAL) is not an error. */
int rt_atomic_commit(FILE *f, const char *path, char *err, size_t errlen);
/* Gives up: closes f and removes the temporary file (the caller says why). */
void rt_atomic_abort(FILE *f, const char *path);

/* bf16 is the top half of a float32's bits. n floats to bf16, rounded to the nearest (ties
 * to even): a float beyond bf16's largest finite becomes an infinity, and a NaN stays a
 * NaN (quiet, its sign kept). */
void rt_f32_to_bf16(uint16_t *dst, const float *src, size_t n);
/* n bf16 values to floats, exactly. */
void rt_bf16_to_f32(float *dst, const uint16_t *src, size_t n);

/* ---------------------------------------------------------------- JSON (json.c) */

/* The well-formed UTF-8 sequence at s[0..n), n >= 1, per Unicode's table 3-7 (no overlong
 * forms, no surrogates, nothing past U+10FFFF): its length, with *cp; 0 if there is none. */
int rt_utf8_decode(const unsigned char *s, size_t n, uint32_t *cp);
/* Code point cp (at most U+10FFFF) as UTF-8 into o (4 bytes): its length. */
size_t rt_utf8_encode(unsigned char *o, uint32_t cp);

typedef struct {
	size_t at;            /* the offset in the text the error is at */
	char msg[160];        /* what is wrong, e.g. "a string is not valid UTF-8" */
} RtJsonError;

/* A JSON text being read: n bytes at s, pos the next to read. The calls below skip white
 * space, read at pos and move past what they read; each returns -1 with e when the text is
 * not what was asked for. For expect, more and string, `what` is then the message ("expected
 * ':' after a key"); for the numbers it names the value ("an id": "expected an id"). Where
 * the text ends instead, the message is `ends` (NULL: "the text ends early"). */
typedef struct {
	const unsigned char *s;
	size_t n, pos;
	const char *ends;     /* e.g. "the header ends early" */
	RtJsonError e;
} RtJson;

/* -1, with e: at and the message (for the callers' own errors, in the same form). */
int rt_json_fail(RtJson *j, size_t at, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Skips white space: the next byte, or -1 at the end. */
int rt_json_peek(RtJson *j);
/* The byte c: 0. */
int rt_json_expect(RtJson *j, int c, const char *what);
/* After an element of an array or object closed by close: 1 if another follows (the ','
 * read), 0 at close (read); -1 otherwise, and for a ',' just before close. */
int rt_json_more(RtJson *j, int close, const char *what);
/* A string: 0, each of its characters (a code point, 0..U+10FFFF but never a surrogate, 0
 * included) passed to put (unless NULL) with its offset; put returns 0, or -1 after
 * rt_json_fail, which stops the reading. */
typedef int RtJsonPut(RtJson *j, void *ctx, uint32_t cp, size_t at);
int rt_json_string(RtJson *j, const char *what, RtJsonPut *put, void *ctx);
/* A whole number from 0 to max without sign, fraction or exponent: 0 with *v. what names it
 * in messages: "expected WHAT", "WHAT must be a non-negative integer", "WHAT is more than MAX". */
int rt_json_uint(RtJson *j, const char *what, int64_t max, int64_t *v);
/* Any number (of at most 63 characters): 0 with *v. */
int rt_json_number(RtJson *j, const char *what, double *v);
/* Any value passed over, arrays and objects nested at most max deep: 0, or -1 ("values
 * nested more than MAX deep", or what is wrong with it). */
int rt_json_skip(RtJson *j, int max);

/* ---------------------------------------------------------------- token shards (data.c) */

/* A shard: 256 int32 header (magic 20240520, version 1, token count), then uint16 tokens. */
enum { RT_SHARD_MAGIC = 20240520, RT_SHARD_VERSION = 1, RT_SHARD_HEADER_INTS = 256 };

typedef struct {
	const char *path;
	uint16_t *tokens;     /* malloc'd */
	int64_t ntokens;
} RtShard;

/* Reads and checks a whole shard: missing, empty, truncated, wrong magic or version, a
 * count that disagrees with the file's size are errors (message in err, naming the file). */
int rt_shard_read(const char *path, RtShard *s, char *err, size_t errlen);
/* Writes tokens as a shard, through a temporary file and a rename. */
int rt_shard_write(const char *path, const uint16_t *tokens, int64_t n, char *err, size_t errlen);
void rt_shard_free(RtShard *s);

/* ---------------------------------------------------------------- tokenizers (tokenizer.c) */

typedef struct RtTokenizer RtTokenizer;

RtTokenizer *rt_tok_bytes(void);                                   /* ids 0..255 are the bytes */
/* GPT-2's BPE from a directory holding encoder.json and vocab.bpe (each at most
 * RT_TOK_MAX_FILE_BYTES; GPT-2's are 1 MB and 0.5 MB). */
enum { RT_TOK_MAX_FILE_BYTES = 1 << 30 };
RtTokenizer *rt_tok_gpt2(const char *dir, char *err, size_t errlen);
/* The same from the two files by path (Hugging Face names them vocab.json and merges.txt). */
RtTokenizer *rt_tok_gpt2_files(const char *encoder_json, const char *vocab_bpe, char *err, size_t errlen);
int rt_tok_vocab(const RtTokenizer *t);                            /* 256, 50257, ... */
int rt_tok_eot(const RtTokenizer *t);                              /* <|endoftext|>, or -1 */
/* GPT-2's: the SHA-256 of encoder.json and of vocab.bpe as read, in hex, separated by a
 * space (what sha256sum prints for each); WordPiece's, vocab.txt's; NULL for bytes. */
const char *rt_tok_digest(const RtTokenizer *t);
/* BERT's tokenizers, which have the special tokens BERT's examples need. The byte-level
 * one needs no file: ids 0..255 are the bytes, then [PAD] 256, [UNK] 257, [CLS] 258,
 * [SEP] 259 and [MASK] 260 (so a vocabulary of 261); it never makes [UNK]. WordPiece reads
 * a standard BERT vocab.txt (one token a line, the id its line's number from 0, "##" before
 * a word's continuations), which must hold the five special tokens, no token twice, no
 * empty line, only UTF-8, and at most RT_WORDPIECE_MAX_VOCAB tokens (the ids go into
 * shards as uint16); an error names the file and line. Its encoding is BERT's uncased
 * tokenization.py: lower-casing, accents stripped, split at punctuation and around CJK
 * ideographs, then greedy longest-match-first WordPiece (a word of more than 100 code
 * points, or one it cannot split, is [UNK]). Neither turns text such as "[SEP]" into a
 * special token. */
enum { RT_BERT_BYTES_VOCAB = 261, RT_WORDPIECE_MAX_VOCAB = 65536 };
typedef struct {
	int32_t vocab;                      /* ids are 0..vocab-1 */
	int32_t pad, unk, cls, sep, mask;   /* the special tokens' ids */
} RtBertVocab;
RtTokenizer *rt_tok_bert_bytes(void);
RtTokenizer *rt_tok_wordpiece(const char *path, char *err, size_t errlen);
/* A BERT tokenizer's vocabulary: 0 with *v, or -1 for one that is not BERT's. */
int rt_tok_bert(const RtTokenizer *t, RtBertVocab *v);
/* Appends text's ids to *ids (malloc'd, grown as needed; *n ids, *cap capacity). */
int rt_tok_encode(RtTokenizer *t, const char *text, size_t len, int32_t **ids, size_t *n, size_t *cap);
/* The text of ids (malloc'd, NUL-terminated, *len bytes). WordPiece's tokens are joined
 * by spaces, a "##" continuation without one (and without its "##"); the byte-level BERT
 * vocabulary's special tokens are their names, "[SEP]". */
char *rt_tok_decode(const RtTokenizer *t, const int32_t *ids, size_t n, size_t *len);
void rt_tok_free(RtTokenizer *t);

/* ---------------------------------------------------------------- BERT's examples (bert_data.c) */

/* A BERT token stream: each sentence its ids then [SEP], each document one more [SEP]
 * ("s1 [SEP] s2 [SEP] [SEP] s3 [SEP] [SEP]"); no [PAD], [CLS] or [MASK]. */
typedef struct {
	int64_t start, len;   /* the sentence is tokens[start, start + len) */
	int64_t doc_end;      /* the index of the first sentence after its document */
} RtBertSentence;

typedef struct {
	RtBertVocab v;
	const uint16_t *tokens;   /* the stream (not owned; kept while this is used) */
	int64_t ntokens;
	RtBertSentence *sent;     /* every sentence, in order */
	int64_t nsent;
	int64_t *starts;          /* the sentences an example may start at */
	int64_t nstarts;
} RtBertData;

/* Checks a stream and indexes its sentences: 0, or -1 with err naming `name` (the shard)
 * and saying what is wrong (no tokens, a token beyond v->vocab, a special token other than
 * [SEP], an empty document, an unclosed last document, nothing to make a pair of). */
int rt_bert_open(RtBertData *d, const uint16_t *tokens, int64_t n, const RtBertVocab *v, const char *name,
		 char *err, size_t errlen);
void rt_bert_close(RtBertData *d);

/* One batch, the inputs of models/bert.mgl by name, all row-major int32. */
enum { RT_BERT_IGNORE = -1 };   /* the masked-LM target of a position not chosen */
typedef struct {
	int32_t *tokens;          /* [B, S] [CLS] A [SEP] B [SEP] [PAD]..., some of A and B masked */
	int32_t *segments;        /* [B, S] 0 up to the first [SEP], 1 for B and its [SEP], 0 for padding */
	int32_t *mask;            /* [B, S] 1 for the tokens, 0 for the padding */
	int32_t *mlm_targets;     /* [B, S] the original id where chosen for the masked LM, else RT_BERT_IGNORE */
	int32_t *sop_targets;     /* [B] the sentence-order label: 1 when A and B were swapped, 0 when in order */
} RtBertBatch;

/* Fills out with examples first .. first + B - 1 (sequences of S >= 5): each a pure
 * function of (seed, its index), so any split of the indices over micro-batches and ranks
 * gives the same examples. How they are made: the top of bert_data.c. 0, or -1 with err
 * for S < 5 or B < 1. */
int rt_bert_batch(const RtBertData *d, uint64_t seed, int64_t first, int64_t B, int64_t S, const RtBertBatch *out,
		  char *err, size_t errlen);

/* Appends text's BERT stream to *ids (as rt_tok_encode does; t a BERT tokenizer, v its
 * vocabulary): documents end at blank lines (lines of nothing but white space) and at the
 * end of text; a sentence ends after '.', '!' or '?' (and any closing quotes and brackets
 * after it) where white space follows, and at the end of its document. Each sentence is
 * encoded on its own, its surrounding white space left out; sentences and documents with no
 * ids are left out. 0, or -1 (out of memory) with *n as it was. */
int rt_bert_encode(RtTokenizer *t, const RtBertVocab *v, const char *text, size_t len, int32_t **ids, size_t *n,
		   size_t *cap);

/* ---------------------------------------------------------------- checkpoints (checkpoint.c) */

typedef struct {
	const char *name;
	int rank;
	int64_t shape[MGL_PLAN_MAX_RANK];
	float *data;          /* f32, row-major, the full (unsharded) tensor */
} RtTensor;

typedef struct {
	RtTensor *t;
	int n;
	char **keys, **vals;  /* the safetensors "__metadata__": string to string */
	int nmeta;
	void *buf;            /* owns the memory behind the above */
	void *parts;          /* or, read from shards (rt_ckpt_open), their RtHfCkpt */
} RtCkpt;

/* These return 0, or -1 with a message in err that names the file. */
/* Writes a safetensors file (F32 tensors, metadata) to path.tmp, syncs it, renames it to
 * path and syncs the directory: a crash leaves the old file or the new one, never half. */
int rt_ckpt_write(const char *path, const RtTensor *t, int n, const char *const *keys, const char *const *vals,
		  int nmeta, char *err, size_t errlen);
/* The same bytes to a stream, flushed (not synced, not closed); name is for messages. */
int rt_ckpt_write_stream(FILE *f, const char *name, const RtTensor *t, int n, const char *const *keys,
			 const char *const *vals, int nmeta, char *err, size_t errlen);
/* Reads and checks a safetensors file (every size, offset and name); F32, BF16 and F16
 * tensors, the last two converted to float. */
int rt_ckpt_read(const char *path, RtCkpt *c, char *err, size_t errlen);
/* The same from len bytes in memory (not kept: the RtCkpt owns copies); name is for messages. */
int rt_ckpt_parse(const void *buf, size_t len, const char *name, RtCkpt *c, char *err, size_t errlen);
const RtTensor *rt_ckpt_find(const RtCkpt *c, const char *name);
const char *rt_ckpt_meta(const RtCkpt *c, const char *key);
void rt_ckpt_free(RtCkpt *c);

/* What mgl records in a checkpoint's metadata, so that `mgl sample` and `--resume` can
 * rebuild the model and carry on. Strings are NULL where the key is absent. */
#define RT_CKPT_FORMAT "mgl-checkpoint 1"
typedef struct {
	const char *format;                /* RT_CKPT_FORMAT */
	const char *model;                 /* the model's name: a name as the language has them */
	const char *source;                /* the .mgl file's text */
	const char *preset, *set;          /* as given to mgl train ("": none) */
	const char *tokenizer;             /* "bytes", "gpt2" or "gpt2:DIR", "bert", "wordpiece" or
					      "wordpiece:FILE" (DIR and FILE absolute) */
	const char *tokenizer_sha256;      /* with gpt2 or wordpiece: rt_tok_digest of the files it was
					      trained with */
	bool has_state;                    /* step, adam_t, data_rng and seed are all present */
	int64_t step, adam_t;              /* steps done, AdamW's step count (<= step) */
	uint64_t data_rng, seed;           /* the training windows' stream, --seed */
	bool has_schedule;                 /* steps, warmup, lr and min_lr are all present */
	int64_t steps, warmup;             /* the learning-rate schedule it was trained with */
	double lr, min_lr;
} RtCkptMeta;

/* Reads and checks every key of c's metadata that mgl writes (others are ignored): a
 * value of the wrong form (a negative, fractional or overflowing number, an unknown
 * format or tokenizer, adam_t beyond step) is -1 with err naming path and the key.
 * The strings point into c. */
int rt_ckpt_meta_read(const RtCkpt *c, const char *path, RtCkptMeta *m, char *err, size_t errlen);
/* rt_ckpt_write with m's keys as the metadata (NULL strings, the state's numbers without
 * has_state and the schedule's without has_schedule, left out). */
int rt_ckpt_write_meta(const char *path, const RtTensor *t, int n, const RtCkptMeta *m, char *err, size_t errlen);

/* A checkpoint directory DIR holds one of two forms (docs/train.md, "Checkpoints"):
 * DIR/checkpoint.safetensors, or Hugging Face's shards DIR/model-0000k-of-0000n.safetensors
 * with DIR/model.safetensors.index.json. A sharded save is staged whole in DIR/.saving
 * (its index written last) and then published into DIR by hard links renamed over the old
 * files, the index last; a reader that finds DIR/.saving's index reads the staged save. */
#define RT_CKPT_FILE "checkpoint.safetensors"
#define RT_CKPT_INDEX "model.safetensors.index.json"
#define RT_CKPT_STAGE ".saving"
/* Shards past this many bytes (Hugging Face's default max_shard_size, 5 GB). */
#define RT_CKPT_SHARD_BYTES 5000000000ull

/* Reads the checkpoint at path: a directory in either form, its index, or one
 * safetensors file. Shards must agree on their metadata (the same save's) and hold each
 * tensor the index names, where it says, once. *used: the file read (the index for
 * shards; malloc'd). 0, or -1 with err. */
int rt_ckpt_open(const char *path, RtCkpt *c, char **used, char *err, size_t errlen);
/* How many shards a save of these n tensors takes when the user asks for none (0):
 * one a RT_CKPT_SHARD_BYTES, at least procs (each process writes one), at most n. */
int rt_ckpt_nshards(const RtTensor *t, int n, int procs, int asked);
/* shard_of[i] in [0, nshards): tensors dealt largest first to the lightest shard (ties to
 * the lower index), the same on every process. */
void rt_ckpt_deal(const RtTensor *t, int n, int nshards, int *shard_of);
/* Before a sharded save's shards are written (one process, the others waiting): DIR made
 * if missing, and a save published halfway by a crash finished. */
int rt_ckpt_shards_begin(const char *dir, char *err, size_t errlen);
/* Shard s (of nshards): the tensors dealt to it with m's metadata, written (atomically)
 * to DIR/.saving/model-000(s+1)-of-0000n.safetensors. */
int rt_ckpt_write_shard(const char *dir, const RtTensor *t, int n, const int *shard_of, int nshards, int s,
			const RtCkptMeta *m, char *err, size_t errlen);
/* Once every shard is written (one process): the index, then the save published into DIR
 * and the files of the previous save (checkpoint.safetensors, other shards) removed. */
int rt_ckpt_shards_commit(const char *dir, const RtTensor *t, int n, const int *shard_of, int nshards,
			  char *err, size_t errlen);
/* After DIR/checkpoint.safetensors is written: a sharded save there before it removed. */
int rt_ckpt_single_commit(const char *dir, char *err, size_t errlen);

/* ---------------------------------------------------------------- Hugging Face's GPT-2 (hf.c) */

/* Tensors made from others: t[i] from the tensor named from[i] (all malloc'd). */
typedef struct {
	RtTensor *t;
	char **from;
	int n, cap;
	int layers;           /* the Transformer layers among them */
} RtTensors;
void rt_tensors_free(RtTensors *o);
/* "[64, 192]" into buf (cap bytes): buf. */
const char *rt_shape_str(char *buf, size_t cap, int rank, const int64_t *shape);

/* A checkpoint of models/gpt2.mgl (c, read from path) under GPT2LMHeadModel's names
 * (transformer.h.N.attn.c_attn.weight [in, 3 d], ...): the tensors mgl export writes.
 * Optimizer state is left out. 0, or -1 with err (a tensor missing or misshapen). */
int rt_hf_from_mgl(const RtCkpt *c, const char *path, RtTensors *o, char *err, size_t errlen);
/* The other way: n tensors of a GPT-2 checkpoint (file names them in messages) under
 * models/gpt2.mgl's names, the layers counted from the names. Names with or without
 * "transformer."; the causal-mask buffers (h.N.attn.bias, h.N.attn.masked_bias) passed
 * over; lm_head.weight must equal wte. 0, or -1 with err naming the first tensor that is
 * missing, of the wrong rank or shape, twice, or of no place in GPT-2's layout. */
int rt_hf_to_mgl(const RtTensor *const *t, int n, const char *file, RtTensors *o, char *err, size_t errlen);

/* What mgl reads of a config.json (GPT2Config's names; absent keys are its defaults). */
typedef struct {
	int64_t vocab_size, n_positions, n_embd, n_layer, n_head;   /* each at least 1 */
	int64_t n_inner;                   /* the MLP's width; 0 (null): 4 n_embd */
	double layer_norm_epsilon;
	char activation_function[32], model_type[32];   /* "" model_type: not given */
	bool scale_attn_weights, scale_attn_by_inverse_layer_idx, add_cross_attention;
} RtHfConfig;
/* 0, or -1 with err naming file and the byte or key that is wrong. */
int rt_hf_config_parse(const void *buf, size_t len, const char *file, RtHfConfig *c, char *err, size_t errlen);

/* model.safetensors.index.json: tensor names[i] is in files[file_of[i]], a file name beside
 * the index (never a path: no '/', not "." or ".."). */
typedef struct {
	char **names;
	int *file_of;
	int n, cap;
	char **files;
	int nfiles;
} RtHfIndex;
int rt_hf_index_parse(const void *buf, size_t len, const char *file, RtHfIndex *x, char *err, size_t errlen);
void rt_hf_index_free(RtHfIndex *x);

/* A Hugging Face checkpoint read whole: path is a directory holding
 * model.safetensors.index.json (and its shards) or model.safetensors, or one of those
 * files. t[0..n) are every tensor of every shard, each checked to be where the index says
 * (and the index's every tensor found). 0, or -1 with err. */
typedef struct {
	RtCkpt *shards;
	int nshards;
	const RtTensor **t;
	int n;
} RtHfCkpt;
int rt_hf_read(const char *path, RtHfCkpt *h, char *err, size_t errlen);
void rt_hf_free(RtHfCkpt *h);

/* ---------------------------------------------------------------- TensorBoard (tensorboard.c) */

/* The CRC-32C (Castagnoli) of n bytes, as TFRecord framing checks it ("123456789":
 * 0xE3069283). */
uint32_t rt_crc32c(const void *p, size_t n);

typedef struct RtEvents RtEvents;
typedef struct {
	const char *tag;      /* "lm loss" */
	double value;         /* written as a float */
} RtScalar;

/* A new events file in dir (created, with its missing parents):
 * events.out.tfevents.SECONDS.HOST.PID, with ".N" added where that exists (a file is never
 * overwritten), its first record the file version, its second a SessionLog START at
 * first_step (the first step the run logs), so TensorBoard drops what older files logged
 * from that step on. NULL with err naming the directory or file. */
RtEvents *rt_events_open(const char *dir, int64_t first_step, char *err, size_t errlen);
const char *rt_events_path(const RtEvents *e);
/* One Event: the wall time now, step, and n scalars (a Summary), flushed. 0, or -1 with
 * err naming the file ("cannot write the TensorBoard events file 'P': No space left"). */
int rt_events_write(RtEvents *e, int64_t step, const RtScalar *v, int n, char *err, size_t errlen);
/* Closes e (NULL: nothing): 0, or -1 with err (err may be NULL). */
int rt_events_close(RtEvents *e, char *err, size_t errlen);

/* ---------------------------------------------------------------- zero-shot evaluation (eval.c) */

struct RtJob;

/* WikiText's wiki.test.tokens as Megatron-LM's zero-shot evaluation reads it (docs/eval.md).
 * Its original tokens, as it counts them: the text stripped of white space at both ends,
 * split at every space (so the " \n " between lines counts too); 1 for an empty text. */
int64_t rt_wikitext_words(const char *text, size_t len);
/* The text detokenized by its rules (" @-@ " to "-", " , " to ", ", brackets and quotes
 * closed up, ...): malloc'd, NUL-terminated, *outlen bytes; NULL if out of memory. */
char *rt_wikitext_detok(const char *text, size_t len, size_t *outlen);

/* LAMBADA's lambada_test.jsonl: JSON lines, each an object with a string "text" (other
 * keys are passed over, blank lines skipped), at most RT_EVAL_MAX_FILE_BYTES. An error
 * (a line that is not such an object, a file with none) names FILE:LINE:COLUMN. */
enum { RT_EVAL_MAX_FILE_BYTES = 1 << 30 };
typedef struct {
	char *text;           /* UTF-8, NUL-terminated (it may hold \u0000 too) */
	size_t len;
	int line;             /* in the file, from 1 */
} RtLambadaText;
typedef struct {
	RtLambadaText *ex;
	int64_t n;
} RtLambada;
int rt_lambada_read(const char *path, RtLambada *l, char *err, size_t errlen);
/* The same from len bytes in memory; name is for messages. */
int rt_lambada_parse(const char *buf, size_t len, const char *name, RtLambada *l, char *err, size_t errlen);
void rt_lambada_free(RtLambada *l);
/* Megatron-LM's strict split of a text: the last word is text[word, word_end) (word_end the
 * end of the text without its trailing white space), the context text[ctx_start, ctx_end),
 * what is before the word without white space at either end (empty when the text is one
 * word). -1 for a text of nothing but white space. */
int rt_lambada_split(const char *text, size_t len, size_t *ctx_start, size_t *ctx_end, size_t *word,
		     size_t *word_end);

/* Called after each batch: done of total windows or examples. */
typedef void RtEvalProgress(void *ctx, int64_t done, int64_t total);

/* The perplexity of ids[0..n) under a job opened for a language model (inputs tokens and
 * targets, returning its cross_entropy; the plan's batch B and seq T): overlapping windows
 * of T tokens, each `stride` (1..T) after the one before, dp x B of them a forward pass;
 * every target but the first window's T is counted once, by the window whose last `stride`
 * positions hold it, so it is predicted from at least T - stride tokens. */
typedef struct {
	double loss;          /* nats, summed over the predicted tokens */
	int64_t predicted;    /* n - 1 */
	int64_t windows;
} RtPpl;
int rt_eval_ppl(struct RtJob *j, const int32_t *ids, int64_t n, int64_t stride, RtEvalProgress *progress, void *ctx,
		RtPpl *out, char *err, size_t errlen);

/* Cloze examples: ids[0..n), of which the last `word` (1..T, with at least one before them)
 * are the word to predict. right[e]: every token of example e's word is the greedy
 * prediction (the largest logit; a tie counts) given what comes before it, the example
 * cut to its last T + 1 tokens. */
typedef struct {
	const int32_t *ids;
	int64_t n, word;
} RtCloze;
int rt_eval_cloze(struct RtJob *j, const RtCloze *ex, int64_t n, RtEvalProgress *progress, void *ctx, bool *right,
		  char *err, size_t errlen);

/* ---------------------------------------------------------------- processes (launch.c) */

/* This process's place in a job started by a launcher (mpirun, srun, torchrun;
 * docs/multinode.md): one rank of the job a process. Without one: rank 0 of 1, and a job's
 * ranks are threads of this process. */
typedef struct {
	int rank, size, local_rank;   /* local_rank: on this node (its GPU) */
	const char *launcher;         /* "mpirun", "srun", "torchrun", or "" */
	const char *channel;          /* between the processes: "MPI", or why not and "they meet over TCP" */
} RtProcs;
/* Reads the launcher's variables and, with more than one process, meets the others (MPI,
 * or the rendezvous: a rank missing after MGL_RENDEZVOUS_TIMEOUT seconds is an error naming
 * it). Once a process; later calls return at once. 0, or -1 with err. */
int rt_procs_start(char *err, size_t errlen);
const RtProcs *rt_procs(void);
/* Closes the channel at exit (MPI_Finalize; on the TCP star, once every process is here). */
void rt_procs_end(void);
/* After an error, instead: under MPI, but for mpirun, which does it itself, ends every
 * process of the job (MPI_Abort), which would otherwise wait for this one; on the TCP star
 * this process's exit tells the others. */
void rt_procs_abort(void);

/* ---------------------------------------------------------------- training (train.c) */

struct RtBackend;

/* What rt_train does. The schedule (steps, lr, min_lr, warmup) may be left out: 0, or NAN
 * for the rates. Then a resumed run keeps its checkpoint's, and a fresh one (or a resumed
 * one from a checkpoint that does not record it) takes the defaults: RT_STEPS steps, lr
 * RT_LR, min_lr lr / 10, warmup steps / 10 but at most 100. A schedule given that differs
 * from the checkpoint's is used, and a note says what changed. */
enum { RT_STEPS = 200 };
#define RT_LR 6e-4
typedef struct {
	const char *data, *val;            /* token shards; val may be NULL */
	int64_t steps;                     /* optimizer steps to reach (counting a resumed run's) */
	double lr, min_lr;                 /* peak and final learning rates (cosine between) */
	int64_t warmup;                    /* steps of linear warm-up */
	int64_t stop_at;                   /* stop after this step, keeping the schedule of `steps` (0: no) */
	int64_t accum;                     /* micro-batches per optimizer step */
	bool interleave;                   /* run them two at a time, one's segment beside the other's
					      collectives (docs/train.md, "--interleave") */
	double weight_decay, beta1, beta2, eps, clip;
	uint64_t seed;
	int64_t eval_every, eval_batches;  /* with val; 0: every steps / 10 (at least 1), 8 batches */
	int64_t save_every;                /* 0: save only at the end (and on SIGINT) */
	int save_shards;                   /* --save-shards: 0 as rt_ckpt_nshards decides */
	const char *save_dir, *resume_dir, *log_path;
	const char *init_dir;              /* the weights to start from (not with resume_dir): the AdamW
					      moments zero, step 0, o's seed, schedule and data stream */
	const char *tensorboard;           /* DIR: a TensorBoard events file of each step's scalars */
	/* what a checkpoint records so `mgl sample` and `--resume` can rebuild the model */
	const char *model_name, *model_source, *preset, *set;
	const char *tokenizer;             /* "bytes" or "gpt2:DIR" for a language model, "bert" (BERT's
					      byte vocabulary) or "wordpiece:FILE" for BERT (DIR and FILE
					      absolute); NULL: a resumed run's checkpoint's, else bytes or
					      bert by the model's family */
	const char *tokenizer_sha256;      /* with gpt2 or wordpiece: rt_tok_digest of its files */
	/* what is said, on msgs (stderr; NULL: nothing): a start line once everything is checked,
	 * "resuming from step N", a progress line, the evaluations, and on the cpu, before a
	 * first step of more than a few seconds, how long a step should take */
	FILE *msgs;
	bool progress;                     /* msgs is a terminal: a progress line rewritten every step */
	int64_t log_every;                 /* also a line of its own every N steps (0: off a terminal,
					      one every RT_PROGRESS_SECONDS of training) */
	int64_t nparams;                   /* the model's parameters, for the start line */
	double flops;                      /* a rank's FLOPs per micro-batch, for the estimate (0: none) */
	const char *dump_first;            /* DIR: the initial weights and the first gradients */
} RtTrainOpts;
enum { RT_PROGRESS_SECONDS = 10 };

typedef struct {
	int64_t steps_done;                /* the steps this run trained */
	int64_t last_step;                 /* the step reached (of the whole training, resumed or not) */
	double first_loss, last_loss, val_loss;   /* val_loss: NAN if never evaluated */
	double unigram_loss;               /* the validation loss of predicting token frequencies (a
					      language model's; NAN for BERT) */
	/* BERT's heads (NAN for a language model): the masked-LM loss and the sentence-order
	 * accuracy (0 to 1) of the first and last steps, and of the last evaluation */
	double first_mlm, last_mlm, first_sop_acc, last_sop_acc, val_mlm, val_sop_acc;
	double seconds;
	bool interrupted;
} RtTrainResult;

/* Trains. 0 on success; -1 with err (what was said before it went to o->msgs).
 *
 * SIGINT (Ctrl-C) during training is acknowledged at once on o->msgs: the run stops after
 * the step, evaluates and saves (with save_dir) and returns with res->interrupted. A second
 * SIGINT ends the process at once with status 130, without saving: the checkpoint on disk
 * stays the last whole one (a checkpoint being written is removed, never left half). */
int rt_train(const MglPlan *plan, const struct RtBackend *be, const RtTrainOpts *o, RtTrainResult *res,
	     char *err, size_t errlen);

/* ---------------------------------------------------------------- benchmarks (train.c) */

/* What a backend says of a rank's machine (RtBackend.machine). */
typedef struct {
	char device[128];      /* "NVIDIA H200", or the cpu's model name */
	int64_t allocated;     /* bytes the backend holds for the rank after its steps: the plan's
				  memory and the backend's workspaces, allocated when the rank opens
				  (so also the most it held) */
	int64_t device_used;   /* bytes in use on the device by everything (the CUDA context,
				  NCCL's buffers, other processes): cudaMemGetInfo; -1 on the cpu */
	double gemm_flops;     /* the FLOP/s its GEMMs reach on this device, measured now; 0 if it
				  could not be measured */
	char gemm_what[192];   /* how it was measured, or why it could not be */
} RtMachine;

/* What rt_bench runs: `warmup` steps (the cuda backend captures its CUDA graphs in the
 * first two), `steps` timed ones, and with profile as many again, each plan step timed
 * (RtRank.step_seconds: eager, one event per step on the cuda backend), and on more than
 * one rank as many again with the collectives waited for at once (alone_s). */
typedef struct {
	int64_t warmup, steps;
	bool profile;
} RtBenchOpts;

typedef struct {
	double *step_s;         /* [steps] each timed step's seconds, by the host clock, as rt_train
				   times a step (for its tokens/s): feeding the batch to the loss read back */
	double *fwdbwd_s;       /* [steps] the forward and backward passes' part of it */
	double loss;            /* the last timed step's */
	double *profiled_s;     /* with profile, [steps]: each profiled step's seconds */
	double *op_s;           /* with profile, [plan->nsteps]: rank 0's seconds in each plan step
				   (a fused group's at its first), summed over the profiled steps */
	double *alone_s;        /* with profile and more than one rank, [plan->nsteps]: op_s of as
				   many steps again with each collective waited for at once
				   (RtRank.collectives_at_once), so a collective's entry is its whole
				   time, not only what the compute beside it left exposed; else NULL */
	RtMachine machine;      /* rank 0's (zero if its backend cannot say) */
} RtBenchResult;

/* Whole training steps, as rt_train runs them with o (its seed, accum, optimizer, and
 * schedule: by default that of warmup + steps (x 2 with profile) steps), on the tokens of
 * o->data or, without it, synthetic ones: drawn from o->seed, uniform below the model's
 * vocabulary (for BERT, a stream of random sentences with the vocabulary's top five ids as
 * the special tokens, fresh examples every step). Nothing is said or written. 0, or -1 with err; rt_bench_free frees the
 * result either way. */
int rt_bench(const MglPlan *plan, const struct RtBackend *be, const RtTrainOpts *o, const RtBenchOpts *b,
	     RtBenchResult *res, char *err, size_t errlen);
void rt_bench_free(RtBenchResult *res);

#endif
