// WebSocket upgrades go through http-proxy-3, which splices the two sockets after the handshake.

import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { createProxyServer } from 'http-proxy-3';
import { upstreamFailure, type UpstreamFailure } from './forward.js';
import type { Upstream } from './upstream.js';

type ProxyServer = ReturnType<typeof createProxyServer>;

export class WebSocketProxy {
  private readonly proxy: ProxyServer;

  constructor() {
    this.proxy = createProxyServer({ ws: true, xfwd: false, prependPath: false });
    // Without an error listener http-proxy-3 throws and takes the process down.
    this.proxy.on('error', () => {});
  }

  /**
   * Forward an authorised upgrade. `headers` replaces the client's headers entirely (credentials
   * already stripped), because http-proxy-3 merges rather than replaces per-call headers.
   */
  forward(
    req: IncomingMessage,
    socket: Duplex,
    head: Buffer,
    upstream: Upstream,
    path: string,
    headers: Record<string, string | string[]>,
    onError: (failure: UpstreamFailure) => void,
  ): void {
    req.url = path;
    req.headers = { ...headers, connection: 'Upgrade', upgrade: req.headers.upgrade ?? 'websocket' };
    this.proxy.ws(
      req,
      socket,
      head,
      {
        target: upstream.origin,
        secure: !upstream.config.skip_tls_verify,
        proxyTimeout: upstream.config.timeout * 1000,
      },
      (err: unknown) => onError(upstreamFailure(err as Error, upstream.name)),
    );
  }

  close(): void {
    this.proxy.close();
  }
}
