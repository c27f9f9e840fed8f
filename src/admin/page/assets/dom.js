// Small DOM helpers. Text always goes in through textContent, never as HTML, so nothing that comes
// from the API (a key name, say) can become markup.

/**
 * h('button', { class: 'x', onclick: fn, 'aria-label': 'y' }, 'text', child)
 * @param {string} tag
 * @param {Record<string, unknown>} [attrs]
 * @param {...(Node|string|number|null|undefined|false)} children
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') el.addEventListener(name.slice(2), /** @type {EventListener} */ (value));
    else if (name === 'dataset') Object.assign(el.dataset, value);
    else el.setAttribute(name, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(typeof c === 'string' || typeof c === 'number' ? String(c) : c);
  }
}

const SVG = 'http://www.w3.org/2000/svg';
const PATHS = {
  copy: 'M16 1H4a2 2 0 0 0-2 2v14h2V3h12V1zm3 4H8a2 2 0 0 0-2 2v14a2 2 0 0 0 2 2h11a2 2 0 0 0 2-2V7a2 2 0 0 0-2-2zm0 16H8V7h11v14z',
  check: 'M9 16.17 4.83 12l-1.42 1.41L9 19 21 7l-1.41-1.41z',
};

/** An inline SVG icon (decorative: the button around it carries the label). */
export function icon(name) {
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('width', '20');
  svg.setAttribute('height', '20');
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('focusable', 'false');
  svg.dataset.icon = name;
  const path = document.createElementNS(SVG, 'path');
  path.setAttribute('d', PATHS[name]);
  path.setAttribute('fill', 'currentColor');
  svg.append(path);
  return svg;
}

/** Copies text: the Clipboard API where the page may use it, else a selected, removed textarea. */
export async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      /* fall back below */
    }
  }
  const area = document.createElement('textarea');
  area.value = text;
  area.setAttribute('readonly', '');
  area.className = 'offscreen';
  document.body.append(area);
  area.select();
  let ok = false;
  try {
    ok = document.execCommand('copy');
  } catch {
    ok = false;
  }
  area.value = '';
  area.remove();
  return ok;
}

/**
 * A copy button whose icon turns into a check mark for about 2 s after a successful copy.
 * @param {() => string} getText
 * @param {string} label e.g. "Copy key"
 * @param {HTMLButtonElement} [button] an existing button to wire up
 * @param {(ok: boolean) => void} [onCopied]
 */
export function copyButton(getText, label, button, onCopied) {
  const btn = button ?? /** @type {HTMLButtonElement} */ (h('button', { type: 'button', class: 'icon-button' }));
  btn.setAttribute('aria-label', label);
  btn.title = label;
  btn.replaceChildren(icon('copy'));
  let timer;
  btn.onclick = async () => {
    const ok = await copyText(getText());
    onCopied?.(ok);
    if (!ok) return;
    clearTimeout(timer);
    btn.replaceChildren(icon('check'));
    btn.classList.add('copied');
    btn.setAttribute('aria-label', 'Copied');
    timer = setTimeout(() => {
      btn.replaceChildren(icon('copy'));
      btn.classList.remove('copied');
      btn.setAttribute('aria-label', label);
    }, 2000);
  };
  return btn;
}
