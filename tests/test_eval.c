/* tests/test_eval.c — Check suites for the data side of zero-shot evaluation
 * (runtime/eval.c): WikiText's detokenization held to tests/data/eval/wiki.detok.txt (what
 * Megatron-LM's own Python detokenizer writes for wiki.test.tokens) and to hand-worked
 * cases of each rule, its original-token count, LAMBADA's JSON lines (the texts, and every
 * malformed line refused with file:line:column) and the strict split of a text into its
 * context and last word. The forward passes are tested end to end by tests/cli_eval.sh.
 * Runs from the repository root.
 */
#include "runtime.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

#define DATA "tests/data/eval/"

static char *detok(const char *s)
{
	size_t n;
	char *d = rt_wikitext_detok(s, strlen(s), &n);
	ck_assert_ptr_nonnull(d);
	ck_assert_uint_eq(strlen(d), n);
	return d;
}

#define ck_detok(in, want) do {                    \
	char *d_ = detok(in);                          \
	ck_assert_str_eq(d_, want);                    \
	free(d_);                                      \
} while (0)

START_TEST(wikitext_matches_megatron)
{
	char err[512];
	size_t n, dn, wn;
	char *text = mgl_read_whole(DATA "wiki.test.tokens", 1 << 20, "test files", &n, err, sizeof err);
	char *want = mgl_read_whole(DATA "wiki.detok.txt", 1 << 20, "test files", &wn, err, sizeof err);
	ck_assert_ptr_nonnull(text);
	ck_assert_ptr_nonnull(want);
	char *got = rt_wikitext_detok(text, n, &dn);
	ck_assert_ptr_nonnull(got);
	ck_assert_uint_eq(dn, wn);
	ck_assert_mem_eq(got, want, wn);
	/* len(text.strip().split(" ")) in Python */
	ck_assert_int_eq(rt_wikitext_words(text, n), 180);
	free(text);
	free(want);
	free(got);
}
END_TEST

START_TEST(wikitext_rules)
{
	/* the number separators, and punctuation closed up to the word before it */
	ck_detok("a 1 @,@ 000 @.@ 5 km @-@ long road , then : stop ; go . Now ! Why ? ok",
		 "a 1,000.5 km-long road, then: stop; go. Now! Why? ok");
	/* brackets and quotes lose the white space inside them, the first close after an open */
	ck_detok("( a b ) [ c ] { d } \" e \" ' f '", "(a b) [c] {d} \"e\" 'f'");
	ck_detok("( ( a ) )", "(( a) )");
	ck_detok("( unclosed", "( unclosed");
	/* Unicode white space counts inside brackets (Python's \s), U+00A0 here */
	ck_detok("( \xC2\xA0x\xC2\xA0 )", "(x)");
	/* headings, the degree sign, line ends, " N " and possessives */
	ck_detok(" = = = = H = = = = \n", " ==== H ====\n");
	ck_detok("= = = H = = =", "=== H ===");
	ck_detok("15 \xC2\xB0 C", "15\xC2\xB0""C");
	ck_detok("a \n b", "a\nb");
	ck_detok("cost N million", "cost 1 million");
	ck_detok("Boulter 's actors ' guild", "Boulter's actors' guild");
	ck_detok("the actors ' guild", "the actors' guild");
	/* replacements do not overlap, left to right, as str.replace */
	ck_detok("a , , b", "a, , b");
	ck_detok("", "");
	/* the Megatron regex for "/' 9/" is left out: such text stays */
	ck_detok("x /' 9/ y", "x /' 9/ y");
}
END_TEST

START_TEST(wikitext_words)
{
	ck_assert_int_eq(rt_wikitext_words("", 0), 1);
	ck_assert_int_eq(rt_wikitext_words(" \n ", 3), 1);
	ck_assert_int_eq(rt_wikitext_words(" a b \n c \n", 10), 4);   /* a, b, \n, c */
	ck_assert_int_eq(rt_wikitext_words("a  b", 4), 3);           /* "a", "", "b" */
	ck_assert_int_eq(rt_wikitext_words("\xC2\xA0" "a b\xE2\x80\x83", 8), 2);   /* strip()ped of U+00A0, U+2003 */
}
END_TEST

static RtLambada parse(const char *text, int ok, const char *msg)
{
	RtLambada l;
	char err[512];
	int rc = rt_lambada_parse(text, strlen(text), "l.jsonl", &l, err, sizeof err);
	ck_assert_msg(rc == (ok ? 0 : -1), "%s: %s", text, rc ? err : "accepted");
	if (!ok)
		ck_assert_msg(strstr(err, msg), "expected '%s' in: %s", msg, err);
	return l;
}

START_TEST(lambada_reads_lines)
{
	RtLambada l = parse("{\"text\": \"a b\"}\n\n  \n{\"id\": [1, {\"x\": null}], \"text\": \"\\u00e9 \\\"q\\\"\\n\", \"k\": false}\r\n"
			    "{\"text\": \"last\"}", 1, NULL);
	ck_assert_int_eq(l.n, 3);
	ck_assert_str_eq(l.ex[0].text, "a b");
	ck_assert_int_eq(l.ex[0].line, 1);
	ck_assert_str_eq(l.ex[1].text, "\xC3\xA9 \"q\"\n");
	ck_assert_uint_eq(l.ex[1].len, 7);
	ck_assert_int_eq(l.ex[1].line, 4);
	ck_assert_str_eq(l.ex[2].text, "last");
	ck_assert_int_eq(l.ex[2].line, 5);
	rt_lambada_free(&l);
	char err[512];
	ck_assert_int_eq(rt_lambada_read(DATA "lambada_test.jsonl", &l, err, sizeof err), 0);
	ck_assert_int_eq(l.n, 8);
	ck_assert_str_eq(l.ex[5].text, "my friend reads a book");
	ck_assert_str_eq(l.ex[6].text, "  a dog ran to the\tpark \n");
	rt_lambada_free(&l);
	ck_assert_int_eq(rt_lambada_read(DATA "missing.jsonl", &l, err, sizeof err), -1);
	ck_assert_ptr_nonnull(strstr(err, DATA "missing.jsonl: cannot open"));
}
END_TEST

START_TEST(lambada_refuses_bad_lines)
{
	parse("", 0, "l.jsonl: no examples: the file is empty");
	parse("\n \n", 0, "l.jsonl: no examples");
	parse("{\"text\": \"a\"}\n[1]\n", 0, "l.jsonl:2:1: expected '{'");
	parse("{\"text\": \"a\"", 0, "l.jsonl:1:13: the line ends early");
	parse("{\"text\": \"a\"}\n{\"text\": \"a\n\"}", 0, "l.jsonl:2:10:");
	parse("{\"text\": 1}", 0, "l.jsonl:1:10: \"text\" must be a string");
	parse("{\"text\": \"a\", \"text\": \"b\"}", 0, "l.jsonl:1:15: \"text\" is given twice");
	parse("{\"other\": \"a\"}", 0, "l.jsonl:1:1: no \"text\"");
	parse("{\"text\": \"a\"} x", 0, "l.jsonl:1:15: text after the object");
	parse("{\"text\": \"a\", \"x\": tru}", 0, "l.jsonl:1:20: expected a value");
	parse("{\"x\": [[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]], \"text\": \"a\"}", 0, "values nested more than 16 deep");
	parse("{\"text\": \"\xff\"}", 0, "l.jsonl:1:11:");
}
END_TEST

static void split(const char *text, const char *ctx, const char *word)
{
	size_t cs, ce, ws, we;
	ck_assert_int_eq(rt_lambada_split(text, strlen(text), &cs, &ce, &ws, &we), 0);
	ck_assert_msg(ce - cs == strlen(ctx) && !memcmp(text + cs, ctx, ce - cs), "%s: context '%.*s'", text,
		      (int)(ce - cs), text + cs);
	ck_assert_msg(we - ws == strlen(word) && !memcmp(text + ws, word, we - ws), "%s: word '%.*s'", text,
		      (int)(we - ws), text + ws);
}

START_TEST(lambada_strict_split)
{
	split("he said hello", "he said", "hello");
	split("  he said\t\nhello  \n", "he said", "hello");
	split("one", "", "one");
	split(" one ", "", "one");
	split("a \xC2\xA0 b\xE2\x80\x83", "a", "b");   /* Unicode white space, as str.split() */
	split("it's Mr. Smith's", "it's Mr.", "Smith's");
	size_t cs, ce, ws, we;
	ck_assert_int_eq(rt_lambada_split(" \n\t", 3, &cs, &ce, &ws, &we), -1);
	ck_assert_int_eq(rt_lambada_split("", 0, &cs, &ce, &ws, &we), -1);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("eval");
	TCase *wiki = tcase_create("wikitext"), *lambada = tcase_create("lambada");
	tcase_add_test(wiki, wikitext_matches_megatron);
	tcase_add_test(wiki, wikitext_rules);
	tcase_add_test(wiki, wikitext_words);
	tcase_add_test(lambada, lambada_reads_lines);
	tcase_add_test(lambada, lambada_refuses_bad_lines);
	tcase_add_test(lambada, lambada_strict_split);
	suite_add_tcase(s, wiki);
	suite_add_tcase(s, lambada);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
