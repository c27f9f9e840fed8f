// The public listener's request and response: node's IncomingMessage plus what must be read while
// its socket is attached (node lets go of the socket once a kept-alive response has finished,
// before the access log is written), and a ServerResponse whose own headers are staged in a plain
// object and sent with the one writeHead that answers.

import { IncomingMessage, ServerResponse, type OutgoingHttpHeaders } from 'node:http';
import type { Socket } from 'node:net';

export class GatewayRequest extends IncomingMessage {
  /**
   * the client's address as the socket saw it ('' when unknown); on a forward-auth request from the
   * trusted proxy, the client's address as the proxy reports it
   */
  remoteAddress: string;
  /** set on a forward-auth request: the pipeline answers the proxy instead of forwarding (no field otherwise) */
  declare forwardAuth?: true;
  /** bytes the connection had written before this request's response */
  private readonly writtenBefore: number;

  constructor(socket: Socket) {
    super(socket);
    this.remoteAddress = socket.remoteAddress ?? '';
    this.writtenBefore = socket.bytesWritten ?? 0;
  }

  /** Bytes of the response written to the connection so far, status line and headers included. */
  bytesOut(): number {
    return (this.socket?.bytesWritten ?? this.writtenBefore) - this.writtenBefore;
  }
}

/**
 * Headers the gateway adds to every response (X-Request-Id, rate-limit headers, Connection while
 * draining) go into `staged`, not through setHeader: writeHead then gets one object, staged names
 * first and the answer's own after them (a name in both keeps its place and takes the answer's
 * value, as setHeader-then-writeHead would), and node takes its fast path (no per-header map).
 */
export class GatewayResponse extends ServerResponse<GatewayRequest> {
  staged: OutgoingHttpHeaders | undefined = undefined;

  /** Add a header to send with the response (before it is sent). */
  stage(name: string, value: string): void {
    if (this.staged === undefined) this.staged = { [name]: value };
    else this.staged[name] = value;
  }

  override writeHead(statusCode: number, reason?: unknown, headers?: unknown): this {
    const staged = this.staged;
    if (staged !== undefined && !this.headersSent) {
      this.staged = undefined;
      const withReason = typeof reason === 'string';
      const given = (withReason ? headers : reason) as OutgoingHttpHeaders | readonly unknown[] | undefined;
      if (given === undefined || !Array.isArray(given)) {
        const merged = given === undefined ? staged : Object.assign(staged, given);
        return withReason ? super.writeHead(statusCode, reason, merged) : super.writeHead(statusCode, merged);
      }
      // raw [name, value, …] arrays: the ordinary path
      for (const name in staged) this.setHeader(name, staged[name]!);
    }
    return super.writeHead(statusCode, reason as string, headers as OutgoingHttpHeaders);
  }
}
