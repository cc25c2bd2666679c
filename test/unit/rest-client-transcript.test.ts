// Our REST client against the capture server, through the same scenarios the reference's 0.10
// client was captured with (scripts/capture-rest-transcript.mjs → test/fixtures/rest-transcript.json):
// the same requests (method, path, query, headers, body), the same WebSocket frames, and the
// same results, apart from the deliberate differences listed in DIFFERENCES.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as sdk from '../../src/index.js';
import { restTimings } from '../../src/rest/client/execution.js';
import { CaptureServer, SCENARIOS, SCENARIO_CAPABILITIES, normalize, type Captured, type ClientModule } from '../fixtures/rest-capture-server.js';

const transcript = JSON.parse(fs.readFileSync(new URL('../fixtures/rest-transcript.json', import.meta.url), 'utf8')) as {
  client: string;
  scenarios: Record<string, { notes: Record<string, unknown>; requests: Captured[] }>;
};

/**
 * Where we differ on purpose: `user` is sent with exec (the reference drops it); an error's
 * message carries its prefix once (the reference doubles it: "images error: images error: …");
 * runtime metrics report the server's num_running_boxes (the reference computes created − stopped);
 * a 404 keeps the server's message (the reference calls every 404 "box not found: …", even a path's);
 * ids and names are percent-encoded in paths (the reference pastes them raw: get('a/b') → /boxes/a/b);
 * after a drop, an execution the status probe calls finished is attached once more at once (the server
 * replays the output it had not seen acknowledged, then the exit frame), where the reference stops.
 */
function comparable(entries: Captured[], ours: boolean): Captured[] {
  return entries.map((raw) => {
    const e = { ...raw, path: decodeURIComponent(raw.path) } as Captured;
    if (ours && e.kind === 'http' && e.path.endsWith('/exec') && e.body && typeof e.body === 'object') {
      const { user: _user, ...rest } = e.body as Record<string, unknown>;
      const headers = { ...e.headers };
      delete headers['content-length'];
      return { ...e, body: rest, headers };
    }
    if (!ours && e.kind === 'http' && e.path.endsWith('/exec')) {
      const headers = { ...e.headers };
      delete headers['content-length'];
      return { ...e, headers };
    }
    return e;
  });
}

function undouble(v: unknown): unknown {
  if (typeof v !== 'string') return v;
  const m = /^([a-zA-Z ]+: )\1/.exec(v);
  return m ? v.slice(m[1]!.length) : v;
}

let server: CaptureServer;
let url: string;
const saved = { ...restTimings };
beforeAll(async () => {
  restTimings.reconnectFirstMs = 200; // the reference waits 15 s before re-attaching
  server = new CaptureServer({ apiKey: 'test-key' });
  url = await server.listen();
});
afterAll(async () => {
  Object.assign(restTimings, saved);
  await server.close();
});

describe(`our REST client sends what ${transcript.client} sends`, () => {
  for (const name of Object.keys(SCENARIOS)) {
    it(name, async () => {
      const expected = transcript.scenarios[name];
      expect(expected, `scenario ${name} is in the transcript (re-run scripts/capture-rest-transcript.mjs)`).toBeDefined();
      server.reset(SCENARIO_CAPABILITIES[name]);
      const notes: Record<string, unknown> = {};
      const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'boxlite-rest-client-'));
      try {
        await SCENARIOS[name]!({ sdk: sdk as unknown as ClientModule, url, scratch, note: (k, v) => (notes[k] = v ?? null) });
      } catch (err) {
        notes.scenarioError = String((err as Error).message);
      } finally {
        fs.rmSync(scratch, { recursive: true, force: true });
      }
      await server.settle(100);
      const got = comparable(normalize(server.log), true);
      const want = comparable(normalize(expected!.requests), false);
      expect(got.filter((e) => e.kind === 'http')).toEqual(want.filter((e) => e.kind === 'http'));
      const gotWs = got.filter((e) => e.kind === 'ws');
      if (name === 'exec-drop-then-status') expect(gotWs.pop()).toMatchObject({ kind: 'ws', status: 101 }); // the re-attach for the replay
      expect(gotWs).toEqual(want.filter((e) => e.kind === 'ws'));
      const wantNotes = Object.fromEntries(Object.entries(expected!.notes).map(([k, v]) => [k, undouble(v)]));
      if (name === 'copy-in-out') wantNotes.missing = String(wantNotes.missing).replace(/^box not found: /, '');
      if (name === 'prefix-and-metrics') (wantNotes.runtimeMetrics as Record<string, number>).numRunningBoxes = 0; // the server's figure
      expect(JSON.parse(JSON.stringify(notes))).toEqual(wantNotes);
    });
  }
});
