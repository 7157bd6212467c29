#!/bin/sh
# tests/cli_import.sh — mgl import --hf and mgl train --init as a user runs them: a tiny
# GPT-2 trained, exported to Hugging Face's format and imported back is the same checkpoint
# (exported again: the same bytes) with the same loss; the tokenizer files travel; every
# architecture that does not match the model file is refused, naming the first difference.
# (F16, BF16, sharded checkpoints and damaged files: tests/test_hf.c.)
# usage: tests/cli_import.sh MGL
mgl=${1:?usage: tests/cli_import.sh MGL}
. "$(dirname "$0")/lib.sh"

for i in 1 2 3; do cat README.md docs/language.md; done >"$tmp/text.txt"
"$mgl" tokenize "$tmp/text.txt" -o "$tmp/t.bin" --bytes --val-fraction 0.1 >/dev/null
"$mgl" train models/gpt2.mgl --preset tiny --data "$tmp/t.bin" --steps 3 --batch 2 --save "$tmp/ck" >/dev/null 2>&1
"$mgl" export "$tmp/ck" -o "$tmp/hf" >/dev/null

expect 0 'usage: mgl import FILE --hf FILE_OR_DIR -o DIR' -- import --help
expect 2 'no model file given'                 -- import --hf "$tmp/hf" -o "$tmp/im"
expect 2 '--hf FILE_OR_DIR .* is required'     -- import models/gpt2.mgl -o "$tmp/im"
expect 2 '-o DIR is required'                  -- import models/gpt2.mgl --hf "$tmp/hf"
expect 1 "$tmp/nohf: cannot open: No such file or directory" -- import models/gpt2.mgl --hf "$tmp/nohf" -o "$tmp/im"
expect 0 'im/checkpoint.safetensors: gpt2 \(120,576 parameters, 2 layers\) from 28 tensors in 1 file' \
	-- import models/gpt2.mgl --hf "$tmp/hf" -o "$tmp/im"
expect 0 'tokenizer: bytes'                    -- import models/gpt2.mgl --hf "$tmp/hf/model.safetensors" -o "$tmp/im1"
check "import of a file or of its directory: the same checkpoint" \
	cmp "$tmp/im/checkpoint.safetensors" "$tmp/im1/checkpoint.safetensors"
check "the sizes come from config.json, as --set" \
	sh -c 'head -c 8192 "$1" | grep -aq "\"set\":\"vocab=256,seq=64,d=64,heads=4,layers=2,ffn=256\""' - "$tmp/im/checkpoint.safetensors"
"$mgl" export "$tmp/im" -o "$tmp/hf2" >/dev/null
check "exported, imported and exported again: the same bytes" cmp "$tmp/hf/model.safetensors" "$tmp/hf2/model.safetensors"
# the loss of the same weights on the same batch: --lr 0 changes nothing, and the
# validation loss is of the weights as loaded (the original is loaded with --init too)
loss() { "$mgl" train "$@" --data "$tmp/t.bin" --val "$tmp/t.val.bin" --steps 1 --lr 0 --batch 2 --eval-batches 2 \
	--log "$tmp/loss.jsonl" >/dev/null 2>&1 && grep -o '"val_loss": [0-9.]*' "$tmp/loss.jsonl"; }
check "the imported checkpoint's loss is the original's" \
	test "$(loss models/gpt2.mgl --preset tiny --init "$tmp/ck")" = "$(loss --init "$tmp/im")"
check "... and not empty" test -n "$(loss --init "$tmp/im")"

# mgl train --init: the weights at any tp, a fresh optimizer, step 0, the model from the checkpoint
expect 0 'starting from the weights of .*im/checkpoint.safetensors \(a fresh optimizer, step 0\)' \
	-- train --init "$tmp/im" --data "$tmp/t.bin" --steps 2 --batch 2 --save "$tmp/ft"
expect 0 'trained 2 steps in'                  -- train --init "$tmp/im" --data "$tmp/t.bin" --steps 2 --batch 2 --tp 2
check "a fine-tuned checkpoint starts its own run: step 2 of 2" \
	sh -c 'head -c 8192 "$1" | grep -aq "\"step\":\"2\""' - "$tmp/ft/checkpoint.safetensors"
check "--init at tp 2 has the loss of tp 1" test "$("$mgl" train --init "$tmp/im" --data "$tmp/t.bin" --steps 2 --batch 2 \
	2>/dev/null | grep -o 'loss .*')" = "$("$mgl" train --init "$tmp/im" --data "$tmp/t.bin" --steps 2 --batch 2 --tp 2 \
	2>/dev/null | grep -o 'loss .*')"
expect 2 '--init DIR starts afresh .* give one' -- train --init "$tmp/im" --resume "$tmp/ck" --data "$tmp/t.bin"
expect 1 'hint: --init DIR starts from its weights with a fresh optimizer' \
	-- train models/gpt2.mgl --preset tiny --resume "$tmp/im" --data "$tmp/t.bin" --steps 2
expect 1 'does not match the model: tensor .wte. is \[256, 64\] in the checkpoint and \[256, 128\]' \
	-- train --init "$tmp/im" --set d=128 --data "$tmp/t.bin" --steps 1
expect 1 "hf/model.safetensors: the metadata's 'format' is 'pt', not 'mgl-checkpoint 1'" \
	-- train --init "$tmp/hf/model.safetensors" --data "$tmp/t.bin"
expect 0 '^The'                                -- sample "$tmp/im" --prompt The --tokens 5

# the architecture must be the model file's: the first difference is named
expect 1 'hf/config.json vocab_size 256 but models/gpt2.mgl preset 124m has vocab 50,257' \
	-- import models/gpt2.mgl --hf "$tmp/hf" -o "$tmp/bad" --preset 124m
expect 1 'config.json n_embd 64 but models/gpt2.mgl preset tiny with --set d=128 has d 128' \
	-- import models/gpt2.mgl --hf "$tmp/hf" -o "$tmp/bad" --preset tiny --set d=128
expect 0 'im2/checkpoint.safetensors'          -- import models/gpt2.mgl --hf "$tmp/hf" -o "$tmp/im2" --preset tiny
expect 1 'models/llama.mgl: the model has no attention or no layer norm: not models/gpt2.mgl' \
	-- import models/llama.mgl --hf "$tmp/hf" -o "$tmp/bad"
# hf_with KEY VALUE: a copy of the export in $tmp/hx with config.json's KEY set to VALUE
hf_with() { rm -rf "$tmp/hx" && cp -r "$tmp/hf" "$tmp/hx" && sed -i "s/^  \"$1\": [^,]*,/  \"$1\": $2,/" "$tmp/hx/config.json"; }
hf_with n_inner 128
expect 1 "'layers.0.mlp.fc.weight' \(from .*hx's 'transformer.h.0.mlp.c_fc.weight'\) is \[256, 64\], but models/gpt2.mgl has \[128, 64\]" \
	-- import models/gpt2.mgl --hf "$tmp/hx" -o "$tmp/bad"
hf_with n_layer 3
expect 1 "models/gpt2.mgl has a parameter 'layers.2.attention.ln.weight' that GPT-2's checkpoint has no tensor for" -- import models/gpt2.mgl --hf "$tmp/hx" -o "$tmp/bad"
hf_with n_layer 1
expect 1 "hx's 'transformer.h.1.attn.c_attn.weight' \(mgl's 'layers.1.attention.q.weight'\) has no parameter in models/gpt2.mgl" \
	-- import models/gpt2.mgl --hf "$tmp/hx" -o "$tmp/bad"
hf_with layer_norm_epsilon 1e-06
expect 1 'config.json layer_norm_epsilon 1e-06 but models/gpt2.mgl.s layer norms have epsilon 1e-05' \
	-- import models/gpt2.mgl --hf "$tmp/hx" -o "$tmp/bad"
hf_with activation_function '"relu"'
expect 1 'config.json: activation_function is not gelu_new' -- import models/gpt2.mgl --hf "$tmp/hx" -o "$tmp/bad"
hf_with n_head '"4"'
expect 1 'config.json: at byte [0-9]+: expected n_head' -- import models/gpt2.mgl --hf "$tmp/hx" -o "$tmp/bad"
rm "$tmp/hx/config.json"
expect 1 'hx/config.json: cannot open'         -- import models/gpt2.mgl --hf "$tmp/hx" -o "$tmp/bad"
check "a refused import writes nothing"        test ! -e "$tmp/bad"
expect 1 "cannot create the directory '$tmp/no/such'" -- import models/gpt2.mgl --hf "$tmp/hf" -o "$tmp/no/such"

# a sharded checkpoint: the index names the file of each tensor
cp -r "$tmp/hf" "$tmp/hs"
mv "$tmp/hs/model.safetensors" "$tmp/hs/model-00001-of-00001.safetensors"
names=$(head -c 8192 "$tmp/hs/model-00001-of-00001.safetensors" | tr -d '\000' | grep -ao '"transformer[^"]*"' |
	sed 's/$/: "model-00001-of-00001.safetensors"/' | paste -sd, -)
printf '{"metadata": {"total_size": 482304}, "weight_map": {%s}}\n' "$names" >"$tmp/hs/model.safetensors.index.json"
expect 0 'from 28 tensors in 1 file of'        -- import models/gpt2.mgl --hf "$tmp/hs" -o "$tmp/ims"
check "a sharded checkpoint imports as the one file does" cmp "$tmp/im/checkpoint.safetensors" "$tmp/ims/checkpoint.safetensors"
sed -i 's/model-00001-of-00001/..\/hf\/model/' "$tmp/hs/model.safetensors.index.json"
expect 1 "must be a file name beside the index, not '../hf/model.safetensors'" \
	-- import models/gpt2.mgl --hf "$tmp/hs" -o "$tmp/bad"

# GPT-2's tokenizer: vocab.json and merges.txt beside the checkpoint travel into it
"$mgl" tokenize README.md -o "$tmp/g.bin" --gpt2 tests/data/gpt2 >/dev/null
"$mgl" train models/gpt2.mgl --preset tiny --set vocab=50257 --data "$tmp/g.bin" --steps 1 --batch 2 \
	--gpt2 tests/data/gpt2 --save "$tmp/gck" >/dev/null 2>&1
"$mgl" export "$tmp/gck" -o "$tmp/hfg" >/dev/null
expect 0 'tokenizer: GPT-2.s, vocab.json and merges.txt copied as .*img/encoder.json and vocab.bpe' \
	-- import models/gpt2.mgl --hf "$tmp/hfg" -o "$tmp/img"
check "the tokenizer files are copied as mgl names them" cmp "$tmp/img/vocab.bpe" tests/data/gpt2/vocab.bpe
check "... and recorded with their path and SHA-256" \
	sh -c 'head -c 65536 "$1" | grep -aq "\"tokenizer\":\"gpt2:/[^\"]*img\"" && head -c 65536 "$1" | grep -aq "tokenizer_sha256"' \
	- "$tmp/img/checkpoint.safetensors"
expect 0 '^The'                                -- sample "$tmp/img" --prompt The --tokens 3
cp "$tmp/hfg/vocab.json" "$tmp/vocab.json"
printf '{"a": 0}' >"$tmp/hfg/vocab.json"
expect 1 "hfg/vocab.json: no token for the byte 0x00" \
	-- import models/gpt2.mgl --hf "$tmp/hfg" -o "$tmp/bad"
mv "$tmp/vocab.json" "$tmp/hfg/vocab.json"
cp tests/data/gpt2/encoder.json "$tmp/hx/vocab.json" && cp tests/data/gpt2/vocab.bpe "$tmp/hx/merges.txt" && cp "$tmp/hf/config.json" "$tmp/hx"
expect 1 'vocab.json and merges.txt make 50,257 tokens, but the model has 256' \
	-- import models/gpt2.mgl --hf "$tmp/hx" -o "$tmp/bad"
rm "$tmp/hfg/merges.txt" "$tmp/hfg/vocab.json"
expect 0 'no vocab.json and merges.txt were beside it: give mgl sample --gpt2 DIR' \
	-- import models/gpt2.mgl --hf "$tmp/hfg" -o "$tmp/img2"
expect 0 '^The'                                -- sample "$tmp/img2" --prompt The --tokens 3 --gpt2 tests/data/gpt2

summary cli_import
