// `answer: current_user`: Dagu's GET …/auth/me answered by Keygate from the caller's key. Forwarded,
// Dagu would describe the gateway's own Dagu identity (its admin API key) to every caller.
// The shape is Dagu's UserResponse: {"user": {id, username, role, workspaceAccess, …}}.

import type { Role, RouteConfig } from '../config/types.js';
import type { ApiKey } from '../keys/model.js';
import { parseRange, satisfies } from '../upstream-version/range.js';

/** Dagu 1.30 has no developer role: its manager (create/edit/delete DAGs) is Keygate's developer. */
const DAGU_130_ROLE: Readonly<Record<Role, string>> = { viewer: 'viewer', operator: 'operator', developer: 'manager', manager: 'manager', admin: 'admin' };

/**
 * The body for a key. `legacyRoles`: the route is for Dagu 1.30, whose role names lack developer.
 */
export function currentUser(key: ApiKey, legacyRoles: boolean): object {
  const role = (r: Role) => (legacyRoles ? DAGU_130_ROLE[r] : r);
  return {
    user: {
      id: key.id,
      username: key.name,
      role: role(key.role),
      workspaceAccess: {
        all: key.workspaceAccess.all,
        grants: key.workspaceAccess.grants.map((g) => ({ workspace: g.workspace, role: role(g.role) })),
      },
      authProvider: 'proxy', // Dagu's word for an identity a trusted proxy vouches for,
      isDisabled: !key.isActive,
      createdAt: key.createdAt,
      updatedAt: key.updatedAt,
    },
  };
}


const legacy = new Map<string, boolean>();

/** Is the route for Dagu 1.30 (its requires admits 1.30.0)? Then the answer uses 1.30's role names. */
export function forDagu130(route: RouteConfig): boolean {
  const text = route.requires?.dagu;
  if (text === undefined) return route.path.startsWith('/api/v2/');
  let v = legacy.get(text);
  if (v === undefined) {
    const range = parseRange(text);
    v = typeof range !== 'string' && satisfies([1, 30, 0, ''], range);
    legacy.set(text, v);
  }
  return v;
}
