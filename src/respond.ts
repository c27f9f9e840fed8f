// How the gateway itself answers: JSON bodies and errors on HTTP, JSON-RPC errors on call routes,
// and a raw refusal on a socket that asked for a WebSocket upgrade.

import { STATUS_CODES, type OutgoingHttpHeaders, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { FORBIDDEN, INVALID_REQUEST, RATE_LIMITED, UNAUTHORIZED, rpcError, type RpcId } from './jsonrpc/policy.js';

/**
 * Write a JSON body with the gateway's standard headers, in one writeHead; extra headers
 * (WWW-Authenticate…) first, and before them those the response staged (GatewayResponse).
 */
function writeJson(res: ServerResponse, status: number, body: string, headers?: Record<string, unknown>): void {
  const length = Buffer.byteLength(body);
  res.writeHead(
    status,
    headers === undefined
      ? { 'content-type': 'application/json; charset=utf-8', 'content-length': length, 'cache-control': 'no-store' }
      : { ...(headers as OutgoingHttpHeaders), 'content-type': 'application/json; charset=utf-8', 'content-length': length, 'cache-control': 'no-store' },
  );
  res.end(body);
}

/** Write a JSON error `{"code","message"}`; the shape every refusal and gateway failure uses. */
export function sendError(res: ServerResponse, status: number, code: string, message: string, headers?: Record<string, unknown>): void {
  writeJson(res, status, JSON.stringify({ code, message }), headers);
}

export function sendJson(res: ServerResponse, status: number, value: unknown): void {
  writeJson(res, status, JSON.stringify(value));
}

/** JSON-RPC error codes for the gateway's HTTP refusals. */
function rpcCodeFor(status: number): number {
  if (status === 401) return UNAUTHORIZED;
  if (status === 403 || status === 404) return FORBIDDEN;
  if (status === 429) return RATE_LIMITED;
  if (status === 400 || status === 408 || status === 413 || status === 431) return INVALID_REQUEST;
  return -32603; // internal error
}

export const INSUFFICIENT_SCOPE = { 'www-authenticate': 'Bearer realm="keygate", error="insufficient_scope"' };

/**
 * A refusal on a JSON-RPC route: the HTTP status stays, the body is a JSON-RPC error with the call's
 * id, and a 403 says why in WWW-Authenticate (MCP's insufficient_scope), as SDK clients expect.
 */
export function sendRpcError(res: ServerResponse, status: number, id: RpcId, message: string, headers?: Record<string, unknown>, code?: number): void {
  if (status === 403 && (headers === undefined || headers['www-authenticate'] === undefined)) headers = { ...headers, ...INSUFFICIENT_SCOPE };
  writeJson(res, status, rpcError(id, code ?? rpcCodeFor(status), message), headers);
}

/**
 * The one place that shapes the gateway's own error answers (refusals, upstream failures, its own
 * faults): on a JSON-RPC path — `rpcId` given, the call's id or null when it was not read — a
 * JSON-RPC error that keeps the HTTP status; everywhere else Keygate's `{"code","message"}`.
 */
export function sendFailure(res: ServerResponse, rpcId: RpcId | undefined, status: number, code: string, message: string, headers?: Record<string, unknown>, rpcCode?: number): void {
  if (rpcId === undefined) sendError(res, status, code, message, headers);
  else sendRpcError(res, status, rpcId, message, headers, rpcCode);
}

export function refuseUpgrade(socket: Duplex, status: number, code: string, message: string, headers?: Record<string, unknown>): void {
  if (!socket.writable) return;
  const body = JSON.stringify({ code, message });
  let extra = '';
  if (headers) for (const name in headers) extra += `${name}: ${String(headers[name])}\r\n`;
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\n${extra}connection: close\r\n\r\n${body}`,
  );
}
