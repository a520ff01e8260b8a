import { createSocket } from 'node:dgram';
import { LaunchError } from './errors.ts';

/**
 * This host's address on the route to `host`: what a node other than node 0 advertises for its data plane when
 * `--node-addr` is not given. A connected UDP socket asks the kernel's routing table and sends nothing.
 */
export async function addressToward(host: string, port: number): Promise<string> {
  const socket = createSocket(host.includes(':') ? 'udp6' : 'udp4');
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.connect(port, host, () => resolve());
    });
    return socket.address().address;
  } catch (err) {
    throw new LaunchError(
      `cannot tell this node's address toward the master ${host} (${(err as Error).message}): give --node-addr`,
    );
  } finally {
    socket.close();
  }
}
