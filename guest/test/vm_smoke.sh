#!/usr/bin/env bash
# Boots build/boxlite-guest as /init of a real micro-VM (QEMU microvm) with a
# busybox root disk and runs host_smoke.py against its agent port.
#
#   guest/test/vm_smoke.sh [KERNEL_DIR] [TEST...]
#
# KERNEL_DIR is what scripts/fetch-kernel.sh installs (vmlinux + modules/NN-*.ko),
# default .cache/kernel of the repository. Needs qemu-system-x86_64,
# cpio, mke2fs and a static busybox. TCG unless BOXLITE_ACCEL=kvm.
# BOXLITE_SMOKE_NET=0 boots without a NIC and boxlite.ip;
# BOXLITE_SMOKE_BENCH=1 adds a throughput measurement.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
guest=$(dirname "$here")
kdir=${1:-$(dirname "$guest")/.cache/kernel}
shift || true
agent=$guest/build/boxlite-guest
busybox=${BUSYBOX:-$(command -v busybox)}
[[ -f $kdir/vmlinux ]] || { echo "vm_smoke: no $kdir/vmlinux (run scripts/fetch-kernel.sh)" >&2; exit 2; }
[[ -x $agent ]] || { echo "vm_smoke: build the agent first (make -C guest)" >&2; exit 2; }

work=$(mktemp -d /tmp/boxlite-vm-smoke.XXXXXX)
qemu_pid=
cleanup() {
  [[ -n $qemu_pid ]] && kill "$qemu_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# initramfs: the agent as /init plus the kernel modules
mkdir -p "$work/rd/lib/boxlite/modules"
cp "$agent" "$work/rd/init"
cp "$kdir"/modules/*.ko "$work/rd/lib/boxlite/modules/"
(cd "$work/rd" && find . | cpio -o -H newc --quiet) >"$work/initrd.cpio"

# root disk: busybox with a passwd/group for the user tests
mkdir -p "$work/root/bin" "$work/root/etc" "$work/root/tmp" "$work/root/root"
cp "$busybox" "$work/root/bin/busybox"
for a in $("$busybox" --list); do [[ $a == busybox ]] || ln -sf busybox "$work/root/bin/$a"; done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$work/root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$work/root/etc/group"
# as in systemd-based images: the agent must cope with a dangling absolute link
ln -s /run/systemd/resolve/stub-resolv.conf "$work/root/etc/resolv.conf"
mke2fs -q -t ext4 -d "$work/root" "$work/root.ext4" 64M >/dev/null

khz=$(awk -F: '/^cpu MHz/ {printf "%d", $2 * 1000; exit}' /proc/cpuinfo)
accel=${BOXLITE_ACCEL:-tcg}
net_append="boxlite.ip=10.0.2.15/24 boxlite.gw=10.0.2.2 boxlite.dns=10.0.2.3"
net_dev=(-netdev user,id=net0 -device virtio-net-device,netdev=net0)
if [[ ${BOXLITE_SMOKE_NET:-1} == 0 ]]; then net_append= net_dev=(); fi
sock=$work/agent.sock
python3 "$here/host_smoke.py" --listen "$sock" "$@" &
smoke=$!
for _ in $(seq 100); do [[ -S $sock ]] && break; sleep 0.05; done

qemu-system-x86_64 -M microvm,rtc=on -nodefaults -no-user-config -nographic -no-reboot \
  -m 512 -accel "$accel" -cpu max,-erms,-fsrm \
  -kernel "$kdir/vmlinux" -initrd "$work/initrd.cpio" \
  -append "console=ttyS0 panic=-1 cryptomgr.notests mitigations=off nokaslr tsc_early_khz=$khz tsc=reliable no_timer_check $net_append" \
  -serial "file:$work/console.log" \
  -drive id=root,file="$work/root.ext4",format=raw,if=none -device virtio-blk-device,drive=root \
  "${net_dev[@]}" \
  -chardev socket,id=agent,path="$sock",reconnect=1 \
  -device virtio-serial-device -device virtserialport,chardev=agent,name=boxlite.agent &
qemu_pid=$!

rc=0
wait "$smoke" || rc=$?
# SHUTDOWN (the last test) powers the VM off; QEMU must exit by itself.
for _ in $(seq 100); do kill -0 "$qemu_pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$qemu_pid" 2>/dev/null; then
  echo "vm_smoke: QEMU still running after the tests"
  rc=1
else
  qemu_pid=
fi
if [[ $rc -ne 0 || -n ${VERBOSE:-} ]]; then
  echo "--- console (last 60 lines) ---"
  tail -n 60 "$work/console.log"
fi
grep 'boxlite-guest:' "$work/console.log" | head -n 20 || true
exit "$rc"
