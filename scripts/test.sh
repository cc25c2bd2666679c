#!/usr/bin/env bash
# Newcomer command 2 (and CI): set up, then run every test tier, install the packed package
# as a user would, fuzz the guest decoder, and prove no VM or shim process was left behind.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

# On a failure, the last lines of the log name every failed test (CI shows only the tail).
failed_tests() {
  node -e '
    const r = require(process.argv[1]);
    for (const f of r.testResults ?? [])
      for (const t of f.assertionResults ?? [])
        if (t.status === "failed") console.error(`FAILED ${f.name.replace(process.cwd() + "/", "")} > ${t.fullName}`);
  ' "$1" || true
}

echo "==> tests: unit, protocol, host (agent in host mode), integration (real VMs)"
mkdir -p .cache
npx vitest run --project unit --project protocol --project host --project integration \
  --reporter=default --reporter=json --outputFile.json=.cache/vitest-results.json ||
  { status=$?; failed_tests ./.cache/vitest-results.json; exit $status; }

# The box types on their images (Python, desktop, browsers): slow under TCG, so on their own,
# after the rest, never alongside it (two cores).
echo "==> tests: box types on their images (real VMs)"
npx vitest run --project boxtypes --reporter=default --reporter=json --outputFile.json=.cache/vitest-boxtypes.json ||
  { status=$?; failed_tests ./.cache/vitest-boxtypes.json; exit $status; }

echo "==> package: npm pack, install into an empty project as a non-root user, run a box"
bash scripts/test-package.sh

echo "==> fuzzing the guest frame decoder (${FUZZ_SECONDS:-60} s)"
make -s -C guest fuzz FUZZ_SECONDS="${FUZZ_SECONDS:-60}"

# Live processes only: a zombie is already dead, waiting for its parent to reap it.
left=$(ps -eo pid=,stat=,args= | grep -E 'qemu-system|boxlite-shim' | grep -vE '^ *[0-9]+ +Z' | grep -v grep || true)
if [ -n "$left" ]; then
  echo "leaked VM/shim processes after the suite:" >&2
  echo "$left" >&2
  exit 1
fi
echo "==> no VM or shim process left behind"
node -e '
  const runs = ["./.cache/vitest-results.json", "./.cache/vitest-boxtypes.json"].map((f) => require(f));
  const sum = (k) => runs.reduce((a, r) => a + r[k], 0);
  console.log(`tests: ${sum("numPassedTests")} passed, ${sum("numFailedTests")} failed, ${sum("numPendingTests") + sum("numTodoTests")} skipped`);
'
