// The `desktop` and `skillbox-test` test images: stand-ins for lscr.io/linuxserver/webtop (the
// ComputerBox default) and ghcr.io/boxlite-ai/boxlite-skillbox (SkillBox), built offline from
// Debian 12 .debs (recipe verified in ../shared/design/BOXTYPES.md §2.3 "desktop").
//
//   node scripts/make-test-image.mjs .cache/images/desktop --variant desktop [--debs DIR]
//   node scripts/make-test-image.mjs .cache/images/skillbox-test --variant skillbox-test [--debs DIR]
//
// desktop: what ComputerBox's commands use: Xvfb on :1 at 1024x768 (-ac: root's clients may
// connect), xdotool, xwininfo (x11-utils), python3 with PIL built with xcb (ImageGrab), xterm,
// LANG=C.UTF-8 (xdotool types non-ASCII text only in a UTF-8 locale) and DISPLAY=:1. Its
// entrypoint /usr/local/bin/boxlite-desktop starts Xvfb and a screen-sized window named
// "xfdesktop" (the name the reference's readiness probe looks for: real XFCE is ~420 MiB, needs
// dbus and the maintainer scripts' caches, and is slow under TCG), an `xev` whose button and key
// events go to /tmp/desktop-events.log, so tests can see clicks, scrolls, drags and keys with
// their coordinates.
// skillbox-test: desktop + a stand-in `claude` (/config/.local/bin/claude) that speaks Claude
// Code's stream-json protocol, /config/.claude.json, HOME=/config, as the real skillbox image.
//
// The .debs are unpacked without maintainer scripts; what those would have done and the image
// needs is done here (BOXTYPES.md §2.4): precompiled .pyc files (py3compile), a `nohup` shim
// (busybox-static has none). Cached by content: the layout is rebuilt only when the .debs, the
// busybox binary or this recipe change (key in OUTDIR/boxlite-build-key).

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { busyboxEntries, chrootRun, fetchDebs, pruneDebRoot, tarLayer, treeEntries, writeOciLayout } from '../make-test-image.mjs';
import {
  cachedBuild, compilePycs, debianNodeVersion, fetchNpmTarball, missingLibraries, NOHUP_SHIM, PATH_ENV, recipeHash, REPO_ROOT, run,
  saveBuild, sha256, writeFile,
} from './common.mjs';

/**
 * `apt-get -s install xvfb xdotool x11-utils python3-pil python3.11 xterm libc-bin
 * fonts-dejavu-core` onto an empty system without recommends (162 packages), minus what this
 * image never runs: the mesa/LLVM/DRI chain (Xvfb renders in software; the glvnd libGL it links
 * stays), perl, dpkg, tar, debconf, sysvinit-utils. The build checks every ELF's libraries.
 */
export const DESKTOP_PACKAGES = [
  'gcc-12-base', 'libc6', 'libgcc-s1', 'libbz2-1.0', 'liblzma5', 'libmd0', 'libpcre2-8-0', 'libselinux1', 'libzstd1',
  'zlib1g', 'libacl1', 'libcrypt1', 'libc-bin', 'libdb5.3', 'libssl3', 'libpython3.11-minimal', 'libexpat1',
  'python3.11-minimal', 'python3-minimal', 'media-types', 'mailcap', 'mime-support', 'libffi8', 'libtinfo6',
  'libncursesw6', 'libcom-err2', 'libkrb5support0', 'libk5crypto3', 'libkeyutils1', 'libkrb5-3', 'libgssapi-krb5-2',
  'libtirpc-common', 'libtirpc3', 'libnsl2', 'readline-common', 'libreadline8', 'libsqlite3-0', 'libuuid1',
  'libpython3.11-stdlib', 'python3.11', 'libpython3-stdlib', 'python3', 'fonts-dejavu-core', 'fontconfig-config',
  'libaudit-common', 'libcap-ng0', 'libaudit1', 'libblkid1', 'libbrotli1', 'libbsd0', 'libcap2', 'libdeflate0',
  'libpng16-16', 'libfreetype6', 'libfontconfig1', 'libfontenc1', 'libfribidi0', 'libgpg-error0', 'libgcrypt20',
  'libglvnd0', 'libxau6', 'libxdmcp6', 'libxcb1', 'libx11-data', 'libx11-6', 'libxcb-shm0', 'libxext6', 'libxfixes3',
  'libstdc++6', 'libglx0', 'libgl1', 'libmount1', 'libglib2.0-0', 'libgomp1', 'libgraphite2-3', 'libharfbuzz0b',
  'x11-common', 'libice6', 'libimagequant0', 'libjbig0', 'libjpeg62-turbo', 'liblcms2-2', 'liblerc4', 'liblz4-1',
  'libopenjp2-7', 'libpixman-1-0', 'libraqm0', 'libsm6', 'libsystemd0', 'libwebp7', 'libtiff6', 'libunwind8',
  'libutempter0', 'libwebpdemux2', 'libwebpmux3', 'libxt6', 'libxmu6', 'libxpm4', 'libxaw7', 'libxcb-shape0',
  'libxcomposite1', 'libxinerama1', 'xkb-data', 'libxkbcommon0', 'libxtst6', 'libxdo3', 'libxfont2', 'libxrender1',
  'libxft2', 'libxi6', 'libxkbfile1', 'libxmuu1', 'libxrandr2', 'libxv1', 'libxxf86dga1', 'python3-pil', 'x11-utils',
  'x11-xkb-utils', 'xbitmaps', 'xdotool', 'xserver-common', 'xterm', 'xvfb',
  // xdpyinfo and xvinfo (x11-utils) load these; Xvfb itself links libGL through glvnd.
  'libx11-xcb1', 'libxcb-glx0', 'libxxf86vm1',
];

/** The desktop's events log, read by the VM tests. */
export const EVENTS_LOG = '/tmp/desktop-events.log';

const DESKTOP_SCRIPT = `#!/bin/sh
# The test desktop (boxlite test image): Xvfb on $DISPLAY (default :1), then a screen-sized window
# named "xfdesktop" (what ComputerBox.waitUntilReady looks for), whose button and key events go to
# ${EVENTS_LOG}. Runs as the image's entrypoint; stays in the foreground while Xvfb runs.
W=\${DISPLAY_SIZEW:-1024}; H=\${DISPLAY_SIZEH:-768}; D=\${DISPLAY:-:1}
rm -f "/tmp/.X\${D#:}-lock"
# -noreset: an X server resets (the keymap too) whenever its last client disconnects.
Xvfb "$D" -screen 0 "\${W}x\${H}x24" -dpi 96 -nolisten tcp -noreset -ac +extension XTEST &
xvfb=$!
while [ ! -S "/tmp/.X11-unix/X\${D#:}" ]; do
  kill -0 "$xvfb" 2>/dev/null || { echo "boxlite-desktop: Xvfb exited" >&2; exit 1; }
  sleep 0.05
done
# A layout with é, € and friends on real keys (AltGr level): for any other character, xdotool binds
# a spare keycode for a moment, and a client slower than that (anything under TCG) reads the key
# after the binding is gone and drops the character.
setxkbmap -display "$D" -layout us -variant altgr-intl || echo "boxlite-desktop: setxkbmap failed" >&2
xev -display "$D" -name xfdesktop -geometry "\${W}x\${H}+0+0" -event button -event keyboard > ${EVENTS_LOG} 2>&1 &
echo "boxlite-desktop: ready on $D (\${W}x\${H})"
wait "$xvfb"
`;

/**
 * The stand-in for Claude Code's CLI: `--version` prints a version; otherwise it reads stream-json
 * user messages (one JSON object a line) and answers each with a system message, an assistant
 * message and a result "echo: <content>", flushing every line, as `claude --input-format
 * stream-json --output-format stream-json` does. The assistant text, and a line appended to
 * /tmp/claude-calls.log, carry what the test checks about how it was started and spoken to
 * (IS_SANDBOX, SHELL, DISPLAY, the token's length, the session id it got, its arguments).
 */
const FAKE_CLAUDE = `#!/usr/bin/python3
# Stand-in for Claude Code's CLI in the boxlite skillbox-test image: speaks stream-json.
import json, os, sys
if "--version" in sys.argv:
    print("2.0.0 (boxlite stand-in)")
    sys.exit(0)
SESSION = "boxlite-session-1"
def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\\n")
    sys.stdout.flush()
for line in sys.stdin:
    line = line.strip()
    if not line:
        continue
    msg = json.loads(line)
    content = msg.get("message", {}).get("content", "")
    env = "IS_SANDBOX=%s SHELL=%s DISPLAY=%s token_len=%d got_session=%s args=%s" % (
        os.environ.get("IS_SANDBOX"), os.environ.get("SHELL"), os.environ.get("DISPLAY"),
        len(os.environ.get("CLAUDE_CODE_OAUTH_TOKEN", "")), msg.get("session_id"), " ".join(sys.argv[1:]))
    with open("/tmp/claude-calls.log", "a") as log:  # what the test checks it was started with
        log.write(env + "\\n")
    emit({"type": "system", "subtype": "init", "session_id": SESSION})
    emit({"type": "assistant", "session_id": SESSION, "message": {"role": "assistant", "content": [{"type": "text", "text": env}]}})
    emit({"type": "result", "subtype": "success", "result": "echo: " + content, "session_id": SESSION})
`;

const DESKTOP_CONFIG = {
  Env: [PATH_ENV, 'LANG=C.UTF-8', 'DISPLAY=:1'],
  Entrypoint: ['/usr/local/bin/boxlite-desktop'],
  WorkingDir: '/',
};
const SKILLBOX_CONFIG = {
  ...DESKTOP_CONFIG,
  // As the real skillbox image: claude in /config/.local/bin, HOME=/config; npm offline so an
  // `npx add-skill` (installSkill) fails at once instead of retrying the network.
  Env: ['PATH=/config/.local/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'LANG=C.UTF-8', 'DISPLAY=:1', 'HOME=/config', 'NPM_CONFIG_OFFLINE=true'],
};

/**
 * skillbox-test only: Debian's nodejs 18 and what it needs beyond the desktop set, for `npx`
 * (SkillBox.installSkill runs `npx add-skill …`), plus npm from the registry's tarball (Debian's
 * npm is 408 node-* packages).
 */
export const NODE_PACKAGES = ['nodejs', 'libnode108', 'libuv1', 'libc-ares2', 'libnghttp2-14', 'libicu72', 'node-xtend', 'node-acorn', 'node-cjs-module-lexer', 'node-busboy', 'node-undici'];

/**
 * The node .debs. nodejs is pinned to Debian's own version: the host may have NodeSource's
 * (apt's candidate then is a version no enabled source ships), so fetchDebs would not find it.
 */
function fetchNodeDebs(debsDir = path.join(REPO_ROOT, '.cache', 'debs')) {
  // Debian's builds are +dfsg…~deb12uN; NodeSource's are N.N.N-1nodesource1.
  const cached = () => fs.readdirSync(debsDir).find((f) => /^nodejs_[^_]*\+dfsg[^_]*_[a-z0-9]+\.deb$/.test(f));
  fs.mkdirSync(debsDir, { recursive: true });
  if (!cached()) {
    const version = debianNodeVersion();
    const sandbox = process.getuid?.() === 0 ? ['-o', 'APT::Sandbox::User=root'] : [];
    run('apt-get', ['download', ...sandbox, '-q', `nodejs=${version}`], { cwd: debsDir });
  }
  const nodejs = { pkg: 'nodejs', file: path.join(debsDir, cached()) };
  return [nodejs, ...fetchDebs(NODE_PACKAGES.filter((p) => p !== 'nodejs'), debsDir)];
}

/** The ELF files of the image whose libraries its own loader cannot find. */
const DESKTOP_ELF_GLOBS = ['/usr/bin/*', '/usr/lib/xorg/*', '/usr/lib/x86_64-linux-gnu/*.so*', '/usr/lib/python3/dist-packages/PIL/*.so'];

/**
 * Runs the entrypoint in the staging root (own mount, PID and empty network namespaces) and the
 * commands ComputerBox uses: the readiness probe, the screen size, a pointer move read back, and
 * the reference's screenshot code. Fails the build when the desktop would not work in a box.
 */
function smokeTest(staging) {
  const script =
    'mount -t proc proc /proc; mount -t tmpfs tmpfs /tmp; mount -t devtmpfs dev /dev; export DISPLAY=:1 LANG=C.UTF-8; ' +
    '/usr/local/bin/boxlite-desktop >/tmp/d.log 2>&1 & ' +
    'i=0; until xwininfo -tree -root 2>/dev/null | grep -q "xfdesktop.*1024x768"; do i=$((i+1)); [ $i -gt 200 ] && { cat /tmp/d.log; exit 1; }; sleep 0.05; done; ' +
    'sleep 0.5; setxkbmap -display :1 -query | grep variant; xdotool getdisplaygeometry; xdotool mousemove 100 200; xdotool getmouselocation --shell | head -2; ' +
    'python3 -c "from PIL import ImageGrab; im = ImageGrab.grab(); print(im.size, im.getpixel((600, 100)))"';
  const out = run('unshare', ['--net', '--mount', '--pid', '--fork', 'chroot', staging, '/bin/sh', '-c', script], {
    env: { PATH: PATH_ENV.slice(5) },
    timeout: 60_000,
  });
  if (!/^variant:\s+altgr-intl$/m.test(out) || !/^1024 768$/m.test(out) || !/^X=100$/m.test(out) || !/^Y=200$/m.test(out) || !out.includes('(1024, 768) (255, 255, 255)')) {
    throw new Error(`desktop image smoke test failed:\n${out}`);
  }
}

/** Builds `variant` ('desktop' | 'skillbox-test') into outDir, or returns the cached layout. */
async function makeImage(variant, outDir, opts) {
  const debs = fetchDebs(DESKTOP_PACKAGES, opts.debsDir);
  const nodeDebs = variant === 'skillbox-test' ? fetchNodeDebs(opts.debsDir) : [];
  const npmTgz = variant === 'skillbox-test' ? fetchNpmTarball() : null;
  const bbPath = opts.busybox ?? '/bin/busybox';
  const key = sha256(
    JSON.stringify({
      variant,
      recipe: recipeHash(import.meta.url),
      busybox: sha256(fs.readFileSync(bbPath)),
      debs: [...debs, ...nodeDebs].map((d) => [path.basename(d.file), fs.statSync(d.file).size]),
      npm: npmTgz && sha256(fs.readFileSync(npmTgz)),
      ref: opts.ref ?? 'latest',
    }),
  );
  const result = (res) => ({ ...res, debs: debs.map(({ pkg, version }) => ({ pkg, version })) });
  const cached = cachedBuild(outDir, key);
  if (cached) return result(cached);

  const work = fs.mkdtempSync(path.join(os.tmpdir(), `boxlite-${variant}-image-`));
  try {
    const debRoot = path.join(work, 'layer');
    fs.mkdirSync(debRoot);
    for (const d of debs) run('dpkg-deb', ['-x', d.file, debRoot]);
    pruneDebRoot(debRoot);
    writeFile(debRoot, 'usr/local/bin/boxlite-desktop', DESKTOP_SCRIPT, 0o755);
    writeFile(debRoot, 'usr/local/bin/nohup', NOHUP_SHIM, 0o755);
    const bbTar = await tarLayer(busyboxEntries(bbPath));
    const staging = compilePycs(work, bbTar, debRoot);
    const missing = missingLibraries(staging, DESKTOP_ELF_GLOBS);
    if (missing) throw new Error(`desktop image: libraries missing:\n${missing}`);
    smokeTest(staging);
    const layers = [
      { tar: bbTar, compression: 'gzip' },
      { tar: await tarLayer(treeEntries(debRoot)), compression: 'gzip' },
    ];
    let config = DESKTOP_CONFIG;
    if (variant === 'skillbox-test') {
      // node + npm: a layer of their own, so the desktop layers stay the desktop image's blobs.
      const node = path.join(work, 'node');
      fs.mkdirSync(node);
      for (const d of nodeDebs) run('dpkg-deb', ['-x', d.file, node]);
      pruneDebRoot(node);
      const npmDir = path.join(node, 'usr/lib/node_modules/npm');
      fs.mkdirSync(npmDir, { recursive: true });
      run('tar', ['-xzf', npmTgz, '-C', npmDir, '--strip-components=1', '--no-same-owner']);
      fs.symlinkSync('../lib/node_modules/npm/bin/npm-cli.js', path.join(node, 'usr/bin/npm'));
      fs.symlinkSync('../lib/node_modules/npm/bin/npx-cli.js', path.join(node, 'usr/bin/npx'));
      fs.cpSync(node, staging, { recursive: true, verbatimSymlinks: true });
      const missingNode = missingLibraries(staging, DESKTOP_ELF_GLOBS);
      if (missingNode) throw new Error(`skillbox-test image: libraries missing:\n${missingNode}`);
      // What installSkill does offline must fail at once (ENOTCACHED), not retry the network.
      const npx = run('unshare', ['--net', 'chroot', staging, '/bin/sh', '-c',
        'export HOME=/config NPM_CONFIG_OFFLINE=true; node -v; npx add-skill x/y -y --agent claude-code; echo "npx exit $?"'],
        { env: { PATH: PATH_ENV.slice(5) }, timeout: 120_000 });
      if (!/^v18\./m.test(npx) || !/^npx exit [1-9]/m.test(npx)) throw new Error(`skillbox-test: npx check failed:\n${npx}`);
      fs.rmSync(path.join(staging, 'config'), { recursive: true, force: true }); // npm's logs from that check
      layers.push({ tar: await tarLayer(treeEntries(node)), compression: 'gzip' });

      const claude = path.join(work, 'claude');
      writeFile(claude, 'config/.local/bin/claude', FAKE_CLAUDE, 0o755);
      writeFile(claude, 'config/.claude.json', '{"mcpServers": {}}\n');
      fs.cpSync(claude, staging, { recursive: true });
      const answer = chrootRun(staging, ['/bin/sh', '-c',
        'export PATH=/config/.local/bin:$PATH; claude --version && echo \'{"type":"user","message":{"role":"user","content":"hi"}}\' | claude; rm -f /tmp/claude-calls.log']);
      if (!answer.includes('"result": "echo: hi"')) throw new Error(`skillbox-test: the stand-in claude does not answer:\n${answer}`);
      layers.push({ tar: await tarLayer(treeEntries(claude)), compression: 'gzip' });
      config = SKILLBOX_CONFIG;
    }
    const res = writeOciLayout(outDir, { layers, config, refName: opts.ref ?? 'latest' });
    saveBuild(outDir, key, res);
    return result(res);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

export const makeDesktopImage = (outDir, opts = {}) => makeImage('desktop', outDir, opts);
export const makeSkillboxTestImage = (outDir, opts = {}) => makeImage('skillbox-test', outDir, opts);
