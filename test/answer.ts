// One HTTP exchange as the forward-auth tests read it: status, headers, the body as text and as JSON
// (when it is JSON). Shared by test/forward-auth.test.ts and test/forward-auth-caddy.test.ts.

import { request } from 'undici';

export type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

export interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  json: Json | undefined;
}

export async function send(url: string, opts: { method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<Answer> {
  const res = await request(url, { method: (opts.method ?? 'GET') as 'GET', headers: opts.headers ?? {}, ...(opts.body !== undefined ? { body: opts.body } : {}) });
  const text = await res.body.text();
  let json: Json | undefined;
  try {
    json = JSON.parse(text) as Json;
  } catch {
    json = undefined;
  }
  return { status: res.statusCode, headers: res.headers, text, json };
}

/**
 * The first bytes of a stream that stays open (the echo upstream's SSE writes ": connected" at once,
 * then nothing for ten minutes): what arrived, or "(nothing within 20 s)". The stream is closed after.
 */
export async function firstChunk(url: string, headers: Record<string, string>): Promise<{ status: number; contentType: unknown; first: string }> {
  const res = await request(url, { headers });
  let guard: NodeJS.Timeout | undefined;
  const first = await Promise.race([
    new Promise<string>((resolve) => res.body.once('data', (c: Buffer) => resolve(c.toString()))),
    new Promise<string>((resolve) => (guard = setTimeout(() => resolve('(nothing within 20 s)'), 20_000))),
  ]);
  clearTimeout(guard);
  res.body.destroy();
  return { status: res.statusCode, contentType: res.headers['content-type'], first };
}
