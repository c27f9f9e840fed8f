// Formatting for the keys table. Pure functions of their arguments (and the browser's locale).

/** "just now", "5m ago", "3h ago", "2d ago", a date after a month; "Never" for null. */
export function relativeTime(iso, nowMs = Date.now()) {
  if (!iso) return 'Never';
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return 'Never';
  const s = Math.max(0, Math.round((nowMs - t) / 1000));
  if (s < 60) return 'just now';
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ago`;
  const hrs = Math.floor(m / 60);
  if (hrs < 24) return `${hrs}h ago`;
  const d = Math.floor(hrs / 24);
  if (d < 30) return `${d}d ago`;
  return humanDate(iso);
}

/** e.g. "Nov 1, 2026" in the browser's locale. */
export function humanDate(iso) {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return '';
  return new Date(t).toLocaleDateString(undefined, { year: 'numeric', month: 'short', day: 'numeric' });
}

/** Full date and time, for a title attribute. */
export function fullDateTime(iso) {
  const t = Date.parse(iso);
  return Number.isNaN(t) ? '' : new Date(t).toLocaleString();
}

export const rate = (perMinute) => `${perMinute}/min`;

export const count = (n) => Number(n).toLocaleString();

/** "Active" / "Inactive" / "Expired" from the API's status. */
export function statusLabel(status) {
  return status === 'active' ? 'Active' : status === 'expired' ? 'Expired' : 'Inactive';
}

/** YYYY-MM-DD of the browser's today, plus `days`. */
export function localDate(days = 0, now = new Date()) {
  const d = new Date(now.getFullYear(), now.getMonth(), now.getDate() + days);
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

/** Surface names as people read them. */
export const SURFACE_LABEL = { rest_api: 'REST', mcp: 'MCP', a2a: 'A2A' };
