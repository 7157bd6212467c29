#!/usr/bin/env python3
"""scripts/gen_unicode_tables.py — writes runtime/unicode_tables.h, the code point classes
that GPT-2's pre-tokenization regex needs: \\p{L} (letters), \\p{N} (numbers) and \\s; and
what BERT's BasicTokenizer needs: punctuation, control characters, its white space, and
the folding of lower-casing plus accent stripping.

The GPT-2 tokenizer (runtime/tokenizer.c) matches the regex by hand, so it needs to know,
for any code point, whether it is a letter, a number, white space or something else.
Letters and numbers come from Python's unicodedata (general categories L* and N*); white
space is Unicode's White_Space property, which is what \\s means in the `regex` module
that OpenAI's encoder.py uses. unicodedata has no White_Space, so the list is written out
below (from PropList.txt) and checked against str.isspace(), which differs from it only by
the four separators U+001C..U+001F.

BERT's BasicTokenizer (tokenization.py in google-research/bert, and Hugging Face's copy)
works on Python strings: it drops control characters (Cc, Cf; not tab, newline, carriage
return), turns white space (those three, space and Zs) into spaces, splits on str.split()'s
white space (which adds U+2028 and U+2029), lower-cases a word with str.lower(), takes its
NFD and drops the nonspacing marks (Mn), and splits at punctuation (P*, and the ASCII
symbols). The C side (runtime/tokenizer.c) folds a code point at a time: uni_fold holds
strip(NFD(lower(c))) for every code point where that is neither c nor empty, uni_mn the
ones it empties, and Hangul syllables decompose by arithmetic. Two things are not per code
point: str.lower() makes a capital sigma final (U+03C2) by its neighbours, for which
uni_cased and uni_case_ignorable are measured from str.lower() itself; and NFD's canonical
reordering, which after the Mn are gone can only swap two of the 25 spacing marks with a
combining class (Mc), and is not done.

Usage: python3 scripts/gen_unicode_tables.py > runtime/unicode_tables.h
The output depends only on unicodedata.unidata_version, which it records.
"""
import sys
import unicodedata

# PropList.txt, White_Space (unchanged since Unicode 6.3).
WHITE_SPACE = [(0x09, 0x0D), (0x20, 0x20), (0x85, 0x85), (0xA0, 0xA0), (0x1680, 0x1680),
               (0x2000, 0x200A), (0x2028, 0x2029), (0x202F, 0x202F), (0x205F, 0x205F),
               (0x3000, 0x3000)]


def ranges(pred):
    out = []
    for cp in range(0x110000):
        if pred(cp):
            if out and out[-1][1] == cp - 1:
                out[-1][1] = cp
            else:
                out.append([cp, cp])
    return out


def check_white_space():
    ws = {cp for lo, hi in WHITE_SPACE for cp in range(lo, hi + 1)}
    isspace = {cp for cp in range(0x110000) if chr(cp).isspace()}
    assert isspace - ws == {0x1C, 0x1D, 0x1E, 0x1F} and not ws - isspace, "White_Space list out of date"
    for cp in ws:
        cat = unicodedata.category(chr(cp))
        assert cat[0] not in "LN", "a white space code point is a letter or number"


def emit(name, rs, what):
    print(f"/* {what}: {len(rs)} ranges, {sum(hi - lo + 1 for lo, hi in rs)} code points */")
    print(f"static const uint32_t {name}[][2] = {{")
    rows(f"{{0x{lo:X}, 0x{hi:X}}}, " for lo, hi in rs)


def rows(items):
    """A C initializer's items, as many a line as fit in 100 columns, then its end."""
    line = "\t"
    for item in items:
        if len(line) + len(item) > 100:
            print(line.rstrip())
            line = "\t"
        line += item
    print(line.rstrip())
    print("};")
    print()


def bert_fold(cp):
    """strip(NFD(lower(c))) as BERT computes it for a word of one code point."""
    return "".join(ch for ch in unicodedata.normalize("NFD", chr(cp).lower()) if unicodedata.category(ch) != "Mn")


def is_hangul(cp):
    return 0xAC00 <= cp <= 0xD7A3


def hangul_nfd(cp):
    s = cp - 0xAC00
    out = [0x1100 + s // 588, 0x1161 + s % 588 // 28] + ([0x11A7 + s % 28] if s % 28 else [])
    return "".join(map(chr, out))


def sigma_classes():
    """Python's Cased and Case_Ignorable, as str.lower() uses them for the final sigma:
    c is case-ignorable when 'A' c SIGMA and 'A' SIGMA c both end the sigma but c SIGMA
    does not; cased (and not case-ignorable) when c SIGMA does."""
    S, fs = "\u03a3", "\u03c2"
    ci, cased = set(), set()
    for cp in range(0x110000):
        c = chr(cp)
        t1 = (c + S).lower()[-1] == fs
        if ("A" + c + S).lower()[-1] == fs and ("A" + S + c).lower()[1] == fs and not t1:
            ci.add(cp)
        if t1:
            cased.add(cp)
    return ci, cased


def emit_fold(entries):
    print(f"/* strip(NFD(lower(c))) where it is neither c nor empty (nor a Hangul syllable): "
          f"{len(entries)} code points, each to up to 3 (0: none) */")
    print("static const uint32_t uni_fold[][4] = {")
    rows("{" + ", ".join(f"0x{x:X}" for x in [cp] + [ord(ch) for ch in s] + [0] * (3 - len(s))) + "}, "
         for cp, s in entries)


def bert_tables():
    cat = lambda cp: unicodedata.category(chr(cp))
    mn = ranges(lambda cp: cat(cp) == "Mn")
    folds = []
    for cp in range(0x110000):
        if is_hangul(cp):
            assert bert_fold(cp) == hangul_nfd(cp)
            continue
        f = bert_fold(cp)
        assert len(f) <= 3
        if f and f != chr(cp):
            folds.append((cp, f))
        elif not f:
            assert cat(cp) == "Mn", hex(cp)
        else:
            assert cat(cp) != "Mn", hex(cp)
    # folding never makes white space or control characters, which BERT removed before, out
    # of a code point that is neither
    for cp, f in folds:
        if chr(cp).isspace() or cat(cp) in ("Cc", "Cf", "Zs"):
            continue
        for ch in f:
            assert not ch.isspace() and cat(ord(ch)) not in ("Cc", "Cf", "Zs"), hex(cp)
    punct = ranges(lambda cp: cat(cp)[0] == "P")
    control = ranges(lambda cp: cat(cp) in ("Cc", "Cf") and chr(cp) not in "\t\n\r")
    space = ranges(lambda cp: cat(cp) == "Zs" or chr(cp) in "\t\n\r\u2028\u2029")
    ci, cased = sigma_classes()
    return mn, folds, punct, control, space, ranges(lambda cp: cp in ci), ranges(lambda cp: cp in cased)


def main():
    check_white_space()
    letters = ranges(lambda cp: unicodedata.category(chr(cp))[0] == "L")
    numbers = ranges(lambda cp: unicodedata.category(chr(cp))[0] == "N")
    mn, folds, punct, control, space, ci, cased = bert_tables()
    v = unicodedata.unidata_version
    print(f"""/* runtime/unicode_tables.h — which code points are letters (\\p{{L}}), numbers (\\p{{N}}) and
 * white space (\\s), for GPT-2's pre-tokenization regex in runtime/tokenizer.c; and for BERT's
 * BasicTokenizer there, punctuation, control characters, its white space, and how a code
 * point folds when lower-cased and stripped of accents.
 *
 * GENERATED by scripts/gen_unicode_tables.py from Python's unicodedata, Unicode {v}
 * (python3 scripts/gen_unicode_tables.py > runtime/unicode_tables.h); do not edit.
 * Letters are general categories Lu Ll Lt Lm Lo, numbers Nd Nl No, white space the
 * White_Space property. BERT's: see the script. Each range table is sorted, inclusive
 * [first, last] ranges, disjoint; uni_fold is sorted by its first column.
 */
#ifndef MGL_UNICODE_TABLES_H
#define MGL_UNICODE_TABLES_H

#include <stdint.h>

#define RT_UNICODE_VERSION "{v}"
""")
    emit("uni_letter", letters, "\\p{L}")
    emit("uni_number", numbers, "\\p{N}")
    emit("uni_space", WHITE_SPACE, "\\s (White_Space)")
    emit("uni_punct", punct, "BERT: punctuation (P*)")
    emit("uni_control", control, "BERT: control characters, dropped (Cc and Cf but tab, newline, return)")
    emit("uni_bert_space", space, "BERT: white space (Zs, tab, newline, return, U+2028, U+2029)")
    emit("uni_mn", mn, "BERT: nonspacing marks (Mn), which accent stripping drops")
    emit("uni_case_ignorable", ci, "BERT: Case_Ignorable, for the final sigma")
    emit("uni_cased", cased, "BERT: Cased and not Case_Ignorable, for the final sigma")
    emit_fold(folds)
    print("#endif")


if __name__ == "__main__":
    sys.exit(main())
