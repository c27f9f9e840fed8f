// The authorisation decision: a pure function of the route, the key and the request facts.
// Order (Dagen's server order, extended with Dagu's rules): active → expiry → surface → scope →
// workspace (src/auth/workspace.ts: visibility 404, isolation 403 workspace_required) → role (403).

import type { KeyAccess } from '../keys/model.js';
import type { Route } from '../routes/table.js';
import { actAs, type Where } from './workspace.js';

export interface RequestFacts {
  readonly nowMs: number;
  /** the workspace the request names (query or path), undefined when it names none */
  readonly workspace: string | undefined;
}

export interface Allow {
  readonly allow: true;
  /** the key's role rank where the request acts */
  readonly roleRank: number;
  /** the workspace passed upstream, null for none */
  readonly workspace: string | null;
}

export interface Deny {
  readonly allow: false;
  readonly status: 403 | 404;
  readonly code: string;
  readonly message: string;
}

export type Decision = Allow | Deny;

function deny(status: 403 | 404, code: string, message: string): Deny {
  return { allow: false, status, code, message };
}

const INACTIVE = deny(403, 'key_inactive', 'API key is inactive');
const EXPIRED = deny(403, 'key_expired', 'API key has expired');
const SURFACE = deny(403, 'forbidden', 'API key is not allowed for this surface');

export function decide(route: Route, access: KeyAccess, facts: RequestFacts): Decision {
  if (!access.key.isActive) return INACTIVE;
  if (facts.nowMs >= access.expiresAtMs) return EXPIRED;
  if ((access.surfaceMask & route.surfaceBit) === 0) return SURFACE;
  if ((access.scopeMask & route.scopeMask) !== route.scopeMask) {
    return deny(403, 'insufficient_scope', `API key lacks the scope this route needs: ${route.config.scopes.join(', ')}`);
  }

  const source = route.config.workspace;
  const where: Where =
    source === undefined
      ? NO_WORKSPACE
      : source.from === 'key'
        ? KEY_WORKSPACE
        : { kind: 'named', name: facts.workspace, how: source.from === 'query' ? `?${source.name}=` : 'the path' };
  const acting = actAs(access, where, route.minRoleRank);
  if (!acting.allow) return acting;
  return { allow: true, roleRank: acting.roleRank, workspace: acting.workspace };
}

const NO_WORKSPACE: Where = Object.freeze({ kind: 'none' });
const KEY_WORKSPACE: Where = Object.freeze({ kind: 'key' });
