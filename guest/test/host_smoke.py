#!/usr/bin/env python3
"""Smoke test of boxlite-guest (docs/protocol.md over a unix socket).

    python3 guest/test/host_smoke.py guest/build/boxlite-guest [TEST...]
        starts the agent with --host-mode --socket PATH (no VM needed)
    python3 guest/test/host_smoke.py --listen SOCKET [TEST...]
        waits for a booted VM's agent port to connect to SOCKET (test/vm_smoke.sh)

Plays the host: listens on a unix socket and drives the agent with real frames.
"""
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback

HELLO, PING, PONG, SHUTDOWN, ERROR = 0x01, 0x02, 0x03, 0x04, 0x05
TRUST = 0x06
EXEC, STARTED, STDIN, STDOUT, STDERR, EXIT, SIGNAL, RESIZE, WINDOW = range(0x10, 0x19)
NAMES = {HELLO: "HELLO", PING: "PING", PONG: "PONG", SHUTDOWN: "SHUTDOWN", ERROR: "ERROR", EXEC: "EXEC",
         STARTED: "STARTED", STDIN: "STDIN", STDOUT: "STDOUT", STDERR: "STDERR", EXIT: "EXIT",
         SIGNAL: "SIGNAL", RESIZE: "RESIZE", WINDOW: "WINDOW"}
OUTPUT_WINDOW = 1 << 20
STDIN_WINDOW = 256 << 10
ENV = ["PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME=/root"]


def s_(v):
    b = v.encode() if isinstance(v, str) else v
    return struct.pack(">I", len(b)) + b


def strlist(items):
    return struct.pack(">I", len(items)) + b"".join(s_(i) for i in items)


def exec_payload(argv, env=ENV, user="", cwd="", tty=False, rows=0, cols=0, timeout_ms=0):
    return (struct.pack(">IHHI", 1 if tty else 0, rows, cols, timeout_ms) + s_(user) + s_(cwd)
            + strlist(argv) + strlist(env))


def frame(ftype, stream, payload=b""):
    return struct.pack(">IBBHI", len(payload), ftype, 0, 0, stream) + payload


def parse_exit(p):
    code, sig, reason, mlen = struct.unpack(">iiBI", p[:13])
    return {"code": code, "signal": sig, "reason": reason, "message": p[13:13 + mlen].decode()}


class Result:
    def __init__(self):
        self.events = []  # (type, payload) in arrival order
        self.out = bytearray()
        self.err = bytearray()
        self.exit = None
        self.errors = []
        self.window0 = 0  # stdin credit granted back


class Host:
    """Plays the host side. spawn=True: starts the agent in --host-mode; else
    waits on `path` for an agent that connects by itself (a VM's agent port)."""

    def __init__(self, binary, workdir, path=None, accept_timeout=10):
        self.workdir = workdir
        self.vm = binary is None
        self.path = path or os.path.join(workdir, "agent.sock")
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Listen first, then appear under the final name: no refused connects.
        self.srv.bind(self.path + ".tmp")
        self.srv.listen(4)
        os.rename(self.path + ".tmp", self.path)
        self.srv.settimeout(accept_timeout)
        self.log = open(os.path.join(workdir, "agent.log"), "wb")
        self.proc = None
        if binary:
            self.proc = subprocess.Popen([binary, "--host-mode", "--socket", self.path, "--debug"],
                                         stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        self.accept()
        self.srv.settimeout(10)
        self.streams = {}
        self.link = []  # stream-0 frames
        self.next_id = 1
        self.auto_credit = True

    def accept(self):
        self.conn, _ = self.srv.accept()
        self.conn.settimeout(0.05)
        self.buf = b""

    def send(self, ftype, stream, payload=b""):
        self.conn.sendall(frame(ftype, stream, payload))

    def read_frame(self, deadline):
        while True:
            if len(self.buf) >= 12:
                length, ftype, flags, res, stream = struct.unpack(">IBBHI", self.buf[:12])
                assert flags == 0 and res == 0, "bad header from agent"
                assert length <= 256 * 1024, "oversized frame from agent"
                if len(self.buf) >= 12 + length:
                    payload = self.buf[12:12 + length]
                    self.buf = self.buf[12 + length:]
                    return ftype, stream, payload
            if time.monotonic() > deadline:
                return None
            try:
                chunk = self.conn.recv(1 << 20)
            except socket.timeout:
                continue
            if not chunk:
                raise EOFError("agent closed the connection")
            self.buf += chunk

    def pump(self, until, timeout=10.0):
        """Dispatches frames until until() is true; fails after timeout."""
        deadline = time.monotonic() + timeout
        while not until():
            f = self.read_frame(deadline)
            if f is None:
                raise TimeoutError("timed out waiting")
            self.dispatch(*f)

    def dispatch(self, ftype, stream, payload):
        if stream == 0:
            self.link.append((ftype, payload))
            return
        r = self.streams.setdefault(stream, Result())
        r.events.append((ftype, payload))
        if ftype == STDOUT:
            r.out += payload
            if payload and self.auto_credit:
                self.send(WINDOW, stream, struct.pack(">BI", 1, len(payload)))
        elif ftype == STDERR:
            r.err += payload
            if payload and self.auto_credit:
                self.send(WINDOW, stream, struct.pack(">BI", 2, len(payload)))
        elif ftype == EXIT:
            r.exit = parse_exit(payload)
        elif ftype == ERROR:
            r.errors.append(payload[4:].decode())
        elif ftype == WINDOW:
            fd, n = struct.unpack(">BI", payload)
            assert fd == 0, "agent granted credit for fd %d" % fd
            r.window0 += n

    def exec(self, argv, **kw):
        sid = self.next_id
        self.next_id += 1
        self.streams[sid] = Result()
        self.send(EXEC, sid, exec_payload(argv, **kw))
        return sid

    def wait_exit(self, sid, timeout=10.0):
        self.pump(lambda: self.streams[sid].exit is not None, timeout)
        return self.streams[sid]

    def run(self, argv, timeout=10.0, **kw):
        return self.wait_exit(self.exec(argv, **kw), timeout)

    def link_frame(self, ftype, timeout=5.0):
        def found():
            return any(t == ftype for t, _ in self.link)
        self.pump(found, timeout)
        for i, (t, p) in enumerate(self.link):
            if t == ftype:
                del self.link[i]
                return p


def check_order(r):
    """STARTED, data..., one empty STDOUT and one empty STDERR, then EXIT (section 3)."""
    types = [t for t, _ in r.events if t not in (WINDOW, ERROR)]
    assert types[0] == STARTED and types[-1] == EXIT and types.count(EXIT) == 1, types
    data = [(t, p) for t, p in r.events if t in (STDOUT, STDERR)]
    assert sorted(t for t, p in data if not p) == [STDOUT, STDERR], "one EOF per output: %r" % data
    assert not data[-1][1] and not data[-2][1], "EOFs come after all data"


TESTS = []


def test(fn):
    TESTS.append(fn)
    return fn


@test
def hello_first(h):
    p = h.first_hello
    major, minor, features = struct.unpack(">HHI", p[:8])
    assert (major, minor, features) == (1, 0, 0x7F), (major, minor, features)
    assert p[12:] == b"0.1.0" and struct.unpack(">I", p[8:12])[0] == 5


@test
def hello_and_ping(h):
    h.send(HELLO, 0, struct.pack(">HHI", 1, 0, 0) + s_("test"))
    assert struct.unpack(">H", h.link_frame(HELLO)[:2])[0] == 1
    data = bytes(range(256)) * 10
    h.send(PING, 0, data)
    assert h.link_frame(PONG) == data


@test
def trust_accepted_on_stream0(h):
    """TRUST (the box CA) is a stream-0 message: a PEM is taken, anything else is logged, never a
    protocol error; on another stream it is one (bad_stream)."""
    pem = b"-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n"
    h.send(TRUST, 0, b"not a certificate")
    h.send(TRUST, 0, pem)
    h.send(PING, 0, b"after-trust")
    assert h.link_frame(PONG) == b"after-trust"
    assert not any(t == ERROR for t, _ in h.link), h.link
    r = h.run(["true"])
    assert r.exit["code"] == 0, r.exit


@test
def exec_out_err_exit3(h):
    r = h.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert r.exit == {"code": 3, "signal": 0, "reason": 0, "message": ""}, r.exit
    assert bytes(r.out) == b"out\n" and bytes(r.err) == b"err\n", (r.out, r.err)
    check_order(r)


@test
def command_not_found(h):
    r = h.run(["nosuchcmd"])
    assert r.exit == {"code": 127, "signal": 0, "reason": 3, "message": "command not found: nosuchcmd"}, r.exit
    assert [t for t, _ in r.events] == [EXIT], "only EXIT for a spawn failure: %r" % r.events


@test
def not_executable(h):
    path = "/tmp/boxlite-smoke-plain-%d" % os.getpid()
    r = h.run(["sh", "-c", 'echo "not a program" > "$0"; chmod 644 "$0"', path])
    assert r.exit["code"] == 0, r.exit
    r = h.run([path])
    assert r.exit == {"code": 126, "signal": 0, "reason": 3, "message": "permission denied: " + path}, r.exit
    h.run(["chmod", "755", path])
    r = h.run([path])
    h.run(["rm", "-f", path])
    assert r.exit == {"code": 126, "signal": 0, "reason": 3, "message": "exec format error: " + path}, r.exit


@test
def bad_cwd(h):
    r = h.run(["true"], cwd="/nonexistent/dir")
    assert r.exit["reason"] == 3 and r.exit["code"] == 125, r.exit
    assert "/nonexistent/dir" in r.exit["message"], r.exit


@test
def cwd_and_env(h):
    r = h.run(["sh", "-c", 'pwd; echo "$FOO"'], cwd="/tmp", env=ENV + ["FOO=bar baz"])
    assert bytes(r.out) == b"/tmp\nbar baz\n", r.out


@test
def stdin_1mib_through_cat(h):
    data = random.Random(1).randbytes(1 << 20)
    sid = h.exec(["cat"])
    r = h.streams[sid]
    sent = 0
    while sent < len(data):
        # Never more than the 256 KiB window outstanding.
        h.pump(lambda: sent - r.window0 + 32768 <= STDIN_WINDOW or r.exit is not None)
        n = min(32768, len(data) - sent)
        h.send(STDIN, sid, data[sent:sent + n])
        sent += n
    h.send(STDIN, sid, b"")
    h.wait_exit(sid, 20)
    assert r.exit["code"] == 0 and r.exit["reason"] == 0, r.exit
    assert bytes(r.out) == data, "stdin came back altered (%d bytes)" % len(r.out)
    h.pump(lambda: r.window0 == len(data))


@test
def stdin_eof_ends_cat(h):
    sid = h.exec(["cat"])
    h.send(STDIN, sid, b"abc")
    h.send(STDIN, sid, b"")
    r = h.wait_exit(sid)
    assert bytes(r.out) == b"abc" and r.exit["code"] == 0, (r.out, r.exit)


@test
def signal_term(h):
    sid = h.exec(["sleep", "100"])
    h.pump(lambda: any(t == STARTED for t, _ in h.streams[sid].events))
    h.send(SIGNAL, sid, struct.pack(">i", 15))
    r = h.wait_exit(sid)
    assert r.exit == {"code": 143, "signal": 15, "reason": 1, "message": ""}, r.exit


@test
def killed_by_own_signal(h):
    r = h.run(["sh", "-c", "kill -9 $$"])
    assert r.exit == {"code": 137, "signal": 9, "reason": 1, "message": ""}, r.exit


@test
def timeout(h):
    t0 = time.monotonic()
    r = h.run(["sleep", "10"], timeout_ms=500)
    took = time.monotonic() - t0
    assert r.exit == {"code": 137, "signal": 9, "reason": 2, "message": "timed out after 500 ms"}, r.exit
    assert 0.4 < took < 5, took
    check_order(r)


@test
def background_holder_not_awaited(h):
    t0 = time.monotonic()
    r = h.run(["sh", "-c", "sleep 5 & echo hi"])
    assert time.monotonic() - t0 < 3, "waited for the background process"
    assert bytes(r.out) == b"hi\n" and r.exit["code"] == 0, (r.out, r.exit)


def started_pid(r):
    return next(struct.unpack(">I", p)[0] for t, p in r.events if t == STARTED)


def group_alive(h, pgid):
    if h.vm:
        return h.run(["kill", "-0", "-%d" % pgid]).exit["code"] == 0
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def kill_group(h, pgid):
    """Ends what an execution left running: the agent does not (nor does docker exec)."""
    if h.vm:
        h.run(["kill", "-9", "-%d" % pgid])
    else:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@test
def background_writer_does_not_withhold_exit(h):
    """What the pipes hold when the main process exits is forwarded, then the
    streams end, even while a background process keeps them full (section 3)."""
    cases = [
        (["sh", "-c", "yes & exit 0"], False, None),
        (["sh", "-c", "echo last; yes >/dev/null & exit 0"], False, b"last\n"),
        (["sh", "-c", "trap '' HUP; yes & exit 0"], True, None),
    ]
    pgids = []
    try:
        for argv, tty, want in cases:
            t0 = time.monotonic()
            sid = h.exec(argv, tty=tty)
            r = h.streams[sid]
            h.pump(lambda: r.exit is not None or any(t == STARTED for t, _ in r.events), 3)
            if r.exit is None:
                pgids.append(started_pid(r))  # setsid: the pid is the group
            h.wait_exit(sid, timeout=max(0.1, 3 - (time.monotonic() - t0)))
            assert r.exit == {"code": 0, "signal": 0, "reason": 0, "message": ""}, (argv, r.exit)
            check_order(r)
            out = bytes(r.out)
            if want is not None:
                assert out == want, (argv, out[:200])
            else:
                assert set(out) <= set(b"y\r\n"), (argv, out[:200])
        assert group_alive(h, pgids[1]), "the agent must not kill background processes"
        # Deterministic: no credit while it runs, so the pipe is full at the exit
        # and stays full; then credit as a consumer returns it. Only the
        # snapshot (at most a pipe's size) follows the first window.
        h.auto_credit = False
        sid = h.exec(["sh", "-c", "for i in 1 2 3 4; do yes & done; sleep 0.3; echo bye >&2; exit 0"])
        r = h.streams[sid]
        h.pump(lambda: any(t == STARTED for t, _ in r.events), 3)
        pgids.append(started_pid(r))
        h.pump(lambda: len(r.out) == OUTPUT_WINDOW and r.err == b"bye\n", 5)
        time.sleep(1)  # sh is reaped meanwhile; credit before that would still be used
        t0 = time.monotonic()
        granted = OUTPUT_WINDOW
        while r.exit is None:
            assert time.monotonic() - t0 < 3, "no EXIT after %d bytes" % len(r.out)
            if len(r.out) + OUTPUT_WINDOW > granted:
                h.send(WINDOW, sid, struct.pack(">BI", 1, len(r.out) + OUTPUT_WINDOW - granted))
                granted = len(r.out) + OUTPUT_WINDOW
            try:
                h.pump(lambda: r.exit is not None or len(r.out) + OUTPUT_WINDOW > granted, 0.2)
            except TimeoutError:
                pass
        assert r.exit["code"] == 0 and r.exit["reason"] == 0, r.exit
        assert OUTPUT_WINDOW < len(r.out) <= 2 * OUTPUT_WINDOW, "%d bytes after a full window" % len(r.out)
        assert set(bytes(r.out)) == set(b"y\n")
        check_order(r)
    finally:
        h.auto_credit = True
        for pgid in pgids:
            kill_group(h, pgid)
    deadline = time.monotonic() + 5
    while any(group_alive(h, g) for g in pgids):
        assert time.monotonic() < deadline, "background yes still running"
        time.sleep(0.05)


@test
def output_flow_control(h):
    h.auto_credit = False
    try:
        total = 3 * (1 << 20) + 12345
        sid = h.exec(["head", "-c", str(total), "/dev/zero"])
        r = h.streams[sid]
        h.pump(lambda: len(r.out) == OUTPUT_WINDOW)
        time.sleep(0.3)
        try:
            h.pump(lambda: len(r.out) > OUTPUT_WINDOW, timeout=0.3)
            raise AssertionError("agent sent beyond its window")
        except TimeoutError:
            pass
        granted = OUTPUT_WINDOW
        while r.exit is None:
            h.send(WINDOW, sid, struct.pack(">BI", 1, len(r.out) + OUTPUT_WINDOW - granted))
            granted = len(r.out) + OUTPUT_WINDOW
            h.pump(lambda: len(r.out) + OUTPUT_WINDOW > granted or r.exit is not None)
        assert len(r.out) == total and r.exit["code"] == 0, (len(r.out), r.exit)
    finally:
        h.auto_credit = True


@test
def concurrent_16(h):
    sids = {h.exec(["sh", "-c", 'for i in 1 2 3; do echo "$0-$i"; done; exit $(($0 % 7))', str(n)]): n
            for n in range(16)}
    h.pump(lambda: all(h.streams[s].exit is not None for s in sids), 20)
    for sid, n in sids.items():
        r = h.streams[sid]
        assert bytes(r.out) == ("%d-1\n%d-2\n%d-3\n" % (n, n, n)).encode(), r.out
        assert r.exit["code"] == n % 7, r.exit
        check_order(r)


@test
def tty(h):
    r = h.run(["sh", "-c", "tty; stty size; echo err >&2"], tty=True, rows=30, cols=100)
    out = bytes(r.out)
    assert b"/dev/pts/" in out and b"30 100" in out and b"err" in out, out
    assert r.err == b"" and r.exit["code"] == 0, (r.err, r.exit)
    check_order(r)


@test
def tty_resize_and_stdin(h):
    sid = h.exec(["sh", "-c", "read line; stty size; echo got:$line"], tty=True)
    h.pump(lambda: any(t == STARTED for t, _ in h.streams[sid].events))
    h.send(RESIZE, sid, struct.pack(">HH", 40, 120))
    h.send(STDIN, sid, b"hello\n")
    r = h.wait_exit(sid)
    assert b"40 120" in r.out and b"got:hello" in r.out, bytes(r.out)


@test
def user_switching(h):
    if not h.vm and os.geteuid() != 0:
        return  # a non-root host-mode agent does not switch users
    r = h.run(["id", "-u"], user="nobody")
    assert bytes(r.out).strip() == b"65534", r.out
    r = h.run(["id"], user="1234:5678")
    assert b"uid=1234" in r.out and b"gid=5678" in r.out, r.out
    r = h.run(["id", "-u"], user="nosuch")
    assert r.exit["reason"] == 3 and r.exit["code"] == 125, r.exit
    assert r.exit["message"].startswith("unable to find user nosuch"), r.exit


@test
def capability_baseline(h):
    if not h.vm and os.geteuid() != 0:
        return
    r = h.run(["sh", "-c", "grep CapBnd /proc/self/status"])
    assert bytes(r.out).split()[-1] == b"00000000a80425fb", r.out


@test
def container_view(h):
    """VM only: what a command sees inside the container."""
    if not h.vm:
        return
    net = os.environ.get("BOXLITE_SMOKE_NET", "1") != "0"
    r = h.run(["sh", "-c", "hostname; cat /etc/hostname /etc/hosts; cat /etc/resolv.conf; echo pid=$$; "
                           "cat /proc/1/comm; ls /dev; ls -ld /tmp; echo end"])
    out = bytes(r.out).decode()
    assert r.exit["code"] == 0, (r.exit, out, bytes(r.err))
    lines = out.splitlines()
    assert lines[0] == "boxlite" and lines[1] == "boxlite", out
    assert "127.0.0.1\tlocalhost boxlite" in out, out
    assert ("host.boxlite.internal" in out) == net, out
    assert ("nameserver 10.0.2.3" in out) == net, out
    assert "boxlite-init" in out, out
    pid = int(out.split("pid=")[1].split()[0])
    assert pid < 100, "pid %d: not in the container's pid namespace" % pid
    for dev in ("null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm", "fd", "stdin"):
        assert dev in lines, (dev, out)
    assert "drwxrwxrwt" in out, out
    started = [p for t, p in r.events if t == STARTED][0]
    assert struct.unpack(">I", started)[0] < 100, "STARTED pid must be the container pid"
    r = h.run(["sh", "-c", "kill -9 1; echo survived"])  # the container init ignores it
    assert bytes(r.out) == b"survived\n", r.out
    r = h.run(["true"])
    assert r.exit["code"] == 0, r.exit


@test
def device_nodes_unusable(h):
    """VM only: a node the container makes (it keeps CAP_MKNOD) does not open,
    on the image or on the tmpfs mounts; the agent's own /dev nodes do."""
    if not h.vm:
        return
    r = h.run(["cat", "/sys/block/vda/dev"])
    majmin = bytes(r.out).decode().strip() or "254:0"
    maj, mn = majmin.split(":")
    script = ('for d in /root /dev /tmp /dev/shm; do mknod $d/x b %s %s || echo "$d: mknod failed"; '
              'dd if=$d/x of=/dev/null count=1 2>/dev/null && echo "$d: read the disk"; '
              'dd if=$d/x of=/dev/null count=1 2>&1 | grep -q "Permission denied" || echo "$d: no EACCES"; '
              'rm -f $d/x; done; '
              'echo hi >/dev/null && head -c 5 /dev/zero | wc -c && head -c 7 /dev/urandom | wc -c && '
              'head -c 3 /dev/random | wc -c && ! echo x 2>/dev/null >/dev/full && echo nodes-ok' % (maj, mn))
    r = h.run(["sh", "-c", script])
    out = bytes(r.out).decode()
    assert out.split() == ["5", "7", "3", "nodes-ok"], (majmin, out, bytes(r.err))
    r = h.run(["sh", "-c", "tty && echo ok"], tty=True)
    assert b"/dev/pts/" in r.out and b"ok" in r.out, bytes(r.out)


@test
def unknown_stream_and_bad_frames(h):
    h.send(STDIN, 999, b"x")
    h.pump(lambda: 999 in h.streams and h.streams[999].errors)
    assert "unknown stream" in h.streams[999].errors[0]
    # A frame with a valid length but an unknown type is skipped ...
    h.conn.sendall(frame(0x7F, 0, b"zz") + frame(PING, 0, b"after"))
    msg = h.link_frame(ERROR)
    assert b"unknown_type" in msg, msg
    assert h.link_frame(PONG) == b"after"
    # ... and so is a bad payload (EXEC without argv).
    h.send(EXEC, 77, struct.pack(">IHHI", 0, 0, 0, 0) + s_("") + s_("") + strlist([]) + strlist([]))
    assert b"bad_payload" in h.link_frame(ERROR)
    h.send(PING, 0, b"still")
    assert h.link_frame(PONG) == b"still"
    # A length beyond MAX_PAYLOAD loses framing: the buffered input is dropped.
    h.conn.sendall(struct.pack(">IBBHI", 1 << 30, STDOUT, 0, 0, 1))
    assert b"too_large" in h.link_frame(ERROR)
    time.sleep(0.2)
    h.send(PING, 0, b"recovered")
    assert h.link_frame(PONG) == b"recovered"


@test
def window_violations(h):
    sid = h.exec(["sleep", "5"])
    h.pump(lambda: any(t == STARTED for t, _ in h.streams[sid].events))
    h.send(SIGNAL, sid, struct.pack(">i", 0))
    h.pump(lambda: h.streams[sid].errors)
    assert "invalid signal" in h.streams[sid].errors[0]
    h.send(WINDOW, sid, struct.pack(">BI", 1, 0x7FFFFFFF))  # 1 MiB + this > 2^31
    assert b"2^31" in h.link_frame(ERROR)
    sent = 0
    while not any(t == ERROR for t, _ in h.link):  # sleep never reads its stdin
        assert sent < 64 << 20, "no ERROR for a stdin window overrun"
        h.send(STDIN, sid, b"z" * 65536)
        sent += 65536
        try:
            h.pump(lambda: any(t == ERROR for t, _ in h.link), timeout=0.05)
        except TimeoutError:
            pass
    assert b"window" in h.link_frame(ERROR)
    h.send(SIGNAL, sid, struct.pack(">i", 9))
    r = h.wait_exit(sid)
    assert r.exit["reason"] == 1 and r.exit["signal"] == 9, r.exit
    # all accepted stdin is credited back, also what the child never read
    h.pump(lambda: r.window0 == sent - 65536)


@test
def reconnect_keeps_streams(h):
    sid = h.exec(["sh", "-c", "sleep 1; echo late"])
    h.pump(lambda: any(t == STARTED for t, _ in h.streams[sid].events))
    h.conn.close()
    h.accept()
    h.link = []
    f = h.read_frame(time.monotonic() + 10)
    assert f and f[0] == HELLO and f[1] == 0, "a new host first gets HELLO: %r" % (f,)
    r = h.wait_exit(sid)
    assert bytes(r.out) == b"late\n" and r.exit["code"] == 0, (r.out, r.exit)
    h.send(PING, 0, b"x")
    h.link_frame(PONG)
    assert not any(t == HELLO for t, _ in h.link), "exactly one HELLO per connection"


@test
def stream_id_reuse_rules(h):
    sid = h.exec(["sleep", "2"])
    h.send(EXEC, sid, exec_payload(["true"]))
    h.pump(lambda: h.streams[sid].errors)
    assert "already in use" in h.streams[sid].errors[0]
    h.send(SIGNAL, sid, struct.pack(">i", 9))
    r = h.wait_exit(sid)
    assert r.exit["signal"] == 9, r.exit
    r.exit = None
    h.send(EXEC, sid, exec_payload(["true"]))  # free again after EXIT
    assert h.wait_exit(sid).exit["code"] == 0


@test
def throughput(h):
    """Only with BOXLITE_SMOKE_BENCH=1: MiB/s of stdout and stdin through the agent."""
    if not os.environ.get("BOXLITE_SMOKE_BENCH"):
        return
    n = 64 << 20
    t0 = time.monotonic()
    r = h.run(["dd", "if=/dev/zero", "bs=32768", "count=%d" % (n // 32768)], timeout=120)
    dt = time.monotonic() - t0
    assert len(r.out) == n, len(r.out)
    print("     stdout: %.0f MiB/s" % (n / dt / (1 << 20)))
    sid = h.exec(["sh", "-c", "cat > /dev/null"])
    r = h.streams[sid]
    data = b"y" * 32768
    sent = 0
    t0 = time.monotonic()
    while sent < 16 << 20:
        h.pump(lambda: sent - r.window0 + len(data) <= STDIN_WINDOW)
        h.send(STDIN, sid, data)
        sent += len(data)
    h.send(STDIN, sid, b"")
    h.wait_exit(sid, 120)
    dt = time.monotonic() - t0
    assert r.exit["code"] == 0, r.exit
    print("     stdin:  %.0f MiB/s" % (sent / dt / (1 << 20)))


@test
def shutdown(h):
    h.send(SHUTDOWN, 0)
    if h.proc:
        h.proc.wait(5)
        assert h.proc.returncode == 0, h.proc.returncode
        return
    try:  # a VM powers off: its port closes
        while h.read_frame(time.monotonic() + 30) is not None:
            pass
        raise AssertionError("the VM did not power off")
    except EOFError:
        pass


def main():
    args = sys.argv[1:]
    listen = None
    if args[:1] == ["--listen"]:
        listen, args = args[1], args[2:]
        binary = None
    else:
        binary = os.path.abspath(args[0] if args else
                                 os.path.join(os.path.dirname(__file__), "..", "build", "boxlite-guest"))
        args = args[1:]
    only = args
    workdir = tempfile.mkdtemp(prefix="boxlite-guest-smoke-")
    h = Host(binary, workdir, path=listen, accept_timeout=10 if binary else 180)
    passed = failed = 0
    t0 = time.monotonic()
    try:
        # A VM under TCG on a busy host can take long from connect to /init.
        f = h.read_frame(time.monotonic() + (10 if binary else 120))
        assert f and f[0] == HELLO and f[1] == 0, "first frame must be HELLO: %r" % (f,)
        h.first_hello = f[2]
        for t in TESTS:
            if only and t.__name__ not in only:
                continue
            try:
                t(h)
                passed += 1
                print("ok   %s" % t.__name__)
            except Exception:
                failed += 1
                print("FAIL %s" % t.__name__)
                traceback.print_exc()
    finally:
        if h.proc and h.proc.poll() is None:
            h.proc.terminate()
            try:
                h.proc.wait(5)
            except subprocess.TimeoutExpired:
                h.proc.kill()
        h.log.close()
        if failed and h.proc:
            sys.stdout.write("--- agent log (%s) ---\n" % os.path.join(workdir, "agent.log"))
            sys.stdout.write(open(os.path.join(workdir, "agent.log"), errors="replace").read()[-4000:])
    what = os.path.basename(binary) if binary else "vm"
    print("smoke (%s, %.1f s): %d passed, %d failed" % (what, time.monotonic() - t0, passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
