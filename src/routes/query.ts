// Reading and removing single query parameters without re-encoding the rest: what is not removed
// is forwarded byte for byte. Names are compared decoded, as upstreams (Go's url.ParseQuery) do,
// so "remote%4Eode=x" cannot slip past a check for "remoteNode".

function decodeName(raw: string): string {
  if (raw.indexOf('%') === -1 && raw.indexOf('+') === -1) return raw;
  try {
    return decodeURIComponent(raw.replace(/\+/g, ' '));
  } catch {
    return raw;
  }
}

export interface Taken {
  /** decoded values of `name`, in order */
  values: string[];
  /** the query without any `name` parameter, other parts unchanged */
  rest: string;
}

/** All values of `name` and the query without them. Cheap when the name cannot be present. */
export function takeParam(query: string, name: string, mayBeEncoded = true): Taken {
  if (query === '' || (!mayBeEncoded && query.indexOf(name) === -1)) return { values: [], rest: query };
  const values: string[] = [];
  const kept: string[] = [];
  for (const part of query.split('&')) {
    const eq = part.indexOf('=');
    const rawName = eq === -1 ? part : part.slice(0, eq);
    if (decodeName(rawName) === name) {
      values.push(eq === -1 ? '' : decodeName(part.slice(eq + 1)));
    } else kept.push(part);
  }
  return values.length === 0 ? { values, rest: query } : { values, rest: kept.join('&') };
}

/** Whether the raw query might contain `name` in any encoding (a fast pre-check). */
export function mayContain(query: string, name: string): boolean {
  return query !== '' && (query.indexOf(name) !== -1 || query.indexOf('%') !== -1);
}
