// The API Keys page (/api-keys) and the API Management view (/api-management), as Dagen's guide
// describes them, over the admin API only (GET /api/info, the keys and key groups APIs). Views:
// Keys (table, details drawer, create/edit dialog), Groups (shared limits, quota, members, usage),
// Audit log.
// A full key is held only while the copy-once dialog is open, and removed from the page after it.

import { api, ApiError, credential } from './api.js';
import { copyButton, h } from './dom.js';
import { a2aExamples, mcpExamples, quickStart, restExamples, URL_VAR } from './examples.js';
import { count, fullDateTime, humanDate, localDate, rate, relativeTime, statusLabel, SURFACE_LABEL } from './format.js';
import { KINDS, usageChart } from './chart.js';

const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));
const VIEW = location.pathname === '/api-management' ? 'management' : 'keys';
/** Keygate's and Dagen's defaults, used only when the admin listener does not report its own. */
const DEFAULT_RATE = { default: 60, min: 1, max: 600 };

/** Keys a page of the table asks for (the admin API's default page). */
const PAGE = 100;

const state = {
  /** @type {any} */ info: null,
  /** the keys loaded so far (Dagu-shaped), in the server's order; null until the first answer */
  /** @type {any[] | null} */ keys: null,
  /** where the next page starts; null when every matching key is loaded */
  /** @type {string | null} */ next: null,
  /** counts of every key (the header), and of those matching the search (the pager) */
  /** @type {any} */ counts: null,
  /** @type {any} */ matching: null,
  /** the server-side filters of the table (group: only the keys of that group; '' = every key) */
  q: '',
  status: '',
  group: '',
};

// ------------------------------------------------------------------ snackbar

let snackTimer;
function snackbar(message, kind = 'success') {
  const el = $('snackbar');
  el.textContent = message;
  el.className = `snackbar ${kind}`;
  el.setAttribute('role', kind === 'error' ? 'alert' : 'status');
  el.hidden = false;
  clearTimeout(snackTimer);
  snackTimer = setTimeout(() => (el.hidden = true), kind === 'error' ? 8000 : 4000);
}

const failure = (what, err) => snackbar(`${what} failed: ${err instanceof Error ? err.message : String(err)}`, 'error');

// ------------------------------------------------------------------ sign-in

function showSignIn(message = '') {
  $('app').hidden = true;
  $('create-open').hidden = true;
  $('sign-out').hidden = true;
  $('signin').hidden = false;
  $('signin-error').textContent = message;
  $('signin-credential').focus();
}

/** A 401/403 from the admin API: the stored credential is no good; ask again. */
function credentialRefused(err) {
  if (!(err instanceof ApiError) || (err.status !== 401 && err.status !== 403)) return false;
  // the key-count limit is a 403 too, but about the request, not the credential
  if (err.status === 403 && /max_keys/.test(err.message)) return false;
  credential.clear();
  showSignIn(`The admin API refused the credential: ${err.message}`);
  return true;
}

$('signin-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const input = /** @type {HTMLInputElement} */ ($('signin-credential'));
  const secret = input.value.trim();
  if (!secret) {
    $('signin-error').textContent = 'Enter the admin token or an admin API key.';
    return;
  }
  const button = /** @type {HTMLButtonElement} */ ($('signin-submit'));
  button.disabled = true;
  try {
    const info = await api.info(secret);
    credential.set(secret);
    input.value = '';
    $('signin-error').textContent = '';
    await start(info);
  } catch (err) {
    $('signin-error').textContent = err instanceof ApiError && (err.status === 401 || err.status === 403) ? `Refused: ${err.message}` : String(err instanceof Error ? err.message : err);
  } finally {
    button.disabled = false;
  }
});

$('sign-out').addEventListener('click', () => {
  credential.clear();
  location.reload();
});

// ------------------------------------------------------------------ loading

async function start(info) {
  $('signin').hidden = true;
  $('app').hidden = false;
  $('create-open').hidden = false;
  $('sign-out').hidden = false;
  setLoading(true);
  const done = busy('keys');
  try {
    state.info = info ?? (await api.info());
    renderExamples();
    await reload();
  } catch (err) {
    if (!credentialRefused(err)) {
      setLoading(false);
      failure('Loading the keys', err);
    }
  } finally {
    done();
  }
}

/**
 * Fetches the keys matching the search and status filter, as many as were shown before (at least a
 * page), and the counts; redraws the table; keeps focus on the control it was on.
 */
async function reload(focus) {
  const done = busy('keys');
  try {
    if (!(await fetchShown())) return;
    setLoading(false);
    renderKeys();
    renderLimit();
    if (focus) restoreFocus(focus);
  } finally {
    done();
  }
}

/** Loads what reload() shows into `state`; false when there is nothing new to draw. */
async function fetchShown() {
  const wanted = Math.max(PAGE, state.keys?.length ?? 0);
  const filters = { q: state.q, status: state.status, group: state.group };
  try {
    const [page, counts, matching] = await Promise.all([fetchKeys(filters, wanted), api.counts(), state.q ? api.counts(state.q) : null]);
    // a newer search replaced this one while it was under way: its answer is the one to show
    if (filters.q !== state.q || filters.status !== state.status || filters.group !== state.group) return false;
    state.keys = page.keys;
    state.next = page.next;
    state.counts = counts;
    state.matching = matching;
  } catch (err) {
    if (credentialRefused(err)) return false;
    failure('Loading the keys', err);
  }
  return true;
}

/** Pages of keys until `wanted` are loaded or none are left. */
async function fetchKeys(filters, wanted, cursor = '') {
  const keys = [];
  let next = cursor || null;
  do {
    const page = await api.list({ ...filters, cursor: next ?? '', limit: Math.min(1000, Math.max(PAGE, wanted - keys.length)) });
    keys.push(...page.apiKeys);
    next = page.nextCursor ?? null;
  } while (next !== null && keys.length < wanted);
  return { keys, next };
}

/** "Load more": the next page of the same search, appended. */
async function loadMore() {
  if (state.next === null) return;
  const button = /** @type {HTMLButtonElement} */ ($('keys-more'));
  button.disabled = true;
  button.setAttribute('aria-busy', 'true');
  const done = busy('keys');
  const filters = { q: state.q, status: state.status, group: state.group };
  try {
    const page = await fetchKeys(filters, PAGE, state.next);
    if (filters.q !== state.q || filters.status !== state.status || filters.group !== state.group) return;
    const first = state.keys?.length ?? 0;
    state.keys = [...(state.keys ?? []), ...page.keys];
    state.next = page.next;
    renderKeys();
    // focus the first new row's name, so keyboard users continue where the list grew
    /** @type {HTMLElement | null} */ (document.querySelectorAll('#keys-body .key-name')[first] ?? null)?.focus();
  } catch (err) {
    if (!credentialRefused(err)) failure('Loading more keys', err);
  } finally {
    done();
    button.disabled = false;
    button.removeAttribute('aria-busy');
  }
}

/** loads under way per view, so overlapping ones (a tab click, then a filter) keep it busy until the last ends */
const loads = new Map();

/**
 * Marks a view `aria-busy` while its rows are being replaced: screen readers wait for the new rows
 * instead of reading the old ones, and so can anything else that reads the view. Returns the "done" call.
 */
function busy(view) {
  loads.set(view, (loads.get(view) ?? 0) + 1);
  $(view).setAttribute('aria-busy', 'true');
  return () => {
    const left = loads.get(view) - 1;
    loads.set(view, left);
    if (left === 0) $(view).setAttribute('aria-busy', 'false');
  };
}

function setLoading(on) {
  $('keys-loading').hidden = !on;
  if (on) {
    for (const id of ['keys-empty', 'keys-none', 'keys-toolbar', 'keys-table-wrap', 'keys-more']) $(id).hidden = true;
    $('keys-shown').textContent = '';
  }
}

// ------------------------------------------------------------------ keys table

function chip(text, cls, title) {
  return h('span', { class: `chip ${cls}`, title }, text);
}

function scopeCell(key) {
  const chips = [];
  for (const s of key.scopes ?? []) chips.push(chip(s === 'agents' ? 'Agents' : s === 'workflows' ? 'Workflows' : s, `scope-${s}`));
  // role and surfaces only where a key has something other than the defaults of a key made here
  if (key.role && key.role !== 'viewer') chips.push(chip(`role: ${key.role}`, 'meta', 'Role of the key'));
  if (Array.isArray(key.allowedSurfaces) && key.allowedSurfaces.length < 3) {
    for (const s of key.allowedSurfaces) chips.push(chip(SURFACE_LABEL[s] ?? s, 'meta surface', 'Allowed surface'));
  }
  return h('div', { class: 'chips' }, chips);
}

function actionButton(key, action, label, onclick) {
  const declared = key.managedBy === 'config';
  return h(
    'button',
    {
      type: 'button',
      class: action === 'delete' ? 'small danger-text' : 'small',
      dataset: { keyId: key.id, action },
      'aria-label': `${label} key ${key.name}`,
      title: declared ? 'Declared in the configuration file: change it there' : undefined,
      disabled: declared,
      onclick,
    },
    label,
  );
}

function workspaceNote(key) {
  if (key.workspace) return `workspace ${key.workspace}`;
  if (key.workspaceAccess && !key.workspaceAccess.all) return `workspaces ${key.workspaceAccess.grants.map((g) => g.workspace).join(', ')}`;
  return null;
}

function keyRow(key) {
  const now = Date.now();
  const ws = workspaceNote(key);
  return h(
    'tr',
    { dataset: { keyId: key.id } },
    h(
      'th',
      { scope: 'row', class: 'name' },
      h('button', { type: 'button', class: 'link key-name', dataset: { keyId: key.id, action: 'details' }, 'aria-label': `Details of key ${key.name}`, onclick: () => openDetails(key) }, key.name),
      ws ? h('span', { class: 'sub' }, ws) : null,
      key.managedBy === 'config' ? h('span', { class: 'sub' }, 'declared in the config') : null,
    ),
    h('td', { 'data-label': 'Key' }, h('code', { class: 'prefix' }, `${key.keyPrefix}…`)),
    h('td', { 'data-label': 'Scopes' }, scopeCell(key)),
    h('td', { 'data-label': 'Status' }, chip(statusLabel(key.status), `status-${key.status}`, key.status === 'expired' && key.expiresAt ? `Expired ${fullDateTime(key.expiresAt)}` : key.expiresAt ? `Expires ${fullDateTime(key.expiresAt)}` : undefined)),
    h('td', { class: 'num', 'data-label': 'Rate limit' }, rate(key.rateLimit)),
    h('td', { 'data-label': 'Group', class: 'key-group' }, key.group ? chip(key.group, 'group', "Shares this group's rate limit and quota") : h('span', { class: 'muted' }, '—')),
    h('td', { class: 'num', 'data-label': 'Requests' }, count(key.requestCount)),
    h('td', { class: 'last-used', 'data-label': 'Last used', dataset: { at: key.lastUsedAt ?? '' }, title: key.lastUsedAt ? fullDateTime(key.lastUsedAt) : undefined }, relativeTime(key.lastUsedAt, now)),
    h('td', { title: fullDateTime(key.createdAt), 'data-label': 'Created' }, humanDate(key.createdAt)),
    h(
      'td',
      { class: 'actions-cell' },
      h(
        'div',
        { class: 'row-actions' },
        actionButton(key, 'edit', 'Edit', async () => {
          try {
            openCreate((await api.get(key)).apiKey);
          } catch (err) {
            if (!credentialRefused(err)) failure('Loading the key', err);
          }
        }),
        actionButton(key, 'toggle', key.isActive ? 'Deactivate' : 'Activate', () => toggle(key)),
        actionButton(key, 'regenerate', 'Regenerate', () => regenerate(key)),
        actionButton(key, 'delete', 'Delete', () => remove(key)),
      ),
    ),
  );
}

const STATUS_FILTERS = [
  ['', 'All', 'total'],
  ['active', 'Active', 'active'],
  ['inactive', 'Inactive', 'inactive'],
  ['expired', 'Expired', 'expired'],
];

/** The header counts: every key the gateway has, by status; each one filters the table by it. */
function renderCounts() {
  const c = state.counts;
  if (!c) return;
  $('key-counts').replaceChildren(
    ...STATUS_FILTERS.map(([status, label, field]) =>
      h(
        'button',
        {
          type: 'button',
          class: `count-filter${status ? ` status-${status}` : ''}`,
          dataset: { status, count: String(c[field]) },
          'aria-pressed': String(state.status === status),
          onclick: () => setFilter({ status }),
        },
        h('span', { class: 'count-value' }, count(c[field])),
        ` ${label}`,
      ),
    ),
  );
}

function renderKeys() {
  if (state.keys === null) return;
  renderCounts();
  const none = (state.counts?.total ?? state.keys.length) === 0;
  const filtered = state.q !== '' || state.status !== '' || state.group !== '';
  const empty = state.keys.length === 0;
  $('keys-empty').hidden = !none;
  $('keys-toolbar').hidden = none;
  $('keys-none').hidden = none || !empty;
  $('keys-none-text').textContent = `No key matches ${[state.q ? `"${state.q}"` : '', state.status ? `status ${statusLabel(state.status).toLowerCase()}` : '', state.group ? `group ${state.group}` : ''].filter(Boolean).join(' and ')}.`;
  $('keys-group-filter').hidden = state.group === '';
  $('keys-group-filter-text').textContent = state.group ? `Only the keys of group "${state.group}".` : '';
  $('keys-table-wrap').hidden = empty;
  $('keys-body').replaceChildren(...state.keys.map(keyRow));
  // the pager: how many of how many, and the next page on request
  // (the counts are by name and status, not by group: a group's keys are shown without an "of")
  const source = state.group ? null : state.q ? state.matching : state.counts;
  const of = source ? source[state.status || 'total'] : null;
  const what = filtered ? `matching key${of === 1 ? '' : 's'}` : `key${of === 1 ? '' : 's'}`;
  $('keys-shown').textContent = empty ? '' : of === null ? `Showing ${count(state.keys.length)}` : `Showing ${count(state.keys.length)} of ${count(of)} ${what}`;
  $('keys-more').hidden = state.next === null;
}

let searchTimer;
/** A new search or status filter: asks the server (never filters the loaded page in the browser). */
function setFilter(change) {
  Object.assign(state, change);
  state.keys = state.keys === null ? null : [];
  clearTimeout(searchTimer);
  renderCounts();
  void reload();
}

$('keys-search').addEventListener('input', () => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => setFilter({ q: /** @type {HTMLInputElement} */ ($('keys-search')).value.trim() }), 250);
});
$('keys-search').addEventListener('keydown', (e) => {
  if (e.key !== 'Enter') return;
  e.preventDefault();
  setFilter({ q: /** @type {HTMLInputElement} */ ($('keys-search')).value.trim() });
});
$('keys-more').addEventListener('click', () => void loadMore());
$('keys-clear').addEventListener('click', () => {
  /** @type {HTMLInputElement} */ ($('keys-search')).value = '';
  setFilter({ q: '', status: '', group: '' });
  $('keys-search').focus();
});
$('keys-group-clear').addEventListener('click', () => {
  setFilter({ group: '' });
  $('keys-search').focus();
});

/** keys.max_keys reached: say so and disable creation (existing keys keep working). */
function renderLimit() {
  const max = state.info?.max_keys;
  // every key the gateway has, not the page the table shows
  const n = state.counts?.total ?? state.info?.key_count ?? 0;
  const reached = typeof max === 'number' && n >= max;
  const banner = $('limit-banner');
  banner.hidden = !reached;
  banner.textContent = reached
    ? `The key limit is reached: ${n} API keys exist and the gateway allows ${max} (keys.max_keys). Delete a key you no longer use, or raise keys.max_keys, to create another. Existing keys keep working.`
    : '';
  for (const id of ['create-open', 'create-first']) {
    const b = /** @type {HTMLButtonElement} */ ($(id));
    b.disabled = reached;
    b.title = reached ? 'The key limit (keys.max_keys) is reached' : '';
  }
}

function restoreFocus({ id, action }) {
  const target = id ? document.querySelector(`button[data-key-id="${CSS.escape(id)}"][data-action="${action}"]`) : null;
  const fallback = /** @type {HTMLButtonElement} */ ($('create-open'));
  /** @type {HTMLElement | null} */ (target ?? (fallback.disabled ? $('keys-title') : fallback))?.focus();
}

// ------------------------------------------------------------------ actions

async function toggle(key) {
  const active = !key.isActive;
  try {
    await api.setActive(key, active);
    snackbar(active ? `Key "${key.name}" activated` : `Key "${key.name}" deactivated: it is refused (403) until activated again`);
  } catch (err) {
    if (credentialRefused(err)) return;
    failure(active ? 'Activating the key' : 'Deactivating the key', err);
  }
  await reload({ id: key.id, action: 'toggle' });
}

async function regenerate(key) {
  let fresh;
  try {
    // the regenerate runs from the confirmation, so the API's word on the grace period shows there
    fresh = await confirmAction(
      `Regenerate "${key.name}"?`,
      'A new secret is made and shown once. Without a grace period the old secret stops working immediately: every client that uses it is refused until it has the new one.',
      'Regenerate',
      (grace) => api.regenerate(key, grace),
    );
  } catch (err) {
    if (credentialRefused(err)) return;
    failure('Regenerating the key', err);
    await reload();
    return restoreFocus({ id: key.id, action: 'regenerate' });
  }
  if (!fresh) return restoreFocus({ id: key.id, action: 'regenerate' });
  snackbar(fresh.previous_key_expires_at ? `Key "${key.name}" regenerated: the old secret keeps working until ${fullDateTime(fresh.previous_key_expires_at)}` : `Key "${key.name}" regenerated: the old secret no longer works`);
  await reload();
  await showSecret(fresh.key, key.name);
  restoreFocus({ id: key.id, action: 'regenerate' });
}

async function remove(key) {
  const ok = await confirmAction(
    `Delete "${key.name}"?`,
    'Every script, job and integration that uses this key loses access at once. This cannot be undone.',
    'Delete',
  );
  if (!ok) return restoreFocus({ id: key.id, action: 'delete' });
  try {
    await api.remove(key);
    snackbar(`Key "${key.name}" deleted`);
  } catch (err) {
    if (credentialRefused(err)) return;
    failure('Deleting the key', err);
  }
  await reload({ id: undefined, action: 'delete' });
}

// ------------------------------------------------------------------ confirm dialog

/**
 * Resolves true when confirmed; Cancel, Escape or closing resolve false. With `act` (regenerate)
 * the grace-period field shows, OK runs `act(grace as typed)` and resolves with its answer; a
 * problem the API finds with the grace period is shown at the field and the dialog stays open
 * (the page has no rule of its own for it); any other failure closes the dialog and rejects.
 */
function confirmAction(title, message, okLabel, act = null) {
  const dialog = /** @type {HTMLDialogElement} */ ($('confirm-dialog'));
  const grace = /** @type {HTMLInputElement} */ ($('confirm-grace'));
  const ok = /** @type {HTMLButtonElement} */ ($('confirm-ok'));
  $('confirm-title').textContent = title;
  $('confirm-message').textContent = message;
  ok.textContent = okLabel;
  $('confirm-grace-wrap').hidden = act === null;
  $('confirm-grace-error').textContent = '';
  grace.removeAttribute('aria-invalid');
  grace.value = '0';
  dialog.returnValue = '';
  return new Promise((resolve, reject) => {
    let result = true;
    let failed = null;
    const onClose = () => {
      dialog.removeEventListener('close', onClose);
      if (failed) reject(failed);
      else resolve(dialog.returnValue === 'ok' ? result : false);
    };
    dialog.addEventListener('close', onClose);
    ok.onclick = async () => {
      if (act === null) return dialog.close('ok');
      ok.disabled = true;
      try {
        result = await act(grace.value.trim());
        dialog.close('ok');
      } catch (err) {
        const problem = err instanceof ApiError ? err.errors.find((e) => e.field === 'grace_seconds') : undefined;
        if (problem) {
          $('confirm-grace-error').textContent = problem.message;
          grace.setAttribute('aria-invalid', 'true');
          grace.focus();
        } else {
          failed = err;
          dialog.close('error');
        }
      } finally {
        ok.disabled = false;
      }
    };
    $('confirm-cancel').onclick = () => dialog.close('cancel');
    dialog.showModal();
    $('confirm-cancel').focus();
  });
}

// ------------------------------------------------------------------ copy-once dialog

const secretDialog = /** @type {HTMLDialogElement} */ ($('secret-dialog'));
copyButton(() => $('secret-value').textContent ?? '', 'Copy key', /** @type {HTMLButtonElement} */ ($('secret-copy')), (ok) =>
  ok ? snackbar('Key copied to the clipboard') : snackbar('Copying failed: select the key and copy it by hand', 'error'),
);
$('secret-done').addEventListener('click', () => secretDialog.close());

/** Shows a full key once; resolves when the dialog closes, after the key is removed from the page. */
function showSecret(secret, name) {
  $('secret-value').textContent = secret;
  $('secret-name').textContent = `Key "${name}"`;
  return new Promise((resolve) => {
    secretDialog.addEventListener(
      'close',
      () => {
        $('secret-value').textContent = '';
        $('secret-name').textContent = '';
        resolve(undefined);
      },
      { once: true },
    );
    secretDialog.showModal();
    $('secret-copy').focus();
  });
}

// ------------------------------------------------------------------ create / edit dialog

const createDialog = /** @type {HTMLDialogElement} */ ($('create-dialog'));
const form = /** @type {HTMLFormElement} */ ($('create-form'));
const nameInput = /** @type {HTMLInputElement} */ ($('create-name'));
const rateInput = /** @type {HTMLInputElement} */ ($('create-rate'));
const quotaKind = /** @type {HTMLSelectElement} */ ($('create-quota-kind'));
const quotaLimit = /** @type {HTMLInputElement} */ ($('create-quota-limit'));
const quotaPeriod = /** @type {HTMLSelectElement} */ ($('create-quota-period'));
const quotaRefill = /** @type {HTMLSelectElement} */ ($('create-quota-refill'));
const quotaRemaining = /** @type {HTMLInputElement} */ ($('create-quota-remaining'));
const groupInput = /** @type {HTMLSelectElement} */ ($('create-group'));
const expiresInput = /** @type {HTMLInputElement} */ ($('create-expires'));
const scopeInputs = /** @type {HTMLInputElement[]} */ ([$('create-scope-agents'), $('create-scope-workflows')]);
const roleInput = /** @type {HTMLSelectElement} */ ($('create-role'));
const workspaceInput = /** @type {HTMLInputElement} */ ($('create-workspace'));
const saInput = /** @type {HTMLInputElement} */ ($('create-sa'));
const ownerInput = /** @type {HTMLInputElement} */ ($('create-owner'));
const descriptionInput = /** @type {HTMLTextAreaElement} */ ($('create-description'));
const ROLES = ['viewer', 'operator', 'developer', 'manager', 'admin'];
/** fields the user has left once: their errors show from then on */
const touched = new Set();
/** null = creating; else the Dagu-shaped key being edited */
let editing = null;

const rateRange = () => state.info?.rate_limit ?? DEFAULT_RATE;
const radio = (name) => /** @type {HTMLInputElement | null} */ (form.querySelector(`input[name="${name}"]:checked`))?.value;
const surfaceInputs = () => /** @type {HTMLInputElement[]} */ ([...form.querySelectorAll('input[name="surfaces"]')]);

function grantRow(grant = { workspace: '', role: 'developer' }) {
  const n = $('create-grants-body').children.length + 1;
  const ws = h('input', { type: 'text', class: 'grant-workspace', value: grant.workspace, 'aria-label': `Grant ${n} workspace`, autocomplete: 'off', placeholder: 'e.g. ops' });
  const role = h('select', { class: 'grant-role', 'aria-label': `Grant ${n} role` }, ROLES.filter((r) => r !== 'admin').map((r) => h('option', { value: r, selected: r === grant.role }, r)));
  const tr = h('tr', {}, h('td', {}, ws), h('td', {}, role), h('td', {}, h('button', { type: 'button', class: 'small danger-text', 'aria-label': `Remove grant ${n}`, onclick: () => { tr.remove(); touched.add('workspaceAccess'); scheduleCheck(); } }, 'Remove')));
  $('create-grants-body').append(tr);
  return tr;
}

function grants() {
  return [...$('create-grants-body').querySelectorAll('tr')].map((tr) => ({
    workspace: /** @type {HTMLInputElement} */ (tr.querySelector('.grant-workspace')).value.trim(),
    role: /** @type {HTMLSelectElement} */ (tr.querySelector('.grant-role')).value,
  }));
}

/** Shows the parts of the form that the access and attribution choices call for. */
function syncSections() {
  $('create-quota-periodic').hidden = quotaKind.value !== 'periodic';
  $('create-quota-once').hidden = quotaKind.value !== 'once';
  const access = radio('access');
  $('create-grants-wrap').hidden = access !== 'grants';
  $('create-workspace-wrap').hidden = access !== 'bound';
  if (access === 'grants' && $('create-grants-body').children.length === 0) grantRow();
  const owned = radio('attribution') === 'user_owned';
  $('create-sa-wrap').hidden = owned;
  $('create-owner-wrap').hidden = !owned;
}

// Validation: the page has no rules of its own. Every change of the form asks the admin API for a
// dry run (POST/PATCH …?dryRun=true) of what Create/Save would send, and shows each problem the key
// service reports at its field, all at once, in the service's own words.

/** An API field (Dagu's spelling) → the element that shows its problems. */
const ERROR_AT = {
  name: 'create-name-error',
  description: 'create-description-error',
  scopes: 'create-scopes-error',
  rateLimit: 'create-rate-error',
  quota: 'create-quota-error',
  group: 'create-group-error',
  expiresAt: 'create-expires-error',
  role: 'create-role-error',
  workspaceAccess: 'create-grants-error',
  workspace: 'create-workspace-error',
  allowedSurfaces: 'create-surfaces-error',
  attributionClass: 'create-attribution-error',
  serviceAccountName: 'create-sa-error',
  ownerUserId: 'create-owner-error',
};
/** the inputs marked aria-invalid with their field */
const INPUT_OF = { name: nameInput, rateLimit: rateInput, quota: quotaKind, group: groupInput, expiresAt: expiresInput, role: roleInput, workspace: workspaceInput, serviceAccountName: saInput, ownerUserId: ownerInput, description: descriptionInput };

/** "workspaceAccess" of "workspaceAccess.grants[0].role" */
const fieldBase = (field) => /^[^.[]*/.exec(field ?? '')[0];

/** A problem as shown at its field: a grant's problem says which grant. */
function problemText(e) {
  const grant = /^workspaceAccess\.grants\[(\d+)\]\.?(\w*)/.exec(e.field);
  return grant ? `Grant ${Number(grant[1]) + 1}${grant[2] ? ` ${grant[2]}` : ''}: ${e.message}` : e.message;
}

/**
 * The dry-run loop of a dialog's form (the key dialog's and the group dialog's): `schedule()` on a
 * change asks `ask()` (a dry run) 150 ms after the last one; `run()` asks now and resolves with the
 * problems found (null when a newer check or the dialog's closing overtook it), also given to
 * `settle`. While a check is due the form carries data-pending (Create/Save wait for the answer
 * about the form as it is then; a blur that changes a field must not disable the button being clicked).
 */
function dryRunner(formEl, dialogEl, ask, settle) {
  let seq = 0;
  let timer;
  const run = async () => {
    clearTimeout(timer);
    const mine = ++seq;
    formEl.dataset.pending = 'true';
    let found = [];
    try {
      await ask();
    } catch (err) {
      if (credentialRefused(err)) {
        dialogEl.close();
        return null;
      }
      found = err instanceof ApiError && err.errors.length > 0 ? err.errors : [{ field: '', message: err instanceof Error ? err.message : String(err) }];
    }
    // a newer check started meanwhile: its answer is the one that counts
    if (mine !== seq) return null;
    delete formEl.dataset.pending;
    settle(found);
    return found;
  };
  dialogEl.addEventListener('close', () => {
    clearTimeout(timer);
    seq++;
  });
  return {
    run,
    schedule() {
      formEl.dataset.pending = 'true';
      // an answer still on its way is about the form as it was: it must not settle this one
      seq++;
      clearTimeout(timer);
      timer = setTimeout(() => void run(), 150);
    },
  };
}

/** the problems of the last dry run; null until one answered */
let problems = null;

/** What Create or Save would send now. */
const requestBody = () => (editing ? changedFields(formBody(), editing) : formBody());

const keyCheck = dryRunner(form, createDialog, () => api.check(requestBody(), editing), (found) => {
  problems = found;
  showProblems();
});
/** A change of the form: its dry run follows shortly; until it answers, Create/Save waits. */
const scheduleCheck = keyCheck.schedule;
/** The key service's dry run of the form; resolves with its problems (also shown). */
const runCheck = keyCheck.run;

/**
 * Shows a dry run's problems in a form: each at its field's error line once the field was used
 * (`touchedSet`), one without a field of the form in the form's line. Resolves to the lines used.
 */
function placeProblems(found, errorAt, formError, touchedSet, text = (e) => e.message) {
  const at = new Map();
  for (const e of found ?? []) {
    const base = fieldBase(e.field);
    const id = errorAt[base] ?? formError;
    if (id !== formError && !touchedSet.has(base)) continue;
    at.set(id, [...(at.get(id) ?? []), text(e)]);
  }
  for (const id of [...Object.values(errorAt), formError]) $(id).textContent = (at.get(id) ?? []).join('\n');
  return at;
}

/** Each problem at its field (for the fields the user has been to), Create/Save enabled when there are none. */
function showProblems() {
  const at = placeProblems(problems, ERROR_AT, 'create-form-error', touched, problemText);
  for (const [field, input] of Object.entries(INPUT_OF)) input.setAttribute('aria-invalid', String(at.has(ERROR_AT[field]) && touched.has(field)));
  const bad = new Set((problems ?? []).map((e) => /^workspaceAccess\.grants\[(\d+)\]/.exec(e.field)?.[1]).filter(Boolean).map(Number));
  [...$('create-grants-body').querySelectorAll('tr')].forEach((tr, i) => tr.querySelector('.grant-workspace')?.setAttribute('aria-invalid', String(touched.has('workspaceAccess') && bad.has(i))));
  /** @type {HTMLButtonElement} */ ($('create-submit')).disabled = problems === null || problems.length > 0;
  // problems of fields not used yet are not shown at them: name those fields beside the disabled button
  const waiting = [...new Set((problems ?? []).map((e) => fieldBase(e.field)).filter((f) => ERROR_AT[f] && !touched.has(f)))];
  $('create-todo').textContent = waiting.length > 0 ? `To ${editing ? 'save' : 'create'}: ${waiting.map((f) => FIELD_LABEL[f] ?? f).join(', ')}.` : '';
}

/** Field names as the form labels them. */
const FIELD_LABEL = {
  name: 'Name',
  description: 'Description',
  scopes: 'Scopes',
  rateLimit: 'Rate limit',
  quota: 'Quota',
  group: 'Group',
  expiresAt: 'Expiration',
  role: 'Role',
  workspaceAccess: 'Workspace grants',
  workspace: 'Bound workspace',
  allowedSurfaces: 'Surfaces',
  attributionClass: 'Attribution',
  serviceAccountName: 'Service-account name',
  ownerUserId: 'Owner user ID',
};

/** The form field an input belongs to (Dagu's spelling). */
function fieldOf(t) {
  if (t.classList?.contains('grant-workspace') || t.classList?.contains('grant-role')) return 'workspaceAccess';
  if (t.name?.startsWith?.('quota_')) return 'quota';
  const byName = { name: 'name', group: 'group', rate_limit: 'rateLimit', expires_at: 'expiresAt', role: 'role', workspace: 'workspace', serviceAccountName: 'serviceAccountName', ownerUserId: 'ownerUserId', description: 'description', surfaces: 'allowedSurfaces', scopes: 'scopes', access: 'workspaceAccess', attribution: 'attributionClass' };
  return byName[t.name] ?? null;
}

/** The Dagu-shaped body for every field of the form. */
function formBody() {
  const access = radio('access');
  const owned = radio('attribution') === 'user_owned';
  const body = {
    name: nameInput.value.trim(),
    description: descriptionInput.value.trim(),
    scopes: scopeInputs.filter((i) => i.checked).map((i) => i.value),
    // as typed: the service judges it (an empty or non-numeric box is 0, which it refuses with its range)
    rateLimit: Number(rateInput.value.trim() || 0),
    quota: quotaBody(QUOTA_INPUTS, editing?.quota),
    group: groupInput.value || null,
    role: roleInput.value,
    workspaceAccess: access === 'grants' ? { all: false, grants: grants() } : { all: true },
    workspace: access === 'bound' ? workspaceInput.value.trim() : null,
    allowedSurfaces: surfaceInputs().filter((i) => i.checked).map((i) => i.value),
    attributionClass: owned ? 'user_owned' : 'service_account',
  };
  if (owned) body.ownerUserId = ownerInput.value.trim();
  else if (saInput.value.trim()) body.serviceAccountName = saInput.value.trim();
  if (expiresInput.value) body.expiresAt = expiresInput.value;
  else if (editing) body.expiresAt = null;
  return body;
}

const QUOTA_INPUTS = { kind: quotaKind, limit: quotaLimit, period: quotaPeriod, refill: quotaRefill, remaining: quotaRemaining };

/**
 * The quota as a form's quota fields say (the key's and the group's: the service judges it; an
 * empty number box is sent as a number it refuses, at its field). `current`: the quota being edited.
 */
function quotaBody(q, current) {
  const kind = q.kind.value;
  if (kind === 'once') return { remaining: q.remaining.value.trim() === '' ? -1 : Number(q.remaining.value) };
  if (kind !== 'periodic') return null;
  // a start set through the CLI or API stays (the page does not edit it)
  return { limit: Number(q.limit.value.trim() || 0), period: q.period.value, refill: q.refill.value, start: current?.start ?? null };
}

/** Fills a form's quota fields from a quota (null: none). */
function fillQuota(q, quota) {
  q.kind.value = !quota ? 'none' : quota.period === undefined ? 'once' : 'periodic';
  if (quota && quota.period !== undefined) {
    q.limit.value = String(quota.limit);
    q.period.value = quota.period;
    q.refill.value = quota.refill;
  } else if (quota) q.remaining.value = String(quota.remaining);
}

/**
 * The group select of the key dialog: "No group", the key's own group at once (so the value is
 * right before the list arrives), then every group from the API.
 */
async function fillGroupOptions(current) {
  const option = (name) => h('option', { value: name }, name);
  groupInput.replaceChildren(h('option', { value: '' }, 'No group'), ...(current ? [option(current)] : []));
  groupInput.value = current ?? '';
  let groups;
  try {
    groups = (await api.groups()).groups;
  } catch (err) {
    if (!credentialRefused(err)) failure('Loading the groups', err);
    return;
  }
  // the user may have picked meanwhile: keep what is selected now
  const selected = groupInput.value;
  const names = new Set(groups.map((g) => g.name));
  if (selected) names.add(selected);
  groupInput.replaceChildren(h('option', { value: '' }, 'No group'), ...[...names].sort().map(option));
  groupInput.value = selected;
}

/** Only what changed, for PATCH (an unchanged past expiry must not be sent back). */
function changedFields(body, key) {
  const out = {};
  const was = {
    ...key,
    workspaceAccess: key.workspaceAccess.all ? { all: true } : key.workspaceAccess,
    expiresAt: key.expiresAt ? key.expiresAt.slice(0, 10) : null,
    serviceAccountName: key.attributionClass === 'service_account' ? key.serviceAccountName : undefined,
  };
  for (const [k, v] of Object.entries(body)) if (JSON.stringify(v) !== JSON.stringify(was[k])) out[k] = v;
  return out;
}

function setRadio(name, value) {
  for (const i of form.querySelectorAll(`input[name="${name}"]`)) /** @type {HTMLInputElement} */ (i).checked = i.value === value;
}

/** Opens the dialog empty (create) or filled from a Dagu-shaped key (edit). */
function openCreate(key = null) {
  editing = key;
  const { default: def, min, max } = rateRange();
  form.reset();
  touched.clear();
  $('create-grants-body').replaceChildren();
  $('create-title').textContent = key ? `Edit API Key` : 'Create API Key';
  $('create-submit').textContent = key ? 'Save' : 'Create';
  rateInput.min = String(min);
  rateInput.max = String(max);
  rateInput.value = String(key?.rateLimit ?? def);
  $('create-rate-hint').textContent = `Whole number from ${min} to ${max} requests per minute; default ${def}.`;
  expiresInput.min = localDate(1);
  if (key) {
    nameInput.value = key.name;
    for (const i of scopeInputs) i.checked = key.scopes.includes(i.value);
    expiresInput.value = key.expiresAt ? key.expiresAt.slice(0, 10) : '';
    roleInput.value = key.role;
    setRadio('access', key.workspace ? 'bound' : key.workspaceAccess.all ? 'all' : 'grants');
    workspaceInput.value = key.workspace ?? '';
    for (const g of key.workspaceAccess.grants ?? []) grantRow(g);
    for (const i of surfaceInputs()) i.checked = key.allowedSurfaces.includes(i.value);
    setRadio('attribution', key.attributionClass);
    saInput.value = key.serviceAccountName ?? '';
    ownerInput.value = key.ownerUserId ?? '';
    descriptionInput.value = key.description ?? '';
    fillQuota(QUOTA_INPUTS, key.quota);
  }
  void fillGroupOptions(key?.group ?? null);
  syncSections();
  problems = null;
  /** @type {HTMLButtonElement} */ ($('create-submit')).disabled = true;
  for (const id of [...Object.values(ERROR_AT), 'create-form-error', 'create-todo']) $(id).textContent = '';
  createDialog.showModal();
  nameInput.focus();
  scheduleCheck();
}

$('create-open').addEventListener('click', () => openCreate());
$('create-first').addEventListener('click', () => openCreate());
$('create-cancel').addEventListener('click', () => createDialog.close());
$('create-grant-add').addEventListener('click', () => {
  const tr = grantRow();
  /** @type {HTMLInputElement} */ (tr.querySelector('input')).focus();
  scheduleCheck();
});
form.addEventListener('change', (e) => {
  const t = /** @type {HTMLInputElement} */ (e.target);
  if (t.name === 'access' && t.value === 'grants' && roleInput.value !== 'viewer') {
    // Dagu's rule, applied for the user: selected workspaces go with the top-level role viewer
    roleInput.value = 'viewer';
    snackbar('Role set to viewer: keys with selected workspaces get their roles per workspace', 'success');
  }
  const field = fieldOf(t);
  if (field) touched.add(field);
  if (t.name === 'access') touched.add('workspace');
  syncSections();
  scheduleCheck();
});
form.addEventListener('input', (e) => {
  const field = fieldOf(e.target);
  if (field) touched.add(field);
  scheduleCheck();
});
form.addEventListener('focusout', (e) => {
  const field = fieldOf(e.target);
  if (field && !touched.has(field)) {
    touched.add(field);
    if (problems !== null && form.dataset.pending !== 'true') showProblems();
  }
});

form.addEventListener('submit', async (e) => {
  e.preventDefault(); // method=dialog would close the dialog before the key exists
  const submit = /** @type {HTMLButtonElement} */ ($('create-submit'));
  submit.disabled = true;
  // every field's problem shows now, not only those of the fields visited
  for (const f of Object.keys(ERROR_AT)) touched.add(f);
  // the answer for the form as it is now (an event during the check, a blur say, starts another)
  let found = await runCheck();
  while (found === null && createDialog.open) found = await runCheck();
  if (found === null) return;
  if (found.length > 0) {
    const first = found.map((x) => INPUT_OF[fieldBase(x.field)]).find((i) => i && !i.closest('[hidden]'));
    /** @type {HTMLElement | undefined} */ (first)?.focus();
    return;
  }
  const body = requestBody();
  const name = formBody().name;
  try {
    if (editing) {
      const updated = await api.update(editing, body);
      createDialog.close();
      snackbar(`Key "${name}" saved`);
      await reload();
      if ($('details').open) await openDetails(updated.apiKey);
      return;
    }
    const created = await api.createFull(body);
    createDialog.close();
    snackbar(`Key "${name}" created`);
    await reload();
    await showSecret(created.key, name);
    restoreFocus({ id: created.apiKey.id, action: 'toggle' });
  } catch (err) {
    if (credentialRefused(err)) {
      createDialog.close();
      return;
    }
    // the API's own problems (a name taken meanwhile, say), each at its field
    if (err instanceof ApiError && err.errors.length > 0) {
      problems = err.errors;
      showProblems();
    }
    failure(editing ? 'Saving the key' : 'Creating the key', err);
    if (err instanceof ApiError && err.status === 403) {
      // the key limit, reached meanwhile: show it
      createDialog.close();
      await reload();
    }
    submit.disabled = false;
  }
});

// ------------------------------------------------------------------ key details

const details = /** @type {HTMLDialogElement} */ ($('details'));
/** the Dagu-shaped key shown in the drawer */
let shown = null;
let usageBucket = 'hour';

function describeAccess(k) {
  if (k.workspace) return `bound to workspace ${k.workspace} (role ${k.role})`;
  if (k.workspaceAccess.all) return `all workspaces (role ${k.role})`;
  return k.workspaceAccess.grants.map((g) => `${g.workspace}: ${g.role}`).join(', ') + ` (top-level role ${k.role})`;
}

/** A key's quota and what is left now (the Dagu-shaped key: quota, quotaRemaining, quotaNextRefillAt). */
function describeQuota(k) {
  return quotaText(k.quota, k.quotaRemaining, k.quotaNextRefillAt);
}

/** A quota (a key's or a group's), what is left of it now and when it refills. */
function quotaText(q, remaining, nextRefillAt) {
  if (!q) return 'None';
  if (q.period === undefined) return `${count(remaining ?? q.remaining)} left (one-time credits, no refill)`;
  const refill = q.refill === 'add' ? `adds ${count(q.limit)}` : `back to ${count(q.limit)}`;
  return `${count(remaining ?? q.limit)} of ${count(q.limit)} left this ${q.period}; ${refill}${nextRefillAt ? ` on ${fullDateTime(nextRefillAt)}` : ''}`;
}

/** A key's group and what its keys share (the Dagu-shaped group, when it could be read). */
function describeGroup(k, g) {
  if (!k.group) return 'None';
  if (!g) return k.group;
  const shared = [g.rateLimit === null ? 'no shared rate limit' : `${rate(g.rateLimit)} shared`, g.quota ? `quota ${quotaText(g.quota, g.quotaStatus?.remaining, g.quotaStatus?.nextRefillAt)}` : 'no shared quota'];
  return `${k.group}: ${shared.join('; ')} (${count(g.keys)} key${g.keys === 1 ? '' : 's'})`;
}

function detailRows(k, group) {
  const when = (iso, by) => (iso ? `${fullDateTime(iso)}${by ? ` by ${by}` : ''}` : 'Never');
  return [
    ['Status', statusLabel(k.status)],
    ['Key', `${k.keyPrefix}…`],
    ['Description', k.description || '—'],
    ['Scopes', k.scopes.join(', ')],
    ['Role', k.role],
    ['Workspace access', describeAccess(k)],
    ['Surfaces', k.allowedSurfaces.map((s) => SURFACE_LABEL[s] ?? s).join(', ')],
    ['Attribution', k.attributionClass === 'user_owned' ? `user-owned by ${k.ownerUserId}` : `service account ${k.serviceAccountName}`],
    ['Rate limit', rate(k.rateLimit)],
    ['Quota', describeQuota(k)],
    ['Group', describeGroup(k, group)],
    ['Expires', k.expiresAt ? fullDateTime(k.expiresAt) : 'Never'],
    ['Requests', count(k.requestCount)],
    ['Last used', k.lastUsedAt ? `${relativeTime(k.lastUsedAt)} (${fullDateTime(k.lastUsedAt)})` : 'Never'],
    ['Created', when(k.createdAt, k.createdBy)],
    ['Updated', when(k.updatedAt, k.updatedBy)],
    ['Managed by', k.managedBy === 'config' ? 'the configuration file' : 'API / CLI / this page'],
    ['ID', k.id],
  ];
}

/** The chart's legend: a swatch and the total of each kind. */
function usageLegend(usage) {
  return KINDS.map(([kind, label]) => h('span', { class: `legend-item ${kind}`, dataset: { kind } }, h('span', { class: 'swatch', 'aria-hidden': 'true' }), `${count(usage.totals[kind])} ${label}`));
}

async function renderUsage() {
  if (!shown) return;
  $('usage-hour').setAttribute('aria-pressed', String(usageBucket === 'hour'));
  $('usage-day').setAttribute('aria-pressed', String(usageBucket === 'day'));
  try {
    const usage = await api.usage(shown, usageBucket);
    $('usage-chart').replaceChildren(usageChart(usage));
    $('usage-legend').replaceChildren(...usageLegend(usage));
  } catch (err) {
    if (!credentialRefused(err)) failure('Loading the usage', err);
  }
}

function auditLine(r) {
  return h('li', {}, h('time', { datetime: r.at, title: fullDateTime(r.at) }, relativeTime(r.at)), ' ', h('strong', {}, r.action), ` by ${r.actor}`, h('span', { class: 'sub' }, auditSummary(r)));
}

/** What an audit record changed, in a line (never a secret: the records hold none). */
function auditSummary(r) {
  const d = r.details ?? {};
  if ((r.action === 'update' || r.action === 'group.update') && d.changes) return Object.entries(d.changes).map(([f, c]) => `${f}: ${JSON.stringify(c.from)} → ${JSON.stringify(c.to)}`).join('; ');
  if (r.action === 'regenerate') return `new prefix ${d.prefix?.to ?? ''}…${d.graceSeconds ? `, old key valid for ${d.graceSeconds} s` : ''}`;
  if (r.action === 'quota' || r.action === 'group.quota') return `credits left ${d.remaining?.from ?? ''} → ${d.remaining?.to ?? ''}${d.reset ? ' (reset)' : ''}`;
  if (r.action === 'create' || r.action === 'delete') return `role ${d.role ?? ''}, scopes ${(d.scopes ?? []).join(', ')}`;
  if (r.action === 'group.create' || r.action === 'group.delete') return `rate limit ${d.rateLimit === null ? 'none' : rate(d.rateLimit)}, quota ${d.quota ? JSON.stringify(d.quota) : 'none'}`;
  return '';
}

async function openDetails(keyOrId) {
  try {
    // always read afresh: the table's copy may predate requests made since (count, last use)
    const k = (await api.get(typeof keyOrId === 'string' ? { id: keyOrId } : keyOrId)).apiKey;
    // the group's shared limits and what is left of its quota now (a group deleted meanwhile: its name only)
    const group = k.group ? await api.group(k.group).then((r) => r.group, () => null) : null;
    shown = k;
    $('details-title').textContent = k.name;
    $('details-fields').replaceChildren(...detailRows(k, group).flatMap(([dt, dd]) => [h('dt', {}, dt), h('dd', {}, dd)]));
    const declared = k.managedBy === 'config';
    for (const id of ['details-edit', 'details-regenerate']) {
      const b = /** @type {HTMLButtonElement} */ ($(id));
      b.disabled = declared;
      b.title = declared ? 'Declared in the configuration file: change it there' : '';
    }
    if (!details.open) details.showModal();
    await renderUsage();
    const trail = await api.audit(k.id);
    trailNext = trail.nextCursor ?? null;
    $('details-audit').replaceChildren(...(trail.records.length ? trail.records.map(auditLine) : [h('li', { class: 'muted' }, 'No changes recorded.')]));
    $('details-audit-more').hidden = trailNext === null;
  } catch (err) {
    if (!credentialRefused(err)) failure('Loading the key', err);
  }
}

/** where the shown key's older changes continue (null: all shown) */
let trailNext = null;
$('details-audit-more').addEventListener('click', async () => {
  if (!shown || trailNext === null) return;
  const id = shown.id;
  try {
    const page = await api.audit(id, trailNext);
    if (shown?.id !== id) return;
    trailNext = page.nextCursor ?? null;
    $('details-audit').append(...page.records.map(auditLine));
    $('details-audit-more').hidden = trailNext === null;
  } catch (err) {
    if (!credentialRefused(err)) failure('Loading older changes', err);
  }
});
$('details-close').addEventListener('click', () => details.close());
$('details-edit').addEventListener('click', () => shown && openCreate(shown));
$('details-regenerate').addEventListener('click', async () => {
  if (!shown) return;
  await regenerate({ id: shown.id, name: shown.name });
  if (shown) await openDetails(shown.id);
});
$('usage-hour').addEventListener('click', () => ((usageBucket = 'hour'), renderUsage()));
$('usage-day').addEventListener('click', () => ((usageBucket = 'day'), renderUsage()));
details.addEventListener('close', () => {
  shown = null;
  // the table's request counts and last use may have moved while the drawer was open
  void reload();
});

// ------------------------------------------------------------------ groups view

/** the groups as last loaded (Dagu-shaped, with keys and quotaStatus) */
let groupList = [];

function groupRow(g, usage) {
  const declared = g.managedBy === 'config';
  const button = (action, label, onclick) =>
    h(
      'button',
      {
        type: 'button',
        class: action === 'delete' ? 'small danger-text' : 'small',
        dataset: { group: g.name, action },
        'aria-label': `${label} group ${g.name}`,
        title: declared ? 'Declared in the configuration file (groups.declared): change it there' : undefined,
        disabled: declared,
        onclick,
      },
      label,
    );
  const refused = usage ? usage.totals.rateLimited + usage.totals.forbidden + (usage.totals.quotaExceeded ?? 0) : 0;
  return h(
    'tr',
    { dataset: { group: g.name } },
    h(
      'th',
      { scope: 'row', class: 'name' },
      h('button', { type: 'button', class: 'link', dataset: { group: g.name, action: 'details' }, 'aria-label': `Details of group ${g.name}`, onclick: () => openGroupDetails(g.name) }, g.name),
      g.description ? h('span', { class: 'sub' }, g.description) : null,
      declared ? h('span', { class: 'sub' }, 'declared in the config') : null,
    ),
    h('td', { 'data-label': 'Shared rate limit', class: 'group-rate' }, g.rateLimit === null ? 'None' : rate(g.rateLimit)),
    h('td', { 'data-label': 'Shared quota', class: 'group-quota wrap' }, quotaText(g.quota, g.quotaStatus?.remaining, g.quotaStatus?.nextRefillAt)),
    h(
      'td',
      { 'data-label': 'Keys', class: 'num' },
      h('button', { type: 'button', class: 'link group-keys', dataset: { group: g.name, action: 'keys' }, 'aria-label': `Show the ${g.keys} keys of group ${g.name}`, onclick: () => showGroupKeys(g.name) }, `${count(g.keys)} key${g.keys === 1 ? '' : 's'}`),
    ),
    h('td', { 'data-label': 'Usage (30 days)', class: 'group-usage' }, usage ? `${count(usage.totals.allowed)} allowed · ${count(refused)} refused` : '—'),
    h('td', { class: 'actions-cell' }, h('div', { class: 'row-actions' }, button('edit', 'Edit', () => openGroupDialog(g)), button('delete', 'Delete', () => removeGroup(g)))),
  );
}

/** The groups table: each group with its shared limits, quota now, member count and 30 days of usage. */
async function renderGroups(focus) {
  const done = busy('groups');
  try {
    groupList = (await api.groups()).groups;
    const usages = await Promise.all(groupList.map((g) => api.groupUsage(g.name, 'day').catch(() => null)));
    $('groups-empty').hidden = groupList.length > 0;
    $('groups-table-wrap').hidden = groupList.length === 0;
    $('groups-body').replaceChildren(...groupList.map((g, i) => groupRow(g, usages[i])));
  } catch (err) {
    if (!credentialRefused(err)) failure('Loading the groups', err);
  } finally {
    done();
  }
  if (focus) {
    const target = focus.name ? document.querySelector(`#groups-body button[data-group="${CSS.escape(focus.name)}"][data-action="${focus.action}"]`) : null;
    /** @type {HTMLElement | null} */ (target ?? $('group-create-open')).focus();
  }
}

/** The keys view, showing only the keys of a group. */
function showGroupKeys(name) {
  selectView('keys');
  setFilter({ group: name });
}

async function removeGroup(g) {
  const ok = await confirmAction(
    `Delete group "${g.name}"?`,
    g.keys > 0
      ? `It still has ${g.keys} key${g.keys === 1 ? '' : 's'}: the gateway refuses to delete it until they are moved to another group or to none.`
      : 'Its shared rate limit, quota and usage history go with it. Keys are not affected (it has none).',
    'Delete',
  );
  if (!ok) return renderGroups({ name: g.name, action: 'delete' });
  try {
    await api.removeGroup(g.name);
    snackbar(`Group "${g.name}" deleted`);
  } catch (err) {
    if (credentialRefused(err)) return;
    failure('Deleting the group', err);
  }
  await renderGroups({ name: g.name, action: 'delete' });
}

// the group dialog: like the key dialog, every problem comes from the key service's dry run

const groupDialog = /** @type {HTMLDialogElement} */ ($('group-dialog'));
const groupForm = /** @type {HTMLFormElement} */ ($('group-form'));
const groupName = /** @type {HTMLInputElement} */ ($('group-name'));
const groupRate = /** @type {HTMLInputElement} */ ($('group-rate'));
const groupDescription = /** @type {HTMLTextAreaElement} */ ($('group-description'));
const GROUP_QUOTA = {
  kind: /** @type {HTMLSelectElement} */ ($('group-quota-kind')),
  limit: /** @type {HTMLInputElement} */ ($('group-quota-limit')),
  period: /** @type {HTMLSelectElement} */ ($('group-quota-period')),
  refill: /** @type {HTMLSelectElement} */ ($('group-quota-refill')),
  remaining: /** @type {HTMLInputElement} */ ($('group-quota-remaining')),
};
const GROUP_ERROR_AT = { name: 'group-name-error', rateLimit: 'group-rate-error', quota: 'group-quota-error', description: 'group-description-error' };
const GROUP_INPUT_OF = { name: groupName, rateLimit: groupRate, quota: GROUP_QUOTA.kind, description: groupDescription };
/** null = creating; else the Dagu-shaped group being edited */
let editingGroup = null;
const groupTouched = new Set();
let groupProblems = null;

/** What Create or Save would send: every field (create), or those that changed (edit). */
function groupBody() {
  const rateText = groupRate.value.trim();
  const body = {
    name: groupName.value.trim(),
    description: groupDescription.value.trim(),
    // empty: none; anything else as typed (the service judges it)
    rateLimit: rateText === '' ? null : Number(rateText),
    quota: quotaBody(GROUP_QUOTA, editingGroup?.quota),
  };
  if (!editingGroup) return body;
  const out = {};
  for (const [k, v] of Object.entries(body)) if (k !== 'name' && JSON.stringify(v) !== JSON.stringify(editingGroup[k])) out[k] = v;
  return out;
}

function groupFieldOf(t) {
  if (t.name?.startsWith?.('quota_')) return 'quota';
  return { name: 'name', rate_limit: 'rateLimit', description: 'description' }[t.name] ?? null;
}

const groupCheck = dryRunner(groupForm, groupDialog, () => api.checkGroup(groupBody(), editingGroup?.name ?? null), (found) => {
  groupProblems = found;
  showGroupProblems();
});
const scheduleGroupCheck = groupCheck.schedule;
const runGroupCheck = groupCheck.run;

function showGroupProblems() {
  const at = placeProblems(groupProblems, GROUP_ERROR_AT, 'group-form-error', groupTouched);
  for (const [field, input] of Object.entries(GROUP_INPUT_OF)) input.setAttribute('aria-invalid', String(at.has(GROUP_ERROR_AT[field])));
  /** @type {HTMLButtonElement} */ ($('group-submit')).disabled = groupProblems === null || groupProblems.length > 0;
}

function syncGroupQuota() {
  $('group-quota-periodic').hidden = GROUP_QUOTA.kind.value !== 'periodic';
  $('group-quota-once').hidden = GROUP_QUOTA.kind.value !== 'once';
}

/** Opens the group dialog empty (create) or filled from a Dagu-shaped group (edit). */
function openGroupDialog(g = null) {
  editingGroup = g;
  groupForm.reset();
  groupTouched.clear();
  groupProblems = null;
  $('group-title').textContent = g ? `Edit group ${g.name}` : 'Create group';
  $('group-submit').textContent = g ? 'Save' : 'Create';
  groupName.disabled = g !== null;
  if (g) {
    groupName.value = g.name;
    groupRate.value = g.rateLimit === null ? '' : String(g.rateLimit);
    groupDescription.value = g.description ?? '';
    fillQuota(GROUP_QUOTA, g.quota);
  }
  syncGroupQuota();
  for (const id of [...Object.values(GROUP_ERROR_AT), 'group-form-error']) $(id).textContent = '';
  /** @type {HTMLButtonElement} */ ($('group-submit')).disabled = true;
  groupDialog.showModal();
  (g ? groupRate : groupName).focus();
  scheduleGroupCheck();
}

$('group-create-open').addEventListener('click', () => openGroupDialog());
$('group-cancel').addEventListener('click', () => groupDialog.close());
for (const type of ['input', 'change']) {
  groupForm.addEventListener(type, (e) => {
    const field = groupFieldOf(e.target);
    if (field) groupTouched.add(field);
    syncGroupQuota();
    scheduleGroupCheck();
  });
}
groupForm.addEventListener('submit', async (e) => {
  e.preventDefault();
  const submit = /** @type {HTMLButtonElement} */ ($('group-submit'));
  submit.disabled = true;
  for (const f of Object.keys(GROUP_ERROR_AT)) groupTouched.add(f);
  let found = await runGroupCheck();
  while (found === null && groupDialog.open) found = await runGroupCheck();
  if (found === null) return;
  if (found.length > 0) {
    /** @type {HTMLElement | undefined} */ (found.map((x) => GROUP_INPUT_OF[fieldBase(x.field)]).find((i) => i && !i.disabled))?.focus();
    return;
  }
  const name = editingGroup?.name ?? groupName.value.trim();
  try {
    if (editingGroup) await api.updateGroup(editingGroup.name, groupBody());
    else await api.createGroup(groupBody());
    groupDialog.close();
    snackbar(`Group "${name}" ${editingGroup ? 'saved' : 'created'}`);
    await renderGroups({ name, action: 'edit' });
  } catch (err) {
    if (credentialRefused(err)) {
      groupDialog.close();
      return;
    }
    if (err instanceof ApiError && err.errors.length > 0) {
      groupProblems = err.errors;
      showGroupProblems();
    }
    failure(editingGroup ? 'Saving the group' : 'Creating the group', err);
    submit.disabled = false;
  }
});

// the group details drawer: what its keys share, and their usage while they belonged to it

const groupDetails = /** @type {HTMLDialogElement} */ ($('group-details'));
let shownGroup = null;
let groupBucket = 'hour';

async function openGroupDetails(name) {
  try {
    const g = (await api.group(name)).group;
    shownGroup = g;
    const when = (iso, by) => (iso ? `${fullDateTime(iso)}${by ? ` by ${by}` : ''}` : 'Never');
    const rows = [
      ['Description', g.description || '—'],
      ['Shared rate limit', g.rateLimit === null ? 'None' : `${rate(g.rateLimit)}, shared by all its keys`],
      ['Shared quota', quotaText(g.quota, g.quotaStatus?.remaining, g.quotaStatus?.nextRefillAt)],
      ['Keys', count(g.keys)],
      ['Created', when(g.createdAt, g.createdBy)],
      ['Updated', when(g.updatedAt, g.updatedBy)],
      ['Managed by', g.managedBy === 'config' ? 'the configuration file' : 'API / CLI / this page'],
    ];
    $('group-details-title').textContent = `Group ${g.name}`;
    $('group-details-fields').replaceChildren(...rows.flatMap(([dt, dd]) => [h('dt', {}, dt), h('dd', {}, dd)]));
    if (!groupDetails.open) groupDetails.showModal();
    await renderGroupUsage();
  } catch (err) {
    if (!credentialRefused(err)) failure('Loading the group', err);
  }
}

async function renderGroupUsage() {
  if (!shownGroup) return;
  $('group-usage-hour').setAttribute('aria-pressed', String(groupBucket === 'hour'));
  $('group-usage-day').setAttribute('aria-pressed', String(groupBucket === 'day'));
  try {
    const usage = await api.groupUsage(shownGroup.name, groupBucket);
    $('group-usage-chart').replaceChildren(usageChart(usage));
    $('group-usage-legend').replaceChildren(...usageLegend(usage));
  } catch (err) {
    if (!credentialRefused(err)) failure('Loading the group usage', err);
  }
}

$('group-details-close').addEventListener('click', () => groupDetails.close());
$('group-usage-hour').addEventListener('click', () => ((groupBucket = 'hour'), renderGroupUsage()));
$('group-usage-day').addEventListener('click', () => ((groupBucket = 'day'), renderGroupUsage()));
groupDetails.addEventListener('close', () => {
  const name = shownGroup?.name;
  shownGroup = null;
  void renderGroups(name ? { name, action: 'details' } : undefined);
});

// ------------------------------------------------------------------ audit tab

/** the key the audit tab is filtered by: {id, name}, or null for every key */
let auditKey = null;

/** where older audit records continue; null when the oldest is shown */
let auditNext = null;

function auditRow(r) {
  return h(
    'tr',
    {},
    h('td', { 'data-label': 'When', title: fullDateTime(r.at) }, h('time', { datetime: r.at }, `${humanDate(r.at)} ${new Date(r.at).toLocaleTimeString()}`)),
    h('td', { 'data-label': 'Key' }, r.key_name),
    h('td', { 'data-label': 'Action' }, r.action),
    h('td', { 'data-label': 'Who' }, r.actor),
    h('td', { 'data-label': 'What changed', class: 'wrap' }, auditSummary(r)),
  );
}

/** The newest page of changes (of every key, or of the key chosen); "Load older" follows the API's cursor. */
async function renderAudit() {
  const forKey = auditKey?.id;
  const done = busy('audit');
  try {
    const page = await api.audit(forKey);
    if (forKey !== auditKey?.id) return;
    auditNext = page.nextCursor ?? null;
    $('audit-empty').hidden = page.records.length > 0;
    $('audit-body').replaceChildren(...page.records.map(auditRow));
    renderAuditPager();
  } catch (err) {
    if (!credentialRefused(err)) failure('Loading the audit log', err);
  } finally {
    done();
  }
}

function renderAuditPager() {
  const n = $('audit-body').children.length;
  $('audit-shown').textContent = n === 0 ? '' : `Showing the ${count(n)} newest change${n === 1 ? '' : 's'}${auditNext === null ? ' (all)' : ''}`;
  $('audit-more').hidden = auditNext === null;
}

async function loadOlderAudit() {
  if (auditNext === null) return;
  const forKey = auditKey?.id;
  const button = /** @type {HTMLButtonElement} */ ($('audit-more'));
  button.disabled = true;
  const done = busy('audit');
  try {
    const page = await api.audit(forKey, auditNext);
    if (forKey !== auditKey?.id) return;
    auditNext = page.nextCursor ?? null;
    $('audit-body').append(...page.records.map(auditRow));
    renderAuditPager();
  } catch (err) {
    if (!credentialRefused(err)) failure('Loading older changes', err);
  } finally {
    done();
    button.disabled = false;
  }
}
$('audit-more').addEventListener('click', () => void loadOlderAudit());

const auditInput = /** @type {HTMLInputElement} */ ($('audit-key'));
let auditTimer;
/** names offered while typing: keys matching the text, asked of the server (any key, not only those loaded) */
auditInput.addEventListener('input', () => {
  clearTimeout(auditTimer);
  auditTimer = setTimeout(async () => {
    const q = auditInput.value.trim();
    if (!q) return;
    try {
      const { apiKeys } = await api.list({ q, limit: 20 });
      $('audit-key-options').replaceChildren(...apiKeys.map((k) => h('option', { value: k.name })));
    } catch (err) {
      if (!credentialRefused(err)) failure('Searching the keys', err);
    }
  }, 200);
});

/** Filters the audit tab by the key named in the box (by its exact name), or shows every key's changes. */
async function applyAuditFilter() {
  const name = auditInput.value.trim();
  $('audit-key-error').textContent = '';
  if (!name) auditKey = null;
  else {
    try {
      const { apiKey } = await api.get({ id: name });
      auditKey = { id: apiKey.id, name: apiKey.name };
    } catch (err) {
      if (credentialRefused(err)) return;
      $('audit-key-error').textContent = err instanceof ApiError && err.status === 404 ? `No key is named "${name}".` : String(err instanceof Error ? err.message : err);
      return;
    }
  }
  await renderAudit();
}

auditInput.addEventListener('change', () => void applyAuditFilter());
auditInput.addEventListener('keydown', (e) => {
  if (e.key !== 'Enter') return;
  e.preventDefault();
  void applyAuditFilter();
});

const VIEWS = ['keys', 'groups', 'audit'];

function selectView(view) {
  for (const v of VIEWS) {
    $(`view-tab-${v}`).setAttribute('aria-selected', String(v === view));
    $(`view-tab-${v}`).tabIndex = v === view ? 0 : -1;
    $(v).hidden = v !== view;
  }
  if (view === 'audit') void renderAudit();
  if (view === 'groups') void renderGroups();
}
for (const [i, v] of VIEWS.entries()) {
  $(`view-tab-${v}`).addEventListener('click', () => selectView(v));
  $(`view-tab-${v}`).addEventListener('keydown', (e) => {
    if (e.key !== 'ArrowRight' && e.key !== 'ArrowLeft') return;
    e.preventDefault();
    const next = VIEWS[(i + (e.key === 'ArrowRight' ? 1 : VIEWS.length - 1)) % VIEWS.length];
    selectView(next);
    $(`view-tab-${next}`).focus();
  });
}

// ------------------------------------------------------------------ examples

function exampleBlock(ex) {
  return h(
    'figure',
    { class: 'example' },
    h('figcaption', {}, ex.title),
    h(
      'div',
      { class: 'code-row' },
      h('pre', { tabindex: '0' }, h('code', {}, ex.code)),
      copyButton(() => ex.code, `Copy example: ${ex.title}`, undefined, (ok) => (ok ? snackbar('Example copied') : snackbar('Copying failed', 'error'))),
    ),
  );
}

/** REST examples grouped by resource, collapsed, with a search box that opens the groups it matches. */
function restGroups(examples) {
  const groups = new Map();
  for (const ex of examples) {
    const list = groups.get(ex.tag) ?? [];
    list.push(ex);
    groups.set(ex.tag, list);
  }
  const sections = [...groups].map(([tag, list]) => {
    const figures = list.map((ex) => {
      const fig = exampleBlock(ex);
      fig.dataset.search = `${ex.title} ${ex.route?.name ?? ''}`.toLowerCase();
      return fig;
    });
    const count = h('span', { class: 'muted' }, `${list.length}`);
    const det = h('details', { class: 'group', dataset: { tag } }, h('summary', {}, h('span', { class: 'group-name' }, tag), ' ', count), figures);
    return { det, figures, count, total: list.length };
  });
  const status = h('p', { class: 'muted', role: 'status', id: 'rest-search-status' });
  const search = h('input', { type: 'search', id: 'rest-search', placeholder: 'Search routes, e.g. dag-runs or POST', 'aria-label': 'Search REST examples', autocomplete: 'off' });
  search.addEventListener('input', () => {
    const q = search.value.trim().toLowerCase();
    let shownCount = 0;
    for (const g of sections) {
      let n = 0;
      for (const f of g.figures) {
        const hit = q === '' || f.dataset.search.includes(q);
        f.hidden = !hit;
        if (hit) n++;
      }
      g.det.hidden = n === 0;
      g.det.open = q !== '' && n > 0;
      g.count.textContent = q === '' ? `${g.total}` : `${n} of ${g.total}`;
      shownCount += n;
    }
    status.textContent = q === '' ? '' : `${shownCount} matching example${shownCount === 1 ? '' : 's'}`;
  });
  return [h('div', { class: 'search-row' }, search), status, ...sections.map((g) => g.det)];
}

function baseNote(base) {
  const info = state.info;
  if (!info?.public_url) {
    return `The admin listener does not know the gateway's public address: the examples use ${URL_VAR} (export KEYGATE_URL=https://your-gateway).`;
  }
  return info.public_url_source === 'config'
    ? `Base URL ${base} (listen.public_url). The key is read from $KEYGATE_API_KEY.`
    : `Base URL ${base}: the public listener's own address; set listen.public_url to show the address clients use. The key is read from $KEYGATE_API_KEY.`;
}

function renderExamples() {
  const info = state.info;
  const base = info?.public_url ?? URL_VAR;
  const routes = info?.routes ?? null;
  $('quickstart-examples').replaceChildren(h('p', { class: 'muted' }, baseNote(base)), ...quickStart(base, routes).map(exampleBlock));
  if (VIEW !== 'management') return;

  $('examples').hidden = false;
  $('examples-note').textContent = baseNote(base);
  const rest = restExamples(base, routes);
  const a2a = a2aExamples(base, routes);
  const mcp = mcpExamples(base, routes);
  const tabs = [
    {
      id: 'rest',
      label: 'REST v1',
      note: routes === null ? "The gateway's routes are not known here: Dagen's External API v1 is shown." : 'Every configured route that takes a key, grouped by resource (routes with auth: none need none and are left out). Open a group or search.',
      examples: routes === null ? quickStart(base, null) : rest,
    },
    {
      id: 'a2a',
      label: 'A2A Protocol',
      note: a2a.configured ? 'JSON-RPC 2.0 over POST on the A2A route.' : "No route with surface a2a is configured; these use Dagen's POST /a2a.",
      examples: a2a.examples,
    },
  ];
  if (mcp.length > 0) tabs.push({ id: 'mcp', label: 'MCP', note: 'MCP Streamable HTTP: each JSON-RPC message is a POST (initialize first; its answer carries the Mcp-Session-Id for the calls after it), GET opens the event stream, DELETE ends the session.', examples: mcp });

  const tablist = $('tabs');
  const panels = $('tabpanels');
  const buttons = tabs.map((tab, i) =>
    h('button', { type: 'button', role: 'tab', id: `tab-${tab.id}`, 'aria-controls': `panel-${tab.id}`, 'aria-selected': String(i === 0), tabindex: i === 0 ? '0' : '-1' }, tab.label),
  );
  const panelEls = tabs.map((tab, i) =>
    h(
      'div',
      { role: 'tabpanel', id: `panel-${tab.id}`, 'aria-labelledby': `tab-${tab.id}`, tabindex: '0', hidden: i !== 0 },
      h('p', { class: 'muted' }, tab.note),
      tab.examples.length === 0 ? h('p', {}, 'No route of this kind is configured.') : tab.id === 'rest' && routes !== null ? restGroups(tab.examples) : tab.examples.map(exampleBlock),
    ),
  );
  const select = (i, focus) => {
    buttons.forEach((b, j) => {
      b.setAttribute('aria-selected', String(i === j));
      b.tabIndex = i === j ? 0 : -1;
      panelEls[j].hidden = i !== j;
    });
    if (focus) buttons[i].focus();
  };
  buttons.forEach((b, i) => {
    b.addEventListener('click', () => select(i, false));
    b.addEventListener('keydown', (e) => {
      const n = buttons.length;
      const next = { ArrowRight: (i + 1) % n, ArrowLeft: (i - 1 + n) % n, Home: 0, End: n - 1 }[e.key];
      if (next === undefined) return;
      e.preventDefault();
      select(next, true);
    });
  });
  tablist.replaceChildren(...buttons);
  panels.replaceChildren(...panelEls);
}

// ------------------------------------------------------------------ boot

function boot() {
  const management = VIEW === 'management';
  document.title = `${management ? 'API Management' : 'API Keys'} · Keygate`;
  $('title').textContent = management ? 'API Management' : 'API Keys';
  if (management) {
    $('subtitle').textContent =
      "Your API keys, and ready-to-copy calls for the gateway's REST v1, A2A and MCP routes, each with the X-API-Key header in place.";
  }
  $(management ? 'nav-management' : 'nav-keys').setAttribute('aria-current', 'page');
  // refresh the relative "last used" times now and then (no request)
  setInterval(() => {
    for (const td of document.querySelectorAll('td.last-used')) td.textContent = relativeTime(/** @type {HTMLElement} */ (td).dataset.at || null);
  }, 30_000);
  if (credential.get()) void start();
  else showSignIn();
}

boot();
