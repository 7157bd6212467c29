// tests/data/gpt2/gen_expected.js — writes expected.txt: test texts and the ids the npm
// package gpt-3-encoder (a JavaScript port of OpenAI's encoder.py) gives them, the oracle
// that tests/test_runtime_data.c holds runtime/tokenizer.c to.
//
// usage: node tests/data/gpt2/gen_expected.js PATH/TO/node_modules/gpt-3-encoder > tests/data/gpt2/expected.txt
//   (npm install gpt-3-encoder@1.1.4 in a scratch directory gives that folder)
//
// expected.txt, one case a line: the text as a JSON string, a tab, its ids separated by
// spaces. Lines starting with '#' are comments. JavaScript strings cannot hold bytes that
// are not UTF-8, so a lone low surrogate \udc80..\udcff in the JSON stands for the raw byte
// 0x80..0xff (Python's "surrogateescape" convention). The regex treats such a code point
// as "not a letter, number or space", which is what the C tokenizer does with a byte that
// is not part of well-formed UTF-8; the package's encode() would turn it into U+FFFD, so
// for those texts the ids come from the package's own regex and BPE with the surrogate put
// back as its byte (encodeRaw below). For every other text they come from encode() itself.
'use strict'
const fs = require('fs')
const path = require('path')

const dir = process.argv[2]
if (!dir) {
  console.error('usage: node gen_expected.js PATH/TO/node_modules/gpt-3-encoder')
  process.exit(2)
}
const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf-8'))
// Encoder.js keeps bpe, pat and the tables to itself: run its source with them exported.
const src = fs.readFileSync(path.join(dir, 'Encoder.js'), 'utf-8') +
  '\nmodule.exports.internals = { bpe, pat, encoder, byte_encoder }\n'
const mod = { exports: {} }
new Function('require', 'module', 'exports', '__dirname', src)(require, mod, mod.exports, dir)
const { encode } = mod.exports
const { bpe, pat, encoder, byte_encoder } = mod.exports.internals

// UTF-8 bytes of a string, a lone surrogate U+DC80..U+DCFF giving back its byte.
function rawBytes (s) {
  const out = []
  for (const ch of s) {
    const cp = ch.codePointAt(0)
    if (cp >= 0xdc80 && cp <= 0xdcff) out.push(cp - 0xdc00)
    else out.push(...Buffer.from(ch, 'utf-8'))
  }
  return out
}

function encodeRaw (text) {
  const ids = []
  for (const m of text.matchAll(pat)) {
    const token = rawBytes(m[0]).map(b => byte_encoder[b]).join('')
    for (const t of bpe(token).split(' ')) ids.push(encoder[t])
  }
  return ids
}

// Bytes to a string: well-formed UTF-8 decoded, every other byte b as U+DC00+b.
function fromBytes (bytes) {
  let s = ''
  for (let i = 0; i < bytes.length;) {
    const b = bytes[i]
    const cont = (k, lo = 0x80, hi = 0xbf) => i + k < bytes.length && bytes[i + k] >= lo && bytes[i + k] <= hi
    let n = 0
    if (b < 0x80) n = 1
    else if (b >= 0xc2 && b <= 0xdf && cont(1)) n = 2
    else if (b === 0xe0 && cont(1, 0xa0) && cont(2)) n = 3
    else if (((b >= 0xe1 && b <= 0xec) || b === 0xee || b === 0xef) && cont(1) && cont(2)) n = 3
    else if (b === 0xed && cont(1, 0x80, 0x9f) && cont(2)) n = 3
    else if (b === 0xf0 && cont(1, 0x90) && cont(2) && cont(3)) n = 4
    else if (b >= 0xf1 && b <= 0xf3 && cont(1) && cont(2) && cont(3)) n = 4
    else if (b === 0xf4 && cont(1, 0x80, 0x8f) && cont(2) && cont(3)) n = 4
    if (n) s += Buffer.from(bytes.slice(i, i + n)).toString('utf-8')
    else s += String.fromCharCode(0xdc00 + b)
    i += n || 1
  }
  return s
}

const prose = `The lighthouse keeper had not spoken to anyone in eleven days. Each morning he climbed the
hundred and twelve steps, wiped the salt from the lens, and wrote the weather in a ledger that nobody
would read. "Wind from the north-east, force five," he wrote on the twelfth day; "a ship, three-masted,
far out." He didn't know its name. He'd have liked to.

By noon the ship had turned toward the island, and by evening its boat was on the shingle: four sailors,
a dog, and a woman in a grey coat who asked, politely, whether the light could be seen from Carrow Point.
"It can," he said, "on a clear night. Why?"

"Because my brother swears it can't, and I've bet him twelve shillings."`

const cases = [
  // English
  'Hello, world!',
  'hello world',
  prose,
  'The quick brown fox jumps over the lazy dog.',
  'GPT-2 was trained on WebText: 8 million documents, about 40 GB of text.',
  'antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis',
  'The U.S.A. (i.e. the United States) e.g. etc. vs. Mr. Smith & Co.',
  'https://example.com/path/to/page?query=1&lang=en#section mail: someone@example.org',
  // contractions
  "don't I'll we've they're she's it'd I'm you'd",
  "DON'T I'LL WE'VE THEY'RE SHE'S",
  "rock'n'roll ''quoted'' 's 't 're 've 'm 'll 'd 'x",
  " 's ' s '  s '\ts",
  'it\u2019s curly \u2018quotes\u2019 and \u201cdouble\u201d',
  // code
  'int main(void)\n{\n\tprintf("hello, %s\\n", argv[1]);\n\treturn 0;\n}\n',
  'def f(x, y=2):\n    """Doc."""\n    if x > y:\n        return x ** 2  # square\n    return [i for i in range(y)]\n',
  'const f = (a, b) => { return a?.b ?? [...b]; }; // arrow',
  '<html><body class="main">&nbsp;&lt;tag&gt;</body></html>',
  '{"key": [1, 2.5, -3e10, true, null], "nested": {"a": "b"}}',
  'x+=1;y-=2;z*=3;w/=4;if(a&&b||!c){}',
  // numbers
  '3.14159 2.71828 1,000,000 1 000 000 0x1F 0b1010 1e-9 -42 +7',
  '12345678901234567890123456789',
  'Call 555-0199 on 2024-05-20 at 10:30am; pay $1,299.99 (20% off).',
  '1st 2nd 3rd 4th 21st 100th',
  // white space
  'a  b   c    d',
  'trailing spaces   ',
  '   leading spaces',
  '\t\ttabs\tand\t\t\ttabs\t',
  '\n\n\nnewlines\n\n\n',
  'mixed \t \n end \n\t',
  'line one\r\nline two\r\n',
  ' ',
  '  ',
  '\n',
  ' \n ',
  'a \nb',
  'word  \n  word',
  '',
  'x',
  // Unicode: Latin with accents, Greek, Cyrillic, CJK, other scripts
  'caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00c5ngstr\u00f6m \u0141\u00f3d\u017a \u00df \u00c6sir',
  '\u039a\u03b1\u03bb\u03b7\u03bc\u03ad\u03c1\u03b1 \u03ba\u03cc\u03c3\u03bc\u03b5, \u03b1\u03b2\u03b3 \u0394\u03a9',
  '\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440! \u0415\u0451\u0436\u0438\u043a',
  '\u4f60\u597d\uff0c\u4e16\u754c\u3002\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3002\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8',
  '\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645 \u05e9\u05dc\u05d5\u05dd \u0939\u093f\u0928\u094d\u0926\u0940 \u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35',
  // combining marks (not letters: they split words), precomposed vs decomposed
  'e\u0301 a\u0308 n\u0303 cafe\u0301 \u00e9',
  'Z\u0351\u036b\u0343a\u0308\u0301lgo\u0301',
  // emoji, including sequences joined by ZWJ and variation selectors
  '\ud83d\udc4b\ud83c\udf0d \ud83c\udf89\ud83c\udf89 \ud83d\udc68\u200d\ud83d\udc69\u200d\ud83d\udc67 \u2764\ufe0f \ud83c\uddeb\ud83c\uddf7 ok\ud83d\udc4d',
  // numbers of other scripts: Nd, Nl, No
  '\u0663\u0664 \u096a\u096b \uff15\uff16 \u216b \u00bd \u00b2 \u2460',
  // other spaces: no-break, ideographic, en quad, line separator
  'a\u00a0b x\u3000y p\u2000q \u2028 end',
  'a\u00a0\u00a0b \u00a0x',
  // control characters
  'nul\u0000bel\u0007esc\u001bdel\u007f',
  'form\ffeed\vvertical',
  // punctuation runs and symbols
  '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!',
  '...?!?!--- *** ### @@@ ~~~ ___',
  '\u2014 em dash \u2013 en dash \u2026 ellipsis \u00a9 \u00ae \u2122 \u20ac100 \u00a3 \u00a5',
  'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa',
  'the the the the the the the the',
  // the special token's text is ordinary text to encode()
  'end of one<|endoftext|>start of two',
  '<|endoftext|>',
  // GPT-2's byte alphabet itself appearing in text
  '\u0120\u010a \u0100\u0101 \u00a1\u00ac\u00ae\u00ff',
]

// Bytes that are not well-formed UTF-8: stray continuation bytes, a truncated sequence,
// an overlong encoding, an encoded surrogate, a code point past U+10FFFF, 0xff and 0xfe.
const raw = [
  [0x6f, 0x6b, 0x20, 0xff, 0xfe, 0x20, 0x62, 0x79, 0x74, 0x65, 0x73],
  [0x61, 0x80, 0x62, 0xbf, 0x20, 0x80, 0x80],
  [0xc3, 0x28, 0x20, 0xe2, 0x82, 0x20, 0xe2, 0x82, 0xac, 0x20, 0xf0, 0x9f, 0x98],
  [0xc0, 0xaf, 0x20, 0xe0, 0x80, 0xaf, 0x20, 0xed, 0xa0, 0x80, 0x20, 0xf4, 0x90, 0x80, 0x80],
  [0x20, 0xff, 0x77, 0x6f, 0x72, 0x64, 0x20, 0x20, 0xfe, 0x31, 0x32, 0x20, 0x27, 0x73, 0xc3],
  [0xc3, 0xa9, 0xc3, 0x20, 0xa9, 0x0a, 0x0a, 0xff],
]

// encoder.py (the Python `regex` module) and this package (JavaScript's regex) disagree on
// \s for U+0085 and U+FEFF; the C tokenizer follows encoder.py, so those stay out of here.
for (const t of cases) {
  if (/[\u0085\ufeff]/.test(t)) throw new Error('a case holds U+0085 or U+FEFF: ' + JSON.stringify(t))
  if (/[\ud800-\udfff]/u.test(t)) throw new Error('a case holds a lone surrogate: ' + JSON.stringify(t))
}

const lines = [
  '# tests/data/gpt2/expected.txt — GENERATED by gen_expected.js from gpt-3-encoder ' + pkg.version + '; do not edit.',
  '# One case a line: the text as JSON, a tab, its GPT-2 ids. \\udc80..\\udcff stand for raw bytes 0x80..0xff.',
]
for (const t of cases) {
  const ids = encode(t)
  const again = encodeRaw(t)
  if (ids.join(' ') !== again.join(' ')) throw new Error('encodeRaw disagrees with encode on ' + JSON.stringify(t))
  lines.push(JSON.stringify(t) + '\t' + ids.join(' '))
}
for (const bytes of raw) {
  const t = fromBytes(bytes)
  if (!/[\udc80-\udcff]/u.test(t)) throw new Error('a raw case is valid UTF-8')
  lines.push(JSON.stringify(t) + '\t' + encodeRaw(t).join(' '))
}
for (const l of lines) if (l.includes('undefined')) throw new Error('an id is missing: ' + l)
process.stdout.write(lines.join('\n') + '\n')
