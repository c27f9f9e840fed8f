// The admin credential: the bootstrap token from the config (admin.token), or a Keygate key whose
// role is admin. Sent as X-API-Key or Authorization: Bearer, like every Keygate key.

import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import { extractCredential } from '../auth/credential.js';
import { keyStatus } from '../keys/model.js';
import { digestSecret } from '../keys/secret.js';
import type { KeyService } from '../keys/service.js';

export type AdminAuthResult =
  | { ok: true; actor: string }
  | { ok: false; status: number; code: string; message: string; headers?: OutgoingHttpHeaders; wrongCredential?: boolean };

const CHALLENGE = { 'www-authenticate': 'Bearer realm="keygate-admin"' };
export const TOKEN_ACTOR = 'admin-token';

function sha256(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

export class AdminAuth {
  /** SHA-256 of the token: compared with the presented one's digest, so neither content nor length leaks by timing. */
  private readonly tokenDigest: Buffer | undefined;

  constructor(
    token: string | undefined,
    private readonly keys: KeyService,
    private readonly now: () => number = Date.now,
  ) {
    this.tokenDigest = token ? sha256(token) : undefined;
  }

  async authenticate(headers: IncomingHttpHeaders): Promise<AdminAuthResult> {
    const credential = extractCredential(headers);
    if (credential.kind === 'invalid') return { ok: false, status: 400, code: 'bad_request', message: credential.message };
    if (credential.kind === 'none') return this.unauthenticated('admin credential required: send the admin token or an admin API key as Authorization: Bearer or X-API-Key');
    const presented = credential.secret;
    if (this.tokenDigest !== undefined && timingSafeEqual(sha256(presented), this.tokenDigest)) return { ok: true, actor: TOKEN_ACTOR };

    const access = await this.keys.lookup(digestSecret(presented));
    if (access === null) return this.unauthenticated('not a valid admin token or API key', true);
    const key = access.key;
    const status = keyStatus(key, this.now());
    if (status === 'inactive') return refuse('key_inactive', `API key "${key.name}" is deactivated`);
    if (status === 'expired') return refuse('key_expired', `API key "${key.name}" has expired`);
    if (key.role !== 'admin') return refuse('forbidden', `API key "${key.name}" has the role ${key.role}; the admin API needs a key with the role admin`);
    if (!access.allWorkspaces) return refuse('forbidden', `API key "${key.name}" is limited to some workspaces; the admin API needs a key for all workspaces`);
    if (key.surfaces !== null && !key.surfaces.includes('rest_api')) return refuse('forbidden', 'API key is not allowed for this surface (rest_api)');
    return { ok: true, actor: `key:${key.id}` };
  }

  /** 401; when nothing could ever pass (no token configured, no usable admin key), say how to set one up. */
  private async unauthenticated(message: string, wrongCredential = false): Promise<AdminAuthResult> {
    if (this.tokenDigest === undefined) {
      if (!(await this.keys.hasActiveAdmin())) {
        message =
          'the admin API has no credential configured: set admin.token in the config (e.g. token: ${KEYGATE_ADMIN_TOKEN}, then export KEYGATE_ADMIN_TOKEN) and restart, or create an admin key with the CLI: keygate keys create --name admin --role admin';
      }
    }
    return { ok: false, status: 401, code: 'unauthorized', message, headers: CHALLENGE, ...(wrongCredential ? { wrongCredential } : {}) };
  }
}

function refuse(code: string, message: string): AdminAuthResult {
  return { ok: false, status: 403, code, message };
}
