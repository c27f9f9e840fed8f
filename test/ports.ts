// A free loopback port for a server a test starts itself (redis-server, Dagu, a port nothing listens on).

import { once } from 'node:events';
import { createServer } from 'node:net';

/** A loopback port that was free a moment ago (the OS picked it; nothing listens on it now). */
export async function freePort(): Promise<number> {
  const srv = createServer().listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const port = (srv.address() as { port: number }).port;
  srv.close();
  await once(srv, 'close');
  return port;
}
