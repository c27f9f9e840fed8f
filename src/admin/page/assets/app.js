// The API Keys page (/api-keys) and the API Management view (/api-management), as Dagen's guide
// describes them, over the admin API only (GET /api/info and the Dagen-shaped /api/keys).
// A full key is held only while the copy-once dialog is open, and removed from the page after it.

import { api, ApiError, credential } from './api.js';
import { copyButton, h } from './dom.js';
import { a2aExamples, mcpExamples, quickStart, restExamples, URL_VAR } from './examples.js';
import { count, fullDateTime, humanDate, localDate, rate, relativeTime, statusLabel, SURFACE_LABEL } from './format.js';

const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));
const VIEW = location.pathname === '/api-management' ? 'management' : 'keys';
/** Keygate's and Dagen's defaults, used only when the admin listener does not report its own. */
const DEFAULT_RATE = { default: 60, min: 1, max: 600 };

const state = {
  /** @type {any} */ info: null,
  /** @type {any[] | null} */ keys: null,
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
  try {
    state.info = info ?? (await api.info());
    renderExamples();
    await reload();
  } catch (err) {
    if (!credentialRefused(err)) {
      setLoading(false);
      failure('Loading the keys', err);
    }
  }
}

/** Fetches the keys and redraws the table; keeps focus on the control it was on. */
async function reload(focus) {
  try {
    state.keys = await api.list();
  } catch (err) {
    if (credentialRefused(err)) return;
    failure('Loading the keys', err);
  }
  setLoading(false);
  renderKeys();
  renderLimit();
  if (focus) restoreFocus(focus);
}

function setLoading(on) {
  $('keys-loading').hidden = !on;
  $('keys').setAttribute('aria-busy', String(on));
  if (on) {
    $('keys-empty').hidden = true;
    $('keys-table-wrap').hidden = true;
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
  if (key.role && key.role !== 'viewer') chips.push(chip(`role: ${key.role}`, 'meta', 'Minimum-role grant (set through the Dagu-shaped API or the CLI)'));
  if (Array.isArray(key.surfaces)) {
    for (const s of key.surfaces) chips.push(chip(SURFACE_LABEL[s] ?? s, 'meta surface', 'Allowed surface'));
  }
  return h('div', { class: 'chips' }, chips);
}

function actionButton(key, action, label, onclick) {
  const declared = key.managed_by === 'config';
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

function keyRow(key) {
  const now = Date.now();
  return h(
    'tr',
    { dataset: { keyId: key.id } },
    h(
      'th',
      { scope: 'row', class: 'name' },
      h('span', { class: 'key-name' }, key.name),
      key.workspace_id ? h('span', { class: 'sub' }, `workspace ${key.workspace_id}`) : null,
      key.managed_by === 'config' ? h('span', { class: 'sub' }, 'declared in the config') : null,
    ),
    h('td', {}, h('code', { class: 'prefix' }, `${key.key_prefix}…`)),
    h('td', {}, scopeCell(key)),
    h('td', {}, chip(statusLabel(key.status), `status-${key.status}`, key.status === 'expired' && key.expires_at ? `Expired ${fullDateTime(key.expires_at)}` : key.expires_at ? `Expires ${fullDateTime(key.expires_at)}` : undefined)),
    h('td', { class: 'num' }, rate(key.rate_limit)),
    h('td', { class: 'num' }, count(key.request_count)),
    h('td', { class: 'last-used', dataset: { at: key.last_used_at ?? '' }, title: key.last_used_at ? fullDateTime(key.last_used_at) : undefined }, relativeTime(key.last_used_at, now)),
    h('td', { title: fullDateTime(key.created_at) }, humanDate(key.created_at)),
    h(
      'td',
      { class: 'actions-cell' },
      h(
        'div',
        { class: 'row-actions' },
        actionButton(key, 'toggle', key.is_active ? 'Deactivate' : 'Activate', () => toggle(key)),
        actionButton(key, 'regenerate', 'Regenerate', () => regenerate(key)),
        actionButton(key, 'delete', 'Delete', () => remove(key)),
      ),
    ),
  );
}

function renderKeys() {
  if (state.keys === null) return;
  const empty = state.keys.length === 0;
  $('keys-empty').hidden = !empty;
  $('keys-table-wrap').hidden = empty;
  $('keys-body').replaceChildren(...state.keys.map(keyRow));
}

/** keys.max_keys reached: say so and disable creation (existing keys keep working). */
function renderLimit() {
  const max = state.info?.max_keys;
  const n = state.keys?.length ?? state.info?.key_count ?? 0;
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
  const active = !key.is_active;
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
  const ok = await confirmAction(
    `Regenerate "${key.name}"?`,
    'A new secret is made and shown once. The old secret stops working immediately: every client that uses it is refused until it has the new one.',
    'Regenerate',
  );
  if (!ok) return restoreFocus({ id: key.id, action: 'regenerate' });
  try {
    const fresh = await api.regenerate(key);
    snackbar(`Key "${key.name}" regenerated: the old secret no longer works`);
    await reload();
    await showSecret(fresh.key, key.name);
  } catch (err) {
    if (credentialRefused(err)) return;
    failure('Regenerating the key', err);
    await reload();
  }
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

/** Resolves true when confirmed; Cancel, Escape or closing resolve false. */
function confirmAction(title, message, okLabel) {
  const dialog = /** @type {HTMLDialogElement} */ ($('confirm-dialog'));
  $('confirm-title').textContent = title;
  $('confirm-message').textContent = message;
  $('confirm-ok').textContent = okLabel;
  dialog.returnValue = '';
  return new Promise((resolve) => {
    const done = (value) => {
      dialog.removeEventListener('close', onClose);
      resolve(value);
    };
    const onClose = () => done(dialog.returnValue === 'ok');
    dialog.addEventListener('close', onClose);
    $('confirm-ok').onclick = () => dialog.close('ok');
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

// ------------------------------------------------------------------ create dialog

const createDialog = /** @type {HTMLDialogElement} */ ($('create-dialog'));
const form = /** @type {HTMLFormElement} */ ($('create-form'));
const nameInput = /** @type {HTMLInputElement} */ ($('create-name'));
const rateInput = /** @type {HTMLInputElement} */ ($('create-rate'));
const expiresInput = /** @type {HTMLInputElement} */ ($('create-expires'));
const scopeInputs = /** @type {HTMLInputElement[]} */ ([$('create-scope-agents'), $('create-scope-workflows')]);
/** fields the user has left once: their errors show from then on */
const touched = new Set();

const rateRange = () => state.info?.rate_limit ?? DEFAULT_RATE;

/** Field → error message ('' = valid). */
function validate() {
  const { min, max } = rateRange();
  const errors = { name: '', scopes: '', rate: '', expires: '' };
  const name = nameInput.value.trim();
  if (!name) errors.name = 'Name is required.';
  else if (name.length > 100) errors.name = 'At most 100 characters.';
  if (!scopeInputs.some((i) => i.checked)) errors.scopes = 'Choose at least one scope.';
  const r = rateInput.value.trim();
  if (!/^\d+$/.test(r) || Number(r) < min || Number(r) > max) errors.rate = `A whole number from ${min} to ${max}.`;
  if (expiresInput.value && expiresInput.value <= localDate(0)) errors.expires = 'The expiration date must be after today.';
  if (expiresInput.validity.badInput) errors.expires = 'Enter a valid date.';
  return errors;
}

function showValidity() {
  const errors = validate();
  const fields = [
    ['name', nameInput, 'create-name-error'],
    ['scopes', null, 'create-scopes-error'],
    ['rate', rateInput, 'create-rate-error'],
    ['expires', expiresInput, 'create-expires-error'],
  ];
  for (const [field, input, errorId] of fields) {
    const shown = touched.has(field) ? errors[field] : '';
    $(errorId).textContent = shown;
    if (input) input.setAttribute('aria-invalid', String(Boolean(shown)));
  }
  const valid = Object.values(errors).every((e) => e === '');
  /** @type {HTMLButtonElement} */ ($('create-submit')).disabled = !valid;
  return valid;
}

function openCreate() {
  const { default: def, min, max } = rateRange();
  form.reset();
  touched.clear();
  rateInput.min = String(min);
  rateInput.max = String(max);
  rateInput.value = String(def);
  $('create-rate-hint').textContent = `Whole number from ${min} to ${max} requests per minute; default ${def}.`;
  expiresInput.min = localDate(1);
  showValidity();
  createDialog.showModal();
  nameInput.focus();
}

$('create-open').addEventListener('click', openCreate);
$('create-first').addEventListener('click', openCreate);
$('create-cancel').addEventListener('click', () => createDialog.close());
form.addEventListener('input', (e) => {
  const t = /** @type {HTMLInputElement} */ (e.target);
  touched.add(t === nameInput ? 'name' : t === rateInput ? 'rate' : t === expiresInput ? 'expires' : 'scopes');
  showValidity();
});
form.addEventListener('focusout', (e) => {
  const t = e.target;
  if (t === nameInput) touched.add('name');
  else if (t === rateInput) touched.add('rate');
  else if (t === expiresInput) touched.add('expires');
  showValidity();
});

form.addEventListener('submit', async (e) => {
  e.preventDefault(); // method=dialog would close the dialog before the key exists
  for (const f of ['name', 'scopes', 'rate', 'expires']) touched.add(f);
  if (!showValidity()) return;
  const submit = /** @type {HTMLButtonElement} */ ($('create-submit'));
  submit.disabled = true;
  const name = nameInput.value.trim();
  const body = { name, scopes: scopeInputs.filter((i) => i.checked).map((i) => i.value), rate_limit: Number(rateInput.value) };
  if (expiresInput.value) body.expires_at = expiresInput.value;
  try {
    const created = await api.create(body);
    createDialog.close();
    snackbar(`Key "${name}" created`);
    await reload();
    await showSecret(created.key, name);
    restoreFocus({ id: created.id, action: 'toggle' });
  } catch (err) {
    if (credentialRefused(err)) {
      createDialog.close();
      return;
    }
    const fieldError = err instanceof ApiError && err.field ? { name: 'create-name-error', scopes: 'create-scopes-error', rate_limit: 'create-rate-error', expires_at: 'create-expires-error' }[err.field] : undefined;
    if (fieldError) $(fieldError).textContent = err.message;
    failure('Creating the key', err);
    if (err instanceof ApiError && err.status === 403) {
      // the key limit, reached meanwhile: show it
      createDialog.close();
      await reload();
    }
    submit.disabled = false;
  }
});

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
      note: routes === null ? "The gateway's routes are not known here: Dagen's External API v1 is shown." : 'Every configured route that takes a key (routes with auth: none need none and are left out).',
      examples: routes === null ? quickStart(base, null) : rest,
    },
    {
      id: 'a2a',
      label: 'A2A Protocol',
      note: a2a.configured ? 'JSON-RPC 2.0 over POST on the A2A route.' : "No route with surface a2a is configured; these use Dagen's POST /a2a.",
      examples: a2a.examples,
    },
  ];
  if (mcp.length > 0) tabs.push({ id: 'mcp', label: 'MCP', note: 'MCP Streamable HTTP: one JSON-RPC message per POST.', examples: mcp });

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
      tab.examples.length > 0 ? tab.examples.map(exampleBlock) : h('p', {}, 'No route of this kind is configured.'),
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
