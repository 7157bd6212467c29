#!/usr/bin/env python3
"""tests/data/gpt2/check_python.py — checks expected.txt against OpenAI's encoder.py itself.

expected.txt is generated with the npm port (gen_expected.js); this holds it to the
original: the Encoder class of github.com/openai/gpt-2 src/encoder.py, reproduced below
with one change, that text and tokens are bytes decoded and encoded with Python's
"surrogateescape" (so \\udc80..\\udcff stand for raw bytes, as in expected.txt).
Needs the `regex` module (pip install regex). Exits 1 on any difference.

usage: python3 tests/data/gpt2/check_python.py [tests/data/gpt2]
"""
import json
import os
import sys

import regex as re


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def get_pairs(word):
    return {(a, b) for a, b in zip(word, word[1:])}


class Encoder:
    def __init__(self, encoder, bpe_merges):
        self.encoder = encoder
        self.byte_encoder = bytes_to_unicode()
        self.bpe_ranks = dict(zip(bpe_merges, range(len(bpe_merges))))
        self.cache = {}
        self.pat = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")

    def bpe(self, token):
        if token in self.cache:
            return self.cache[token]
        word = tuple(token)
        pairs = get_pairs(word)
        if not pairs:
            return token
        while True:
            bigram = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float('inf')))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            new_word = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                    new_word.extend(word[i:j])
                    i = j
                except ValueError:
                    new_word.extend(word[i:])
                    break
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
            if len(word) == 1:
                break
            pairs = get_pairs(word)
        word = ' '.join(word)
        self.cache[token] = word
        return word

    def encode(self, text):
        bpe_tokens = []
        for token in re.findall(self.pat, text):
            token = ''.join(self.byte_encoder[b] for b in token.encode('utf-8', 'surrogateescape'))
            bpe_tokens.extend(self.encoder[t] for t in self.bpe(token).split(' '))
        return bpe_tokens


def main():
    d = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(d, 'encoder.json')) as f:
        encoder = json.load(f)
    with open(os.path.join(d, 'vocab.bpe'), encoding='utf-8') as f:
        bpe_data = f.read()
    merges = [tuple(s.split()) for s in bpe_data.split('\n')[1:-1]]
    enc = Encoder(encoder, merges)
    bad = n = 0
    with open(os.path.join(d, 'expected.txt'), encoding='utf-8') as f:
        for line in f:
            if line.startswith('#'):
                continue
            text, ids = line.rstrip('\n').split('\t')
            text = json.loads(text)
            want = [int(x) for x in ids.split()]
            got = enc.encode(text)
            n += 1
            if got != want:
                bad += 1
                print(f"differs: {json.dumps(text)}\n  encoder.py {got}\n  expected   {want}")
    print(f"{n - bad} of {n} cases agree with encoder.py")
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
