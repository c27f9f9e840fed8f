// The usage chart: stacked bars (allowed, rate limited, forbidden) per hour or day, drawn as inline
// SVG with DOM calls (no library, no CDN, nothing inline for the CSP to refuse). Colours come from
// classes in app.css; each bar carries a <title> with its numbers.

const SVG = 'http://www.w3.org/2000/svg';
const W = 720;
const H = 180;
const PAD = { left: 40, right: 8, top: 10, bottom: 24 };
const KINDS = [
  ['allowed', 'allowed'],
  ['rateLimited', 'rate limited'],
  ['forbidden', 'forbidden'],
];

function el(name, attrs = {}, text) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

/** A round number at or above n, for the y axis. */
export function niceMax(n) {
  if (n <= 4) return 4;
  const p = 10 ** Math.floor(Math.log10(n));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= n) return m * p;
  return 10 * p;
}

/** `usage` is the Dagu-shaped GET /api/v1/api-keys/{id}/usage answer. */
export function usageChart(usage) {
  const points = usage.points;
  const top = niceMax(Math.max(0, ...points.map((p) => p.allowed + p.rateLimited + p.forbidden)));
  const t = usage.totals;
  const svg = el('svg', {
    viewBox: `0 0 ${W} ${H}`,
    role: 'img',
    class: 'usage-svg',
    'aria-label': `Requests per ${usage.bucket}, ${points.length} ${usage.bucket}s: ${t.allowed} allowed, ${t.rateLimited} rate limited, ${t.forbidden} forbidden`,
  });
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const y = (v) => PAD.top + plotH - (v / top) * plotH;
  for (const v of [0, top / 2, top]) {
    svg.append(el('line', { x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v), class: 'grid' }));
    svg.append(el('text', { x: PAD.left - 6, y: y(v) + 4, 'text-anchor': 'end', class: 'axis' }, String(v)));
  }
  const step = plotW / Math.max(1, points.length);
  const barW = Math.max(1, step * 0.8);
  points.forEach((p, i) => {
    const x = PAD.left + i * step + (step - barW) / 2;
    let base = 0;
    const g = el('g', { class: 'bar', 'data-start': p.start });
    g.append(el('title', {}, `${label(p.start, usage.bucket)}: ${p.allowed} allowed, ${p.rateLimited} rate limited, ${p.forbidden} forbidden`));
    for (const [kind] of KINDS) {
      const v = p[kind];
      if (v <= 0) continue;
      g.append(el('rect', { x: x.toFixed(2), y: y(base + v).toFixed(2), width: barW.toFixed(2), height: (y(base) - y(base + v)).toFixed(2), class: kind, 'data-kind': kind, 'data-value': v }));
      base += v;
    }
    svg.append(g);
  });
  const first = points[0];
  const last = points.at(-1);
  if (first) svg.append(el('text', { x: PAD.left, y: H - 6, class: 'axis' }, label(first.start, usage.bucket)));
  if (last) svg.append(el('text', { x: W - PAD.right, y: H - 6, 'text-anchor': 'end', class: 'axis' }, label(last.start, usage.bucket)));
  return svg;
}

/** "Dec 1" for days, "Dec 1 14:00" for hours (UTC, like the buckets). */
export function label(iso, bucket) {
  const d = new Date(iso);
  const day = d.toLocaleDateString('en-US', { month: 'short', day: 'numeric', timeZone: 'UTC' });
  return bucket === 'day' ? day : `${day} ${iso.slice(11, 16)}`;
}

export { KINDS };
