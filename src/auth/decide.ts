// The authorisation decision: a pure function of the route, the key and the request facts.
// Order (Dagen's server order, extended with Dagu's rules): active → expiry → surface → scope →
// workspace visibility (404) → role in that workspace (403).

import type { KeyAccess } from '../keys/model.js';
import type { Route } from '../routes/table.js';

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
const NOT_FOUND = deny(404, 'not_found', 'Resource not found');
const ROLE = deny(403, 'forbidden', 'Insufficient permissions');

export function decide(route: Route, access: KeyAccess, facts: RequestFacts): Decision {
  if (!access.key.isActive) return INACTIVE;
  if (facts.nowMs >= access.expiresAtMs) return EXPIRED;
  if ((access.surfaceMask & route.surfaceBit) === 0) return SURFACE;
  if ((access.scopeMask & route.scopeMask) !== route.scopeMask) {
    return deny(403, 'insufficient_scope', `API key lacks the scope this route needs: ${route.config.scopes.join(', ')}`);
  }

  let rank = access.roleRank;
  let workspace: string | null = null;
  const source = route.config.workspace;
  if (source?.from === 'key') {
    workspace = access.key.workspace;
  } else if (source !== undefined) {
    const asked = facts.workspace;
    if (asked === undefined || asked === 'all') {
      // "all workspaces": only a key that may see every workspace may ask for it. A scoped key is
      // refused rather than silently narrowed, so a script never mistakes a partial list for all.
      if (!access.allWorkspaces) {
        return deny(403, 'workspace_required', `API key is limited to workspaces (${[...access.grants.keys()].join(', ')}): name one with ${source.from === 'query' ? `?${source.name}=` : 'the path'}`);
      }
    } else if (!access.allWorkspaces) {
      const granted = access.grants.get(asked);
      if (granted === undefined) return NOT_FOUND;
      rank = granted;
      workspace = asked;
    } else {
      workspace = asked;
    }
  }
  if (rank < route.minRoleRank) return ROLE;
  return { allow: true, roleRank: rank, workspace };
}
