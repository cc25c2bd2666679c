#!/usr/bin/env bash
# The install test (run by scripts/test.sh): what `npm pack` makes at the repo root, installed
# into an empty project by a non-root user whose HOME is an empty directory, runs a box with a
# custom homeDir from a plain .mjs file, then the same box through the installed `boxlite serve`
# and its REST client. Prints the packed size and file count and the install
# time. As root (CI) it runs as the user boxlite-ci, created when missing.
#
# Environment: BOXLITE_PACKAGE_USER (default boxlite-ci), KEEP=1 keeps the scratch directory.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'test-package: FAIL: %s\n' "$*" >&2; exit 1; }

WORK=$(mktemp -d /tmp/boxlite-pkg-XXXXXX)
chmod 755 "$WORK"
cleanup() {
  # Whatever the outcome, no VM or shim started by this test may survive it (by pid: only the
  # test user's processes running from this scratch install).
  if [[ -n ${RUN_AS_USER:-} ]]; then
    for pid in $(pgrep -u "$RUN_AS_USER" -f "qemu-system|$WORK/project/node_modules/boxlite/dist/shim" || true); do kill -KILL "$pid" 2>/dev/null || true; done
  fi
  if [[ ${KEEP:-} == 1 ]]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# --- 1. pack (prepack rebuilds dist and refuses a missing or stale runtime)
say "npm pack"
npm pack --pack-destination "$WORK" --json --loglevel=error >"$WORK/pack.json"
read -r TARBALL FILES SIZE UNPACKED < <(node -e '
  const [p] = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  console.log(p.filename, p.entryCount, p.size, p.unpackedSize);' "$WORK/pack.json")
TARBALL=$WORK/$(basename "$TARBALL")
for f in package/runtime/linux-x64/vmlinux package/runtime/linux-x64/initramfs.cpio package/runtime/linux-x64/runtime.json package/dist/index.js package/dist/shim/boxlite-shim.js; do
  grep -q "\"path\": \"${f#package/}\"" "$WORK/pack.json" || die "$f is not in the tarball"
done
if grep -Eq '"path": "(guest/|test/|scripts/|bench/|\.cache/|[^"]*\.map")' "$WORK/pack.json"; then
  die "the tarball ships files users do not need: $(grep -Eo '"path": "(guest/|test/|scripts/|bench/|\.cache/|[^"]*\.map")[^"]*' "$WORK/pack.json" | head -5 | tr '\n' ' ')"
fi

# --- 2. a non-root user with an empty HOME, an empty project and a copy of the test image
if [[ $(id -u) -eq 0 ]]; then
  RUN_AS_USER=${BOXLITE_PACKAGE_USER:-boxlite-ci}
  if ! id "$RUN_AS_USER" >/dev/null 2>&1; then
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$RUN_AS_USER"
  fi
  as_user() { runuser -u "$RUN_AS_USER" -- "$@"; }
else
  RUN_AS_USER=$(id -un)
  as_user() { "$@"; }
fi
mkdir -p "$WORK/home" "$WORK/project" "$WORK/boxhome"
cp -r .cache/images/busybox "$WORK/image"
# npm's cache from `npm ci` (copied: the user cannot read root's), so the install needs no
# registry round trip for what is already there; anything missing is still fetched.
if [[ -d ${npm_config_cache:-$HOME/.npm}/_cacache ]]; then
  mkdir -p "$WORK/npm-cache" && cp -r "${npm_config_cache:-$HOME/.npm}/_cacache" "$WORK/npm-cache/"
fi
cat >"$WORK/project/remote.mjs" <<'EOF'
// The same box through the installed package's `boxlite serve` and its REST client, as a team
// that runs the server on a machine of its own would: serve listens, the client execs, SIGTERM.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { ApiKeyCredential, BoxliteRestOptions, JsBoxlite } from 'boxlite';

const [homeDir, image] = process.argv.slice(2);
const key = 'package-test-key-0123';
const serve = spawn('./node_modules/.bin/boxlite', ['--home', homeDir, 'serve', '--port', '0', '--rootfs-root', path.dirname(image)], {
  env: { ...process.env, BOXLITE_SERVE_API_KEY: key },
  stdio: ['ignore', 'ignore', 'pipe'],
});
let log = '';
const url = await new Promise((resolve, reject) => {
  const timer = setTimeout(() => reject(new Error(`serve did not start: ${log}`)), 60_000);
  serve.stderr.on('data', (c) => {
    log += c;
    const m = /listening on (http:\/\/\S+)\/v1/.exec(log);
    if (m) {
      clearTimeout(timer);
      resolve(m[1]);
    }
  });
  serve.on('exit', (code) => reject(new Error(`serve exited ${code}: ${log}`)));
});
const rt = JsBoxlite.rest(new BoxliteRestOptions({ url, credential: new ApiKeyCredential(key) }));
const box = await rt.create({ rootfsPath: image, memoryMib: 256 });
const ex = await box.exec('sh', ['-c', 'echo hello over REST; exit 5']);
const out = await ex.stdout();
let text = '';
for (let c; (c = await out.next()) !== null; ) text += c;
const { exitCode } = await ex.wait();
await rt.remove(box.id, true);
const exited = new Promise((resolve) => serve.on('exit', (code) => resolve(code)));
serve.kill('SIGTERM');
const code = await exited;
if (exitCode !== 5 || text !== 'hello over REST\n' || code !== 0) {
  console.error(`unexpected: exit ${exitCode}, stdout ${JSON.stringify(text)}, serve exit ${code}\n${log}`);
  process.exit(1);
}
console.log(`REST box ran through boxlite serve at ${url}: ${JSON.stringify(text.trim())}, exit ${exitCode}`);
EOF
cat >"$WORK/project/package.json" <<'EOF'
{ "name": "scratch", "version": "1.0.0", "private": true, "type": "module" }
EOF
cat >"$WORK/project/hello.mjs" <<'EOF'
// A user's first program: a box in its own home, one command, assert, clean up.
import { JsBoxlite } from 'boxlite';
import fs from 'node:fs';

const [homeDir, image] = process.argv.slice(2);
const runtime = new JsBoxlite({ homeDir });
const t0 = performance.now();
const box = await runtime.create({ rootfsPath: image, memoryMib: 256 });
const ex = await box.exec('echo', ['hello from an installed boxlite']);
const out = await ex.stdout();
let text = '';
for (let c; (c = await out.next()) !== null; ) text += c;
const { exitCode } = await ex.wait();
const ms = Math.round(performance.now() - t0);
const info = await runtime.systemInfo();
await box.stop();
await runtime.remove(box.id);
if (exitCode !== 0 || text !== 'hello from an installed boxlite\n') {
  console.error(`unexpected result: exit ${exitCode}, stdout ${JSON.stringify(text)}`);
  process.exit(1);
}
// The guest runtime lives in the package: nothing of it may land in the home.
const stray = fs.readdirSync(homeDir).filter((f) => !['boxes', 'db', 'images', 'logs', 'tmp'].includes(f));
if (stray.length) {
  console.error(`unexpected entries in the home: ${stray.join(', ')}`);
  process.exit(1);
}
console.log(`box ran: ${JSON.stringify(text.trim())} in ${ms} ms (create + boot + exec), guest kernel ${info.guestKernel}, accelerator ${info.accelerator}`);
EOF
chown -R "$RUN_AS_USER" "$WORK/home" "$WORK/project" "$WORK/boxhome" "$WORK/image" ${WORK}/npm-cache 2>/dev/null || true
chmod 644 "$TARBALL"

# Nothing of the caller's environment but PATH: HOME is the empty dir, no npmrc of ours.
# This host cannot reach GitHub (better-sqlite3's prebuilt binaries) or nodejs.org (headers),
# so better-sqlite3 builds from source against the Debian node headers in /usr/include/node.
user_env=(env -i "PATH=/usr/local/bin:/usr/bin:/bin" "HOME=$WORK/home" "TMPDIR=/tmp" "npm_config_cache=$WORK/npm-cache"
          "npm_config_update_notifier=false" "npm_config_fund=false" "npm_config_audit=false")
[[ -f /usr/include/node/node_api.h ]] && user_env+=("npm_config_nodedir=/usr")
[[ -n ${BOXLITE_ACCEL:-} ]] && user_env+=("BOXLITE_ACCEL=$BOXLITE_ACCEL")

# --- 3. install
say "npm install of the tarball as $RUN_AS_USER (HOME empty, project empty)"
t0=$(date +%s.%N)
(cd "$WORK/project" && as_user "${user_env[@]}" npm install --prefer-offline --no-audit --no-fund --loglevel=error "$TARBALL") \
  || die "npm install failed"
t1=$(date +%s.%N)
INSTALL_S=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
[[ -f $WORK/project/node_modules/boxlite/runtime/linux-x64/runtime.json ]] || die "the installed package has no runtime"
[[ -z $(ls -A "$WORK/home" | grep -v '^\.npm$' || true) ]] || die "npm install wrote into HOME: $(ls -A "$WORK/home")"

# --- 4. run
say "running a box from a plain .mjs file"
(cd "$WORK/project" && as_user "${user_env[@]}" timeout 300 node hello.mjs "$WORK/boxhome" "$WORK/image") || die "hello.mjs failed"
info=$(cd "$WORK/project" && as_user "${user_env[@]}" ./node_modules/.bin/boxlite --home "$WORK/boxhome" info) || die "boxlite info failed"
want=$(node -p 'require(process.argv[1]).kernel.version' "$WORK/project/node_modules/boxlite/runtime/linux-x64/runtime.json")
grep -Eq "^Guest kernel: +$want\$" <<<"$info" || die "boxlite info does not report guest kernel $want: $info"
say "the same through the installed boxlite serve and its REST client"
(cd "$WORK/project" && as_user "${user_env[@]}" timeout 300 node remote.mjs "$WORK/boxhome" "$WORK/image") || die "remote.mjs failed"
# Live processes only (as in scripts/test.sh): a zombie is already dead, its parent about to reap it.
left=$(ps -u "$RUN_AS_USER" -o pid=,stat=,args= | grep -E 'qemu-system|boxlite-shim' | grep -vE '^ *[0-9]+ +Z' | grep -v grep || true)
[[ -z $left ]] || die "leaked processes of $RUN_AS_USER: $left"
[[ ! -e $WORK/home/.local/share/boxlite ]] || die "the default path derived runtime files into HOME"

mib() { awk -v n="$1" 'BEGIN { printf "%.1f MiB", n / 1048576 }'; }
echo "package: $(basename "$TARBALL"): $FILES files, $(mib "$SIZE") packed, $(mib "$UNPACKED") unpacked; install into an empty project: ${INSTALL_S} s"
echo "==> package test passed"
