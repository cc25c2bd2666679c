#!/usr/bin/env node
// A scripted, misbehaving guest agent for the host test tier. The shim spawns it in place of
// the VM (ShimConfig.agentPeer); it connects to the agent socket and plays one scenario:
//
//   node fake-agent.mjs SCENARIO SOCKET
//
//   overrun      HELLO; on EXEC: STARTED, then STDOUT far past the 1 MiB window, never
//                waiting for credit (it counts what the socket accepted in BYTES_FILE)
//   garbage      HELLO; on EXEC: bytes that are no frame at all
//   bad-length   HELLO; on EXEC: a header announcing a payload over MAX_PAYLOAD
//   bad-payload  HELLO; on EXEC: STARTED, then an EXIT frame with trailing bytes
//   host-type    HELLO; on EXEC: an EXEC of its own (only a host may send one)
//   unknown-stream HELLO; on EXEC: STDOUT on a stream the host never opened
//   major2       HELLO of protocol 2.0
import fs from 'node:fs';
import net from 'node:net';
import { encode, FrameDecoder, HEADER_SIZE, MAX_PAYLOAD } from '../../dist/protocol/codec.js';

const [scenario, socketPath] = process.argv.slice(2);
const bytesFile = process.env.BYTES_FILE;
const socket = net.createConnection(socketPath);
const decoder = new FrameDecoder();
const hello = (major = 1) => encode({ type: 'HELLO', stream: 0, major, minor: 0, features: 0x1f, version: `fake-${scenario}` });

socket.on('connect', () => socket.write(hello(scenario === 'major2' ? 2 : 1)));
socket.on('error', () => {});
socket.on('close', () => process.exit(0));
socket.on('data', (chunk) => {
  for (const m of decoder.push(chunk)) if (m.type === 'EXEC') onExec(m.stream);
});

function onExec(stream) {
  switch (scenario) {
    case 'overrun': {
      socket.write(encode({ type: 'STARTED', stream, pid: 4242 }));
      const block = encode({ type: 'STDOUT', stream, data: Buffer.alloc(64 * 1024, 0x61) });
      let sent = 0;
      // 64 MiB without ever reading a WINDOW: the host must cut this off, not buffer it.
      const pump = () => {
        while (sent < 64 * 1024 * 1024 && !socket.destroyed) {
          sent += 64 * 1024;
          if (bytesFile) fs.writeFileSync(bytesFile, String(sent));
          if (!socket.write(block)) return void socket.once('drain', pump);
        }
      };
      pump();
      return;
    }
    case 'garbage':
      socket.write(Buffer.from('this is not a frame, it is garbage\n'.repeat(4)));
      return;
    case 'bad-length': {
      const h = Buffer.alloc(HEADER_SIZE);
      h.writeUInt32BE(MAX_PAYLOAD + 1, 0);
      h.writeUInt8(0x13, 4);
      h.writeUInt32BE(stream, 8);
      socket.write(h);
      return;
    }
    case 'bad-payload': {
      socket.write(encode({ type: 'STARTED', stream, pid: 4242 }));
      const exit = encode({ type: 'EXIT', stream, code: 0, signal: 0, reason: 0, message: '' });
      const bad = Buffer.concat([exit, Buffer.from([1, 2, 3])]);
      bad.writeUInt32BE(bad.length - HEADER_SIZE, 0);
      socket.write(bad);
      return;
    }
    case 'host-type':
      socket.write(encode({ type: 'EXEC', stream, flags: 0, rows: 0, cols: 0, timeoutMs: 0, user: '', cwd: '', argv: ['x'], env: [] }));
      return;
    case 'unknown-stream':
      socket.write(encode({ type: 'STDOUT', stream: stream + 1000, data: Buffer.from('stray') }));
      return;
  }
}
