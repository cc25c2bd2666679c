#!/usr/bin/env bash
# Install the BoxLite guest kernel: Debian's generic kernel (see docs/decisions/0001-guest-kernel.md).
#
#   scripts/fetch-kernel.sh [DEST]      DEST defaults to .cache/kernel in the repo
#
# The result is an input of scripts/build-runtime.mjs, which assembles the guest runtime
# (runtime/<platform>/) that the package ships; nothing here touches a $BOXLITE_HOME.
#
# Result in DEST:
#   vmlinux       uncompressed ELF kernel, booted directly through its PVH entry (x86_64)
#   vmlinuz       the packaged image, only where no vmlinux could be extracted (arm64)
#   modules/NN-name.ko   exactly the modules the guest needs, in load order (lexical)
#   kernel.json   {version, package, kernelRelease, ..., files: {path: sha256}}
#
# Idempotent: a no-op when kernel.json already matches the package apt would pick.
# Needs no root (apt-get download + dpkg-deb -x); as root it runs `apt-get update` once if apt
# knows no candidate. Environment:
#   BOXLITE_KERNEL_PACKAGE  pin a concrete package (e.g. linux-image-6.1.0-56-amd64)
#   BOXLITE_KERNEL_DEB      install from this local .deb instead of downloading
#   BOXLITE_KERNEL_CACHE    where downloaded .debs are kept (default .cache/debs in the repo)
#   BOXLITE_KERNEL_FORMAT   "bzimage" installs the packaged vmlinuz instead of vmlinux
set -euo pipefail

FORMAT_VERSION=1
REPO=$(cd "$(dirname "$0")/.." && pwd)
DEST=${1:-$REPO/.cache/kernel}
CACHE=${BOXLITE_KERNEL_CACHE:-$REPO/.cache/debs}

# Load order matters: each module after its dependencies (the agent loads them lexically).
# ext4 is a module in the generic kernel; it asks the crypto API for crc32c at mount time
# (metadata_csum) and there is no modprobe in the guest, so crc32c_generic is loaded up front.
MODULES=(
  virtio_ring virtio virtio_mmio virtio_blk virtio_console
  failover net_failover virtio_net
  crc16 mbcache jbd2 crc32c_generic ext4
  netfs fscache 9pnet 9p 9pnet_virtio
)

log() { printf 'fetch-kernel: %s\n' "$*"; }
die() { printf 'fetch-kernel: error: %s\n' "$*" >&2; exit 1; }

case "$(uname -m)" in
  x86_64) DEBARCH=amd64 ;;
  aarch64 | arm64) DEBARCH=arm64 ;;
  *) die "unsupported host architecture $(uname -m)" ;;
esac
META=linux-image-$DEBARCH

sha256() { sha256sum "$1" | cut -d' ' -f1; }
json_field() { # json_field FILE KEY -> string value of a top-level "KEY": "value"
  sed -n "s/^  \"$2\": \"\\([^\"]*\\)\".*/\\1/p" "$1" | head -n1
}

show_candidate() { # show_candidate PKG -> the apt record of the version apt would install
  apt-cache show --no-all-versions "$1" 2>/dev/null || true
}

resolve_package() { # sets PKG and VERSION
  if [[ -n ${BOXLITE_KERNEL_DEB:-} ]]; then
    [[ -f $BOXLITE_KERNEL_DEB ]] || die "BOXLITE_KERNEL_DEB=$BOXLITE_KERNEL_DEB does not exist"
    PKG=$(dpkg-deb -f "$BOXLITE_KERNEL_DEB" Package)
    VERSION=$(dpkg-deb -f "$BOXLITE_KERNEL_DEB" Version)
    return
  fi
  command -v apt-cache >/dev/null || die "apt-cache not found: this script needs a Debian-based host (or BOXLITE_KERNEL_DEB=/path/to/linux-image-*.deb)"
  local want=${BOXLITE_KERNEL_PACKAGE:-$META} record
  record=$(show_candidate "$want")
  if [[ -z $record && $(id -u) -eq 0 ]]; then
    log "apt knows no candidate for $want; running apt-get update"
    apt-get update -qq >/dev/null
    record=$(show_candidate "$want")
  fi
  if [[ -n ${BOXLITE_KERNEL_PACKAGE:-} ]]; then
    PKG=$want
    VERSION=$(sed -n 's/^Version: *//p' <<<"$record" | head -n1)
  else
    # One apt call: the meta package depends on exactly one image package at an exact version,
    # e.g. "Depends: linux-image-6.1.0-56-amd64 (= 6.1.192-2)".
    local dep
    dep=$(sed -n "s/^Depends: .*\(linux-image-[0-9][^ ,]*-$DEBARCH\) (= \([^)]*\)).*/\1 \2/p" <<<"$record" | head -n1)
    PKG=${dep%% *}
    VERSION=${dep#* }
  fi
}

resolve_package
if [[ -z ${PKG:-} || -z ${VERSION:-} ]]; then
  if [[ -z ${BOXLITE_KERNEL_PACKAGE:-} && -f $DEST/kernel.json ]]; then
    log "apt cannot resolve $META (no package lists?); keeping installed $(json_field "$DEST/kernel.json" package) $(json_field "$DEST/kernel.json" version)"
    exit 0
  fi
  die "apt knows no candidate for ${BOXLITE_KERNEL_PACKAGE:-$META}; run 'apt-get update' as root first"
fi

# Fast path: installed and matching.
if [[ -f $DEST/kernel.json && $(json_field "$DEST/kernel.json" package) == "$PKG" &&
      $(json_field "$DEST/kernel.json" version) == "$VERSION" &&
      $(json_field "$DEST/kernel.json" format) == "$FORMAT_VERSION" &&
      $(json_field "$DEST/kernel.json" requestedFormat) == "${BOXLITE_KERNEL_FORMAT:-auto}" ]]; then
  missing=0
  while read -r f; do [[ -f $DEST/$f ]] || missing=1; done < <(sed -n 's/^    "\([^"]*\)": "[0-9a-f]\{64\}".*/\1/p' "$DEST/kernel.json")
  if [[ $missing -eq 0 ]]; then
    log "up to date: $PKG $VERSION in $DEST"
    exit 0
  fi
  log "$DEST is incomplete; reinstalling"
fi

# 1. Get the .deb.
if [[ -n ${BOXLITE_KERNEL_DEB:-} ]]; then
  DEB=$BOXLITE_KERNEL_DEB
  log "using $DEB"
else
  mkdir -p "$CACHE"
  DEB=$(ls "$CACHE"/"${PKG}_${VERSION//:/%3a}"_*.deb 2>/dev/null | head -n1 || true)
  if [[ -z $DEB ]]; then
    log "downloading $PKG $VERSION"
    # As root, apt drops privileges to _apt for downloads; _apt may not be able to write the
    # cache (e.g. under /root), so download as root instead of failing on the sandbox.
    (cd "$CACHE" && apt-get download -q -o APT::Sandbox::User=root "$PKG=$VERSION" >/dev/null)
    DEB=$(ls "$CACHE"/"${PKG}_"*.deb 2>/dev/null | grep -F "_${VERSION//:/%3a}_" | head -n1 || true)
    [[ -n $DEB ]] || die "apt-get download $PKG=$VERSION produced no .deb in $CACHE"
    # Older versions are of no further use.
    for old in "$CACHE"/linux-image-*.deb; do [[ $old == "$DEB" ]] || rm -f "$old"; done
  else
    log "using cached $DEB"
  fi
fi

# 2. Unpack into a scratch dir next to DEST, assemble the result there, then swap it in.
mkdir -p "$(dirname "$DEST")"
WORK=$(mktemp -d "$(dirname "$DEST")/.kernel-tmp.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
if ! dpkg-deb -x "$DEB" "$WORK/deb"; then
  # a damaged cached download must not wedge every later run
  [[ -n ${BOXLITE_KERNEL_DEB:-} ]] || rm -f "$DEB"
  die "cannot unpack $DEB (removed from the cache; run again to download it afresh)"
fi
KREL=$(ls "$WORK/deb/lib/modules" 2>/dev/null | head -n1 || true)
[[ -n $KREL ]] || die "$DEB contains no /lib/modules"
OUT=$WORK/out
mkdir -p "$OUT/modules"

# 3. Kernel image. On x86_64 extract the ELF vmlinux from the bzImage: QEMU boots it through
# its PVH entry point, skipping the in-guest decompression (xz is ~3 s under TCG).
VMLINUZ=$(ls "$WORK/deb/boot/vmlinuz-"* 2>/dev/null | head -n1 || true)
[[ -n $VMLINUZ ]] || die "$DEB contains no /boot/vmlinuz-*"
is_elf() { [[ $(head -c4 "$1" | od -An -tx1 | tr -d ' \n') == 7f454c46 ]]; }
extract_vmlinux() { # extract_vmlinux BZIMAGE OUT: try each compressed stream the bzImage may carry
  local in=$1 out=$2 magic tool pos
  for pair in '\xFD7zXZ\x00:xz -dcq' '\x1F\x8B\x08\x00:gzip -dcq' '\x28\xB5\x2F\xFD:zstd -dcq' '\x02\x21\x4C\x18:lz4 -dcq'; do
    magic=${pair%%:*} tool=${pair#*:}
    command -v "${tool%% *}" >/dev/null || continue
    for pos in $(LC_ALL=C grep -obUaP "$magic" "$in" | cut -d: -f1 | head -n 8 || true); do
      # trailing bytes after the stream make the decompressor complain; the ELF is complete
      tail -c +$((pos + 1)) "$in" | $tool >"$out" 2>/dev/null || true
      if [[ -s $out ]] && is_elf "$out"; then return 0; fi
    done
  done
  rm -f "$out"
  return 1
}
if [[ $DEBARCH == amd64 && ${BOXLITE_KERNEL_FORMAT:-} != bzimage ]] && extract_vmlinux "$VMLINUZ" "$OUT/vmlinux"; then
  KERNEL_FILE=vmlinux
  BOOT_PROTOCOL=pvh
else
  [[ $DEBARCH == amd64 && ${BOXLITE_KERNEL_FORMAT:-} != bzimage ]] && log "warning: could not extract vmlinux (xz-utils missing?); installing the compressed bzImage (boots ~3 s slower under TCG)"
  cp "$VMLINUZ" "$OUT/vmlinuz"
  KERNEL_FILE=vmlinuz
  BOOT_PROTOCOL=$([[ $DEBARCH == amd64 ]] && echo bzimage || echo image)
fi

# 4. Modules, renamed NN-name.ko so that lexical order is load order.
MODDIR=$WORK/deb/lib/modules/$KREL
n=0
for m in "${MODULES[@]}"; do
  n=$((n + 1))
  name=$(printf '%02d-%s.ko' "$n" "$m")
  src=$(find "$MODDIR/kernel" \( -name "$m.ko" -o -name "$m.ko.xz" -o -name "$m.ko.zst" -o -name "$m.ko.gz" \) -print -quit)
  if [[ -z $src ]]; then
    if grep -qE "/$m\\.ko(\\.[a-z]+)?\$" "$MODDIR/modules.builtin" 2>/dev/null; then
      n=$((n - 1)) # built in: nothing to load
      continue
    fi
    die "module $m not found in $PKG"
  fi
  case $src in
    *.ko.xz) xz -dc "$src" >"$OUT/modules/$name" ;;
    *.ko.zst) zstd -dcq "$src" >"$OUT/modules/$name" ;;
    *.ko.gz) gzip -dc "$src" >"$OUT/modules/$name" ;;
    *) cp "$src" "$OUT/modules/$name" ;;
  esac
done

# 5. Manifest.
{
  printf '{\n'
  printf '  "format": "%s",\n' "$FORMAT_VERSION"
  printf '  "package": "%s",\n' "$PKG"
  printf '  "version": "%s",\n' "$VERSION"
  printf '  "kernelRelease": "%s",\n' "$KREL"
  printf '  "arch": "%s",\n' "$DEBARCH"
  printf '  "kernel": "%s",\n' "$KERNEL_FILE"
  printf '  "bootProtocol": "%s",\n' "$BOOT_PROTOCOL"
  printf '  "requestedFormat": "%s",\n' "${BOXLITE_KERNEL_FORMAT:-auto}"
  printf '  "debSha256": "%s",\n' "$(sha256 "$DEB")"
  printf '  "files": {\n'
  first=1
  for f in "$KERNEL_FILE" $(cd "$OUT" && ls modules/*.ko); do
    [[ $first -eq 1 ]] || printf ',\n'
    first=0
    printf '    "%s": "%s"' "$f" "$(sha256 "$OUT/$f")"
  done
  printf '\n  }\n}\n'
} >"$OUT/kernel.json"

# 6. Swap in: DEST is replaced whole, never left half-written.
if [[ -e $DEST ]]; then
  mv "$DEST" "$WORK/old"
fi
mv "$OUT" "$DEST"
log "installed $PKG $VERSION ($KREL) into $DEST: $KERNEL_FILE ($BOOT_PROTOCOL boot), $(ls "$DEST/modules" | wc -l) modules"
