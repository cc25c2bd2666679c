// The CLI's remote settings (src/cli/auth.ts): which server, key and prefix win (flags >
// environment > stored credentials, the stored key only for its own server), and the credentials
// file: 0600 in a 0700 directory, written atomically, refused when others can read it.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  credentialsPath,
  deleteCredentials,
  readCredentials,
  redactKey,
  resolveRemote,
  writeCredentials,
  type StoredCredentials,
} from '../../src/cli/auth.js';

const STORED: StoredCredentials = { url: 'http://stored.example:8100', apiKey: 'stored-key-0123456789', pathPrefix: 'tenant-s' };
const none = () => null;
const stored = () => STORED;
const boom = () => {
  throw new Error('the credentials file must not be read here');
};

describe('resolveRemote precedence', () => {
  it('no flag, no env, no file: the local runtime', () => {
    expect(resolveRemote({}, {}, none)).toBeNull();
    expect(resolveRemote({}, { BOXLITE_REST_URL: '' }, none)).toBeNull();
  });

  it('the stored credentials alone select their server, key and prefix', () => {
    expect(resolveRemote({}, {}, stored)).toEqual({ ...STORED, source: 'credentials' });
  });

  it('--local wins over everything', () => {
    expect(resolveRemote({ local: true, url: 'http://a:1' }, { BOXLITE_REST_URL: 'http://b:2' }, boom)).toBeNull();
  });

  it('flags beat the environment, which beats the file, field by field', () => {
    const env = { BOXLITE_REST_URL: 'http://env:2/', BOXLITE_API_KEY: 'env-key-0123456789', BOXLITE_REST_PATH_PREFIX: 'tenant-e' };
    expect(resolveRemote({ url: 'http://flag:1/', apiKey: 'flag-key', pathPrefix: 'tenant-f' }, env, boom)).toEqual({
      url: 'http://flag:1',
      apiKey: 'flag-key',
      pathPrefix: 'tenant-f',
      source: '--url',
    });
    // Both key and prefix explicit: the file is not even read (a broken one cannot block this).
    expect(resolveRemote({}, env, boom)).toEqual({ url: 'http://env:2', apiKey: 'env-key-0123456789', pathPrefix: 'tenant-e', source: 'BOXLITE_REST_URL' });
    expect(resolveRemote({ apiKey: 'flag-key' }, env, boom)?.apiKey).toBe('flag-key');
    // The stored server, with the key from the environment.
    expect(resolveRemote({}, { BOXLITE_API_KEY: 'env-key-0123456789' }, stored)).toEqual({ ...STORED, apiKey: 'env-key-0123456789', source: 'credentials' });
  });

  it('the stored key and prefix go only to the server they were verified against', () => {
    expect(resolveRemote({ url: 'http://other:9' }, {}, stored)).toEqual({ url: 'http://other:9', source: '--url' });
    expect(resolveRemote({ url: 'http://stored.example:8100/' }, {}, stored)).toEqual({ ...STORED, source: '--url' });
    expect(resolveRemote({}, { BOXLITE_REST_URL: 'http://stored.example:8100' }, stored)).toEqual({ ...STORED, source: 'BOXLITE_REST_URL' });
  });

  it('a malformed URL is a configuration error', () => {
    expect(() => resolveRemote({ url: 'not a url' }, {}, none)).toThrow(/configuration error: the server URL "not a url" is not a URL/);
    expect(() => resolveRemote({ url: 'ftp://x' }, {}, none)).toThrow(/must be http:\/\/ or https:\/\//);
  });

  it('redacts keys to a recognisable stub', () => {
    expect(redactKey('abcd-efgh-ijkl-mnop')).toBe('abcd… (19 characters)');
    expect(redactKey('short-key')).toBe('… (9 characters)');
  });
});

describe('credentials file', () => {
  let dir: string;
  let file: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'boxlite-cred-'));
    file = path.join(dir, 'cfg', 'boxlite', 'credentials.json');
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('lives under $XDG_CONFIG_HOME/boxlite, else ~/.config/boxlite', () => {
    expect(credentialsPath({ XDG_CONFIG_HOME: '/x/cfg', HOME: '/home/u' })).toBe('/x/cfg/boxlite/credentials.json');
    expect(credentialsPath({ HOME: '/home/u' })).toBe('/home/u/.config/boxlite/credentials.json');
    // A relative XDG_CONFIG_HOME is invalid per the spec: ignored.
    expect(credentialsPath({ XDG_CONFIG_HOME: 'rel', HOME: '/home/u' })).toBe('/home/u/.config/boxlite/credentials.json');
  });

  it('is written 0600 in a 0700 directory, whatever the umask, and read back', () => {
    const old = process.umask(0o000);
    try {
      writeCredentials(STORED, file);
    } finally {
      process.umask(old);
    }
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    expect(fs.statSync(path.dirname(file)).mode & 0o777).toBe(0o700);
    expect(readCredentials(file)).toEqual(STORED);
    expect(JSON.parse(fs.readFileSync(file, 'utf8'))).toEqual(STORED);
  });

  it('is replaced atomically: no temporary file is left, and a concurrent reader sees old or new', () => {
    writeCredentials(STORED, file);
    const inode = fs.statSync(file).ino;
    const next = { url: 'http://new:1', apiKey: 'new-key-0123456789' };
    writeCredentials(next, file);
    // A rename, not an in-place rewrite: the old inode is gone, the name points at the new file.
    expect(fs.statSync(file).ino).not.toBe(inode);
    expect(fs.readdirSync(path.dirname(file))).toEqual(['credentials.json']);
    expect(readCredentials(file)).toEqual(next);
  });

  it('a failed write leaves the old file and no temporary file', () => {
    writeCredentials(STORED, file);
    // The target name is now a directory: the rename fails.
    const bad = path.join(path.dirname(file), 'blocked.json');
    fs.mkdirSync(path.join(bad, 'x'), { recursive: true });
    expect(() => writeCredentials(STORED, bad)).toThrow(/storage error: cannot write credentials file/);
    expect(fs.readdirSync(path.dirname(file)).sort()).toEqual(['blocked.json', 'credentials.json']);
    expect(readCredentials(file)).toEqual(STORED);
  });

  it('refuses a file others can read, telling to chmod 600', () => {
    writeCredentials(STORED, file);
    fs.chmodSync(file, 0o644);
    expect(() => readCredentials(file)).toThrow(new RegExp(`configuration error: credentials file ${file} is accessible by others \\(mode 0644\\); run \`chmod 600 ${file}\``));
    fs.chmodSync(file, 0o640);
    expect(() => readCredentials(file)).toThrow(/mode 0640/);
    fs.chmodSync(file, 0o600);
    expect(readCredentials(file)).toEqual(STORED);
  });

  it('refuses a symbolic link and malformed content; a missing file is "not logged in"', () => {
    expect(readCredentials(file)).toBeNull();
    fs.mkdirSync(path.dirname(file), { recursive: true });
    const real = path.join(dir, 'real.json');
    fs.writeFileSync(real, JSON.stringify(STORED), { mode: 0o600 });
    fs.symlinkSync(real, file);
    expect(() => readCredentials(file)).toThrow(/is a symbolic link/);
    fs.unlinkSync(file);
    fs.writeFileSync(file, '{not json', { mode: 0o600 });
    expect(() => readCredentials(file)).toThrow(/is not valid JSON/);
    fs.writeFileSync(file, JSON.stringify({ url: 'http://x:1' }), { mode: 0o600 });
    expect(() => readCredentials(file)).toThrow(/lacks url\/apiKey/);
  });

  it('logout deletes it, idempotently', () => {
    writeCredentials(STORED, file);
    expect(deleteCredentials(file)).toBe(true);
    expect(fs.existsSync(file)).toBe(false);
    expect(deleteCredentials(file)).toBe(false);
  });
});
