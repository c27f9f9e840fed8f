// The public listener's request: node's IncomingMessage plus what must be read while its socket
// is attached (node lets go of the socket once a kept-alive response has finished, before the
// access log is written).

import { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';

export class GatewayRequest extends IncomingMessage {
  /** the client's address as the socket saw it ('' when unknown) */
  readonly remoteAddress: string;

  constructor(socket: Socket) {
    super(socket);
    this.remoteAddress = socket.remoteAddress ?? '';
  }
}
