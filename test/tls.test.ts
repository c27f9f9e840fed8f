// listen.tls: HTTPS and WSS on the public listener, certificate rotation on reload, and config
// errors for bad files. Certificates are made here with the openssl command (skipped without it).

import { execFileSync, spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect } from 'node:tls';
import t from 'tap';
import { Agent, request } from 'undici';
import { loadConfig } from '../src/config/load.js';
import { startEchoUpstream } from '../src/demo/echo-upstream.js';
import { ConfigError } from '../src/errors.js';
import { Gateway } from '../src/server.js';

const OPENSSL = spawnSync('sh', ['-c', 'command -v openssl'], { encoding: 'utf8' }).stdout.trim();
const skip = OPENSSL ? false : 'the openssl command is not installed (apt-get install openssl; .ci/run does it)';

/** A self-signed certificate for 127.0.0.1 and localhost, valid `days` days. */
function makeCert(dir: string, name: string, days = 30): { cert: string; key: string } {
  const cert = join(dir, `${name}.crt`);
  const key = join(dir, `${name}.key`);
  execFileSync(OPENSSL, ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert, '-days', String(days), '-subj', `/CN=${name}`, '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'], { stdio: 'ignore' });
  return { cert, key };
}

/** The fingerprint of the certificate the listener presents to a new connection. */
function presented(port: number, ca: Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, ca }, () => {
      resolve(socket.getPeerX509Certificate()!.fingerprint256);
      socket.end();
    });
    socket.on('error', reject);
  });
}

t.test('HTTPS and WSS on the public listener, HTTPS on the admin one; a reload picks up rotated files', { skip }, async (t) => {
  const dir = t.testdir();
  const a = makeCert(dir, 'a');
  const b = makeCert(dir, 'b', 60); // a later expiry than a's, to see the rotation in /metrics
  const echo = await startEchoUpstream({ name: 'up' });
  t.teardown(() => echo.close());
  // the gateway reads the files at these two paths; rotation replaces their contents
  writeFileSync(join(dir, 'tls.crt'), readFileSync(a.cert));
  writeFileSync(join(dir, 'tls.key'), readFileSync(a.key));
  const cfg = join(dir, 'gw.yaml');
  writeFileSync(cfg, `listen: { host: 127.0.0.1, port: 0, tls: { cert_file: tls.crt, key_file: tls.key } }\nadmin: { port: 0, tls: { cert_file: tls.crt, key_file: tls.key } }\nstore: { keys: "sqlite:./k.db" }\nlog: { level: silent }\nupstreams: [{ name: up, api_base_url: "${echo.url}" }]\nroutes: [{ path: "/**", upstream: up, auth: none }]\n`);
  const gw = await Gateway.start({ config: loadConfig(cfg, {}), port: 0, adminPort: 0 });
  t.teardown(() => gw.close(0, 0));
  t.match(gw.url, /^https:\/\/127\.0\.0\.1:\d+$/, 'the URL says https');

  const caA = readFileSync(a.cert);
  const agent = new Agent({ connect: { ca: caA } });
  t.teardown(() => agent.close());
  const res = await request(`${gw.url}/x`, { dispatcher: agent });
  const echoed = (await res.body.json()) as { headers: Record<string, string> };
  t.equal(res.statusCode, 200, 'HTTPS request answered');
  t.equal(echoed.headers['x-forwarded-proto'], 'https', 'the upstream learns the client used https');
  t.equal(await presented(gw.port, caA), new X509Certificate(caA).fingerprint256, 'certificate a presented');
  const expiry = async (listener: string) => {
    const line = (await gw.metrics.scrape()).body.split('\n').find((l) => l.startsWith(`keygate_tls_certificate_expiry_seconds{listener="${listener}"} `));
    return Number(line?.split(' ')[1]);
  };
  const notAfter = (pem: Buffer) => Math.floor(Date.parse(new X509Certificate(pem).validTo) / 1000);
  t.equal(await expiry('public'), notAfter(caA), 'its expiry is in /metrics');
  t.equal(await expiry('admin'), notAfter(caA), 'for the admin listener too');
  const adminPort = Number(new URL(gw.adminUrl!).port);
  t.match(gw.adminUrl, /^https:/, 'the admin listener (admin.tls) is HTTPS too');
  const health = await request(`${gw.adminUrl}/healthz`, { dispatcher: agent });
  await health.body.dump();
  t.equal(health.statusCode, 200, 'and answers over it');

  const { default: WebSocket } = await import('ws');
  const ws = new WebSocket(`${gw.url.replace('https', 'wss')}/socket`, { ca: caA });
  const first = await new Promise<string>((resolve, reject) => {
    ws.once('message', (m) => resolve(String(m)));
    ws.once('error', reject);
  });
  t.ok(first.length > 0, 'a WSS connection is proxied');
  ws.close();

  // rotation: new files at the same paths, then the reload (SIGHUP in the binary)
  writeFileSync(join(dir, 'tls.crt'), readFileSync(b.cert));
  writeFileSync(join(dir, 'tls.key'), readFileSync(b.key));
  const r = await gw.reload(loadConfig(cfg, {}));
  t.same(r.restartNeeded, [], 'no restart needed');
  const caB = readFileSync(b.cert);
  t.equal(await presented(gw.port, caB), new X509Certificate(caB).fingerprint256, 'new connections get certificate b');
  t.equal(await presented(adminPort, caB), new X509Certificate(caB).fingerprint256, 'on the admin listener too');
  t.equal(await expiry('public'), notAfter(caB), 'and /metrics shows the new expiry');

  // a broken rotation (key of another certificate) is refused and b stays
  writeFileSync(join(dir, 'tls.key'), readFileSync(a.key));
  t.throws(() => loadConfig(cfg, {}), ConfigError, 'the reload would be refused by the loader');
  t.equal(await presented(gw.port, caB), new X509Certificate(caB).fingerprint256, 'certificate b still served');
});

t.test('bad TLS files are configuration errors at their field; a certificate near its end is a warning', { skip }, async (t) => {
  const dir = t.testdir();
  const a = makeCert(dir, 'a');
  makeCert(dir, 'b'); // its key is the wrong one for a
  makeCert(dir, 'soon', 3);
  writeFileSync(join(dir, 'junk.pem'), 'not a certificate\n');
  const write = (name: string, tls: string) => {
    const file = join(dir, name);
    writeFileSync(file, `listen:\n  tls: ${tls}\n`);
    return file;
  };
  const issues = (file: string) => {
    try {
      loadConfig(file, {});
    } catch (err) {
      if (err instanceof ConfigError) return err.issues.map((i) => `${i.line}:${i.col} ${i.field}: ${i.message}`);
      throw err;
    }
    return [];
  };
  t.match(issues(write('missing.yaml', '{ cert_file: nope.crt, key_file: a.key }')), [/^2:21 listen\.tls\.cert_file: cannot read .*nope\.crt: ENOENT/]);
  t.match(issues(write('junk.yaml', '{ cert_file: junk.pem, key_file: a.key }')), [/^2:21 listen\.tls\.cert_file: .*junk\.pem is not a PEM certificate/]);
  t.match(issues(write('mismatch.yaml', '{ cert_file: a.crt, key_file: b.key }')), [/^2:38 listen\.tls\.key_file: .*b\.key is not the key of the certificate in .*a\.crt/]);
  t.match(issues(write('nokey.yaml', '{ cert_file: a.crt }')), [/listen\.tls.*key_file/]);
  const ok = loadConfig(write('ok.yaml', `{ cert_file: ${a.cert}, key_file: a.key }`), {});
  t.same(ok.listen.tls, { cert_file: a.cert, key_file: a.key }, 'paths resolved against the config file');
  t.same(ok.warnings, []);
  const warned = loadConfig(write('soon.yaml', `{ cert_file: soon.crt, key_file: soon.key }`), {});
  t.match(warned.warnings, [{ field: 'listen.tls.cert_file', message: /expires on .* \(in 2 days\); replace the files and send SIGHUP/ }]);
});
