// Workspace isolation: the one rule every route and every MCP tool call goes through. Pure.
//
// Three kinds of key:
//   all      sees every workspace; its role applies everywhere
//   grants   Dagu's model: {workspace, role} grants, top-level role viewer
//   bound    Dagen's model: one workspace at the key's role (--workspace)
// and four ways a request establishes the workspace it acts in (README, "Workspaces"):
//   named    ?workspace= / a {workspaceName} segment / a tool argument — given, or not given / "all"
//   key      the route hands the key's own workspace to an upstream that enforces it (workspace: key)
//   none     the operation names an object, not a workspace; nothing establishes one
//   unattributed  an MCP call names an object Keygate cannot place (a URI no rule matches, an
//            unlisted prompt, completion/complete, tasks/…): treated as naming all workspaces
//
// A scoped key (grants or bound) never acts in a workspace it holds no grant for, and never above
// viewer where no workspace is established; a bound key never acts outside its workspace at all.

import type { KeyAccess } from '../keys/model.js';

export type Where =
  | { readonly kind: 'named'; readonly name: string | undefined; readonly how: string }
  | { readonly kind: 'key' }
  | { readonly kind: 'none' }
  | { readonly kind: 'unattributed'; readonly what: string };

export type KeyKind = 'all' | 'grants' | 'bound';

export type Acting =
  | { readonly allow: true; readonly roleRank: number; readonly workspace: string | null }
  | { readonly allow: false; readonly status: 403 | 404; readonly code: 'workspace_required' | 'not_found' | 'forbidden'; readonly message: string };

export function keyKind(access: KeyAccess): KeyKind {
  if (access.key.workspace !== null) return 'bound';
  return access.allWorkspaces ? 'all' : 'grants';
}

const NOT_FOUND: Acting = Object.freeze({ allow: false, status: 404, code: 'not_found', message: 'Resource not found' });
const ROLE: Acting = Object.freeze({ allow: false, status: 403, code: 'forbidden', message: 'Insufficient permissions' });

function required(message: string): Acting {
  return { allow: false, status: 403, code: 'workspace_required', message };
}

function granted(access: KeyAccess): string {
  return [...access.grants.keys()].join(', ');
}

/**
 * The role and workspace a key acts with at `where`, refused when that would take it outside its
 * workspaces or below `needed` (a role rank; 0 = any).
 */
export function actAs(access: KeyAccess, where: Where, needed: number): Acting {
  const kind = keyKind(access);
  let rank = access.roleRank;
  let workspace: string | null = null;
  switch (where.kind) {
    case 'none':
      if (kind === 'bound') {
        return required(`API key is bound to workspace ${access.key.workspace}; this operation names no workspace, so it cannot be kept inside it`);
      }
      if (kind === 'grants' && rank < needed) {
        // outside its grants a scoped key is a viewer (its top-level role), never more
        return required(`API key is limited to workspaces (${granted(access)}); this operation names no workspace, and outside them the key may only read`);
      }
      break;
    case 'key':
      if (kind === 'grants') {
        return required(`API key is limited to workspaces (${granted(access)}) but holds no single workspace to pass to this upstream; use a key bound to one workspace`);
      }
      workspace = access.key.workspace;
      break;
    case 'unattributed':
      // only a key that may see every workspace may act where Keygate cannot tell which one it is
      if (kind === 'bound') return required(`API key is bound to workspace ${access.key.workspace}; ${where.what} names no workspace Keygate can attribute, so it cannot be kept inside it`);
      if (kind === 'grants') return required(`API key is limited to workspaces (${granted(access)}); ${where.what} names no workspace Keygate can attribute to one of them`);
      break;
    case 'named': {
      const asked = where.name;
      if (asked === undefined || asked === 'all') {
        // "all workspaces": only a key that may see every workspace may ask for it. A scoped key is
        // refused rather than silently narrowed, so a script never mistakes a partial list for all.
        if (kind !== 'all') return required(`API key is limited to workspaces (${granted(access)}): name one with ${where.how}`);
      } else if (kind !== 'all') {
        const grant = access.grants.get(asked);
        if (grant === undefined) return NOT_FOUND;
        rank = grant;
        workspace = asked;
      } else workspace = asked;
      break;
    }
  }
  if (rank < needed) return ROLE;
  return { allow: true, roleRank: rank, workspace };
}
