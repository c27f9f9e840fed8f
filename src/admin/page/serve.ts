// The key page (issue 7): static HTML, ES modules and CSS served by the admin listener at
// /api-keys and /api-management. The files carry no data, so they are served without the admin
// credential; the page asks for the credential and sends it with every call to the admin API,
// which stays authenticated. Only the files named here are served (no path from the request ever
// reaches the file system), with a strict Content-Security-Policy, nosniff and no-store.

import { existsSync, readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The two views; both get index.html, whose script picks the view from the path. */
export const PAGE_PATHS: readonly string[] = ['/api-keys', '/api-management'];
/** Where the page's own files are served from. */
export const ASSET_PREFIX = '/api-keys/assets/';

const TYPES: Readonly<Record<string, string>> = {
  'app.js': 'text/javascript; charset=utf-8',
  'api.js': 'text/javascript; charset=utf-8',
  'dom.js': 'text/javascript; charset=utf-8',
  'examples.js': 'text/javascript; charset=utf-8',
  'format.js': 'text/javascript; charset=utf-8',
  'chart.js': 'text/javascript; charset=utf-8',
  'app.css': 'text/css; charset=utf-8',
  'icon.svg': 'image/svg+xml',
};

/** Only the page's own files; no inline script or style, no other origin (no CDN), no framing. */
export const CONTENT_SECURITY_POLICY = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self'",
  "connect-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

export const PAGE_HEADERS: Readonly<Record<string, string>> = {
  'content-security-policy': CONTENT_SECURITY_POLICY,
  'x-content-type-options': 'nosniff',
  'cache-control': 'no-store',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
};

/**
 * The folder holding the page's files: beside this module when it runs from src/ (tests), or
 * src/admin/page/assets of the package when it runs from dist/ (tsc copies no assets).
 */
export function findAssetDir(): string {
  const candidates = [new URL('./assets/', import.meta.url), new URL('../../../src/admin/page/assets/', import.meta.url)].map((u) => fileURLToPath(u));
  return candidates.find((dir) => existsSync(join(dir, 'index.html'))) ?? candidates[0]!;
}

export class KeyPage {
  private readonly files = new Map<string, Buffer>();

  constructor(private readonly dir: string = findAssetDir()) {}

  private file(name: string): Buffer {
    let body = this.files.get(name);
    if (body === undefined) {
      body = readFileSync(join(this.dir, name));
      this.files.set(name, body);
    }
    return body;
  }

  /** The file for a request path, or undefined when the path is not the page's. */
  resolve(path: string): { name: string; type: string } | undefined {
    if (PAGE_PATHS.includes(path)) return { name: 'index.html', type: 'text/html; charset=utf-8' };
    if (!path.startsWith(ASSET_PREFIX)) return undefined;
    const name = path.slice(ASSET_PREFIX.length);
    const type = Object.hasOwn(TYPES, name) ? TYPES[name] : undefined;
    return type === undefined ? undefined : { name, type };
  }

  /**
   * Answers GET/HEAD of a page path and returns true; returns false for anything else, which then
   * goes through the credential check and the router like every admin call.
   */
  serve(req: IncomingMessage, res: ServerResponse, path: string): boolean {
    if (req.method !== 'GET' && req.method !== 'HEAD') return false;
    const found = this.resolve(path);
    if (found === undefined) return false;
    const body = this.file(found.name);
    res.writeHead(200, { ...PAGE_HEADERS, 'content-type': found.type, 'content-length': body.length });
    res.end(req.method === 'HEAD' ? undefined : body);
    return true;
  }
}
