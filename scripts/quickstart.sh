#!/usr/bin/env bash
# Newcomer command 1: set everything up, then boot a real micro-VM from the
# offline busybox image and run a command in it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo
node dist/cli/main.js run --rm --rootfs .cache/images/busybox -- \
  sh -c 'echo "Hello from BoxLite: kernel $(uname -r) on $(hostname), $(nproc) vCPU, $(free -m | awk "/Mem:/{print \$2}") MiB"'
