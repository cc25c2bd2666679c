#!/usr/bin/env bash
# Development setup on a Debian/Ubuntu host, idempotently: Debian packages, npm packages, the
# TypeScript build, the guest agent, the guest kernel (.cache/kernel), the guest runtime the
# package ships (runtime/<platform>/) and the offline test images. A user of the published
# package needs none of this: `npm install` of the packed tarball and QEMU (README, Install).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

# --- 1. Debian packages (only what is missing; never the recommends: they pull a desktop stack)
packages=(qemu-system-x86 qemu-utils e2fsprogs cpio busybox-static musl-tools clang libclang-rt-14-dev util-linux build-essential python3 zstd
          docker-registry skopeo umoci apache2-utils openssl bubblewrap)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  say "installing Debian packages: ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
    SUDO="sudo"
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- 2. npm packages and the build
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  say "installing npm packages"
  npm ci --no-audit --no-fund --loglevel=error
fi
say "building the TypeScript package"
npx tsc -p tsconfig.json

# The reference's published 0.10 client with its native binding: the REST interop tests drive our
# server with it (REST mode needs no VM). Pinned: test/fixtures/rest-transcript.json was captured
# from exactly these.
if [ "$(uname -sm)" = "Linux x86_64" ] && [ ! -f .cache/ref-client/node_modules/@boxlite-ai/boxlite-linux-x64-gnu/package.json ]; then
  say "installing the reference's 0.10 client (.cache/ref-client, for the REST interop tests)"
  mkdir -p .cache/ref-client
  [ -f .cache/ref-client/package.json ] || echo '{"private":true}' > .cache/ref-client/package.json
  (cd .cache/ref-client && npm install --no-audit --no-fund --loglevel=error --ignore-scripts \
    @boxlite-ai/boxlite@0.10.0 @boxlite-ai/boxlite-linux-x64-gnu@0.10.3)
fi

# --- 3. guest agent (static C) and its codec tool
say "building the guest agent"
make -s -C guest

# --- 4. guest kernel from Debian's packages, then the runtime the package ships
say "fetching the guest kernel"
bash scripts/fetch-kernel.sh
say "assembling the guest runtime (runtime/)"
node scripts/build-runtime.mjs

# --- 5. the offline default image (built from Debian's busybox-static, no registry needed)
say "building the busybox image (.cache/images/busybox)"
node scripts/make-test-image.mjs .cache/images/busybox --variant busybox

# --- 6. the python test image (registry tests, bench/pull.mjs): Debian's python3.11 .debs,
#        downloaded once into .cache/debs/ (offline afterwards), on top of busybox
say "building the python image (.cache/images/python)"
node scripts/make-test-image.mjs .cache/images/python --variant python
say "building the codebox image (.cache/images/codebox: python:slim stand-in, Debian python3.11 + pip, ~18 MB of .debs, cached)"; node scripts/make-test-image.mjs .cache/images/codebox --variant codebox
say "building the browserbox image (.cache/images/browserbox: chromium-headless-shell, node, Playwright 1.58; ~154 MB of .debs, cached; and a firefox-esr variant)"; node scripts/make-test-image.mjs .cache/images/browserbox --variant browserbox && node scripts/make-test-image.mjs .cache/images/browserbox-firefox --variant browserbox-firefox

say "building the desktop and skillbox-test images (.cache/images/{desktop,skillbox-test}: Xvfb, xdotool, PIL, xterm; + a stand-in claude, node/npx; cached)"; node scripts/make-test-image.mjs .cache/images/desktop --variant desktop && node scripts/make-test-image.mjs .cache/images/skillbox-test --variant skillbox-test
say "setup complete"
