#!/bin/sh
# Runs guest/build/codec-tool over every vector in test/protocol/vectors.json
# and diffs its output against the expected canonical text. Vectors marked
# "agent": false (control-link types) must give error:unknown_type.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
guest=$(dirname "$here")
vectors=${VECTORS:-$guest/../test/protocol/vectors.json}
tool=${CODEC_TOOL:-$guest/build/codec-tool}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# name<TAB>hex<TAB>expected, one vector per line
extract='
const vs = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
for (const v of vs) {
  const want = v.agent === false ? "error:unknown_type" : v.expect;
  process.stdout.write(v.name + "\t" + v.hex + "\t" + want + "\n");
}'
if command -v node >/dev/null 2>&1; then
  node -e "$extract" "$vectors" > "$tmp/table"
else
  python3 -c '
import json, sys
for v in json.load(open(sys.argv[1])):
    want = "error:unknown_type" if v.get("agent") is False else v["expect"]
    print(v["name"] + "\t" + v["hex"] + "\t" + want)' "$vectors" > "$tmp/table"
fi

cut -f2 "$tmp/table" | "$tool" > "$tmp/got"
cut -f1,3 "$tmp/table" > "$tmp/want"
cut -f1 "$tmp/table" | paste - "$tmp/got" > "$tmp/got.named"
total=$(wc -l < "$tmp/want")
if diff -u "$tmp/want" "$tmp/got.named"; then
  echo "codec-tool: $total passed, 0 failed"
else
  failed=$(diff "$tmp/want" "$tmp/got.named" | grep -c '^<' || true)
  echo "codec-tool: $((total - failed)) passed, $failed failed"
  exit 1
fi
