// The admin API, as the page uses it: the Dagu-shaped /api/v1/api-keys (the whole key model) and
// /api/v1/api-key-groups, the Dagen-shaped regenerate and counts, /api/audit and /api/info. The admin
// credential lives in this tab's sessionStorage only and goes with every call.

const STORAGE = 'keygate.admin-credential';

export class ApiError extends Error {
  /**
   * @param {number} status @param {string} code @param {string} message @param {string} [field]
   * @param {{field: string, message: string}[]} [errors] every problem of a request body (400), each at its field
   */
  constructor(status, code, message, field, errors = []) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
    this.errors = errors;
  }
}

export const credential = {
  get: () => sessionStorage.getItem(STORAGE),
  set: (value) => sessionStorage.setItem(STORAGE, value),
  clear: () => sessionStorage.removeItem(STORAGE),
};

/**
 * One call to the admin API. Throws ApiError with the API's code and message on any non-2xx.
 * @param {string} method
 * @param {string} path
 * @param {unknown} [body]
 * @param {string} [secret] credential to use instead of the stored one (sign-in)
 */
export async function call(method, path, body, secret = credential.get() ?? '') {
  const headers = { accept: 'application/json', authorization: `Bearer ${secret}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: 'no-store', credentials: 'omit' });
  } catch (err) {
    throw new ApiError(0, 'network', `the gateway's admin listener did not answer (${err instanceof Error ? err.message : String(err)})`);
  }
  if (res.status === 204) return undefined;
  const text = await res.text();
  let json;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  if (!res.ok) {
    throw new ApiError(res.status, json?.code ?? 'error', json?.message ?? `${res.status} ${res.statusText}`, json?.field, Array.isArray(json?.errors) ? json.errors : []);
  }
  return json;
}

const id = (key) => encodeURIComponent(key.id);
/** A query string of the non-empty values. */
const query = (params) => new URLSearchParams(Object.entries(params).filter(([, v]) => v !== '' && v !== undefined && v !== null).map(([k, v]) => [k, String(v)])).toString();

export const api = {
  info: (secret) => call('GET', '/api/info', undefined, secret),
  /** One page of keys (Dagu-shaped, the whole model), filtered on the server: {apiKeys, nextCursor?}. */
  list: ({ q = '', status = '', group = '', cursor = '', limit = 100 } = {}) => call('GET', `/api/v1/api-keys?${query({ q, status, group, cursor, limit })}`),
  /** {total, active, inactive, expired} of every key, or of those matching q. */
  counts: (q = '') => call('GET', `/api/keys/counts${q ? `?${query({ q })}` : ''}`),
  create: (body) => call('POST', '/api/keys', body),
  setActive: (key, active) => call('PATCH', `/api/v1/api-keys/${id(key)}`, { isActive: active }),
  /** `graceSeconds` as typed: the API judges it (a 400 naming grace_seconds when it is not 0-86400) */
  regenerate: (key, graceSeconds = '') => call('POST', `/api/keys/${id(key)}/regenerate${graceSeconds !== '' && graceSeconds !== '0' ? `?${query({ grace_seconds: graceSeconds })}` : ''}`),
  remove: (key) => call('DELETE', `/api/keys/${id(key)}`),
  // the Dagu-shaped API carries the whole key model (role, workspaceAccess, surfaces, attribution…)
  get: (key) => call('GET', `/api/v1/api-keys/${id(key)}`),
  createFull: (body) => call('POST', '/api/v1/api-keys', body),
  update: (key, body) => call('PATCH', `/api/v1/api-keys/${id(key)}`, body),
  /** The key service's own rules, as a dry run of create (no key) or update: resolves, or throws ApiError with errors[]. */
  check: (body, key = null) => (key ? call('PATCH', `/api/v1/api-keys/${id(key)}?dryRun=true`, body) : call('POST', '/api/v1/api-keys?dryRun=true', body)),
  usage: (key, bucket) => call('GET', `/api/v1/api-keys/${id(key)}/usage?bucket=${bucket}`),
  // key groups (Dagu-shaped): {groups: [{name, description, rateLimit, quota, keys, quotaStatus, …}]}
  groups: () => call('GET', '/api/v1/api-key-groups'),
  group: (name) => call('GET', `/api/v1/api-key-groups/${encodeURIComponent(name)}`),
  createGroup: (body) => call('POST', '/api/v1/api-key-groups', body),
  updateGroup: (name, body) => call('PATCH', `/api/v1/api-key-groups/${encodeURIComponent(name)}`, body),
  removeGroup: (name) => call('DELETE', `/api/v1/api-key-groups/${encodeURIComponent(name)}`),
  /** The key service's dry run of a group's create (name null) or update. */
  checkGroup: (body, name = null) =>
    name === null ? call('POST', '/api/v1/api-key-groups?dryRun=true', body) : call('PATCH', `/api/v1/api-key-groups/${encodeURIComponent(name)}?dryRun=true`, body),
  groupUsage: (name, bucket) => call('GET', `/api/v1/api-key-groups/${encodeURIComponent(name)}/usage?bucket=${bucket}`),
  /** A page of audit records, newest first: {records, nextCursor?}. */
  audit: (keyId, cursor = '', limit = 100) => call('GET', `/api/audit?${query({ limit, key_id: keyId ?? '', cursor })}`),
};
