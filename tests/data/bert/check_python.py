#!/usr/bin/env python3
"""tests/data/bert/check_python.py — checks expected.txt's hand-worked ids against BERT's
own algorithm: BasicTokenizer and WordpieceTokenizer of google-research/bert's
tokenization.py (Apache 2.0), transcribed below for uncased vocabularies.

Usage: python3 tests/data/bert/check_python.py   (from anywhere; needs only Python 3)
"""
import json
import os
import sys
import unicodedata

HERE = os.path.dirname(os.path.abspath(__file__))


def is_whitespace(c):
    return c in " \t\n\r" or unicodedata.category(c) == "Zs"


def is_control(c):
    return c not in "\t\n\r" and unicodedata.category(c) in ("Cc", "Cf")


def is_punctuation(c):
    cp = ord(c)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(c).startswith("P")


def is_chinese(cp):
    return any(lo <= cp <= hi for lo, hi in [(0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF),
                                             (0x2A700, 0x2B73F), (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF),
                                             (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)])


def basic(text):
    text = "".join(" " if is_whitespace(c) else c for c in text
                   if not (ord(c) == 0 or ord(c) == 0xFFFD or is_control(c)))
    text = "".join(f" {c} " if is_chinese(ord(c)) else c for c in text)
    out = []
    for tok in text.split():
        tok = "".join(c for c in unicodedata.normalize("NFD", tok.lower()) if unicodedata.category(c) != "Mn")
        word = ""
        for c in tok:
            if is_punctuation(c):
                out += [word] if word else []
                out.append(c)
                word = ""
            else:
                word += c
        out += [word] if word else []
    return out


def wordpiece(word, vocab):
    if len(word) > 100:
        return [vocab["[UNK]"]]
    ids, start = [], 0
    while start < len(word):
        end = len(word)
        while end > start:
            piece = ("##" if start else "") + word[start:end]
            if piece in vocab:
                break
            end -= 1
        if end == start:
            return [vocab["[UNK]"]]
        ids.append(vocab[piece])
        start = end
    return ids


def main():
    with open(os.path.join(HERE, "vocab.txt"), encoding="utf-8") as f:
        vocab = {line.rstrip("\n"): i for i, line in enumerate(f)}
    bad = 0
    for line in open(os.path.join(HERE, "expected.txt"), encoding="utf-8"):
        if line.startswith("#"):
            continue
        text, ids = line.rstrip("\n").split("\t")
        # raw bytes 0x80..0xff (\udc80..) are not UTF-8: Python reads them as U+FFFD
        text = "".join("\ufffd" if 0xDC80 <= ord(c) <= 0xDCFF else c for c in json.loads(text))
        want = [int(x) for x in ids.split()]
        got = [i for w in basic(text) for i in wordpiece(w, vocab)]
        if got != want:
            print(f"{text!r}: expected.txt says {want}, tokenization.py gives {got}")
            bad += 1
    print(f"{'FAIL' if bad else 'ok'}: {bad} case{'s' if bad != 1 else ''} differ")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
