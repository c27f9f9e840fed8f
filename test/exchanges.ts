// What an SDK client sends through the gateway and gets back, recorded by the fetch it is given,
// and the refusal among it that the SDK tests look at (A2A and MCP alike).

export interface Exchange {
  url: string;
  method: string;
  /** the request carried X-API-Key */
  sentKey: boolean;
  requestBody: string | undefined;
  status: number;
  headers: Headers;
  /** the body of a refusal (non-2xx); streams are left alone */
  body: string | undefined;
}

/** A fetch (by default the global one) that records every exchange into `exchanges`. */
export function recordingFetch(exchanges: Exchange[], base: typeof fetch = fetch): typeof fetch {
  return async (input, init) => {
    const res = await base(input, init);
    exchanges.push({
      url: input instanceof Request ? input.url : String(input),
      method: init?.method ?? 'GET',
      sentKey: new Headers(init?.headers).has('x-api-key'),
      requestBody: typeof init?.body === 'string' ? init.body : undefined,
      status: res.status,
      headers: res.headers,
      body: res.ok ? undefined : await res.clone().text(),
    });
    return res;
  };
}

/** The last refusal the gateway answered: status, WWW-Authenticate, JSON-RPC body, and the id the refused call had. */
export function lastRefusal(exchanges: Exchange[]) {
  const ex = exchanges.filter((e) => e.status >= 400).at(-1);
  if (ex === undefined) return undefined;
  let body: { jsonrpc?: string; id?: unknown; error?: { code?: number; message?: string } } = {};
  try {
    body = JSON.parse(ex.body ?? '');
  } catch {
    /* not JSON: the assertions on it will fail */
  }
  const sentId = ex.requestBody === undefined ? undefined : (JSON.parse(ex.requestBody) as { id?: unknown }).id;
  return { status: ex.status, wwwAuthenticate: ex.headers.get('www-authenticate'), body, sentId };
}
