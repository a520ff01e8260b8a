/**
 * CURVE on the data plane: every worker makes a key pair for the job, the rendezvous hands every public key to
 * every peer, and each receive socket admits one key only — the key of the rank it receives from — through a ZAP
 * handler (RFC 27) in this process. So a frame on rank r's socket comes from the holder of rank r's secret key,
 * and every byte between two nodes is encrypted and authenticated (Curve25519, XSalsa20-Poly1305).
 */
import { curveKeyPair, Router } from 'zeromq';

/** A CURVE key pair, Z85-encoded (40 characters each). */
export interface CurveKeys {
  readonly publicKey: string;
  readonly secretKey: string;
}

export function curveKeys(): CurveKeys {
  const { publicKey, secretKey } = curveKeyPair();
  return { publicKey, secretKey };
}

/** The ZAP domain of one receive socket: one transport's socket for frames from `source`. */
function domainOf(keys: CurveKeys, source: number): string {
  // The public key tells the transports of one process apart (tests run whole worlds in one process).
  return `kd-launch/${keys.publicKey}/${source}`;
}

/** Starts the process's ZAP handler: before any receive socket binds, so that no handshake goes unchecked. */
export function startZap(): Promise<void> {
  return zap.start();
}

/**
 * Socket options of a receive socket (CURVE server) for frames from `source`. Enforcing the domain makes a
 * handshake fail, rather than pass unchecked, should the ZAP handler not answer.
 */
export function curveServer(keys: CurveKeys, source: number) {
  return {
    curveServer: true,
    curveSecretKey: keys.secretKey,
    zapDomain: domainOf(keys, source),
    zapEnforceDomain: true,
  };
}

/** Socket options of a send socket (CURVE client) to the peer whose public key is `server`. */
export function curveClient(keys: CurveKeys, server: string) {
  return { curvePublicKey: keys.publicKey, curveSecretKey: keys.secretKey, curveServerKey: server };
}

/** Lets each of `keys`' receive sockets admit its rank's public key (`peers[rank]`), and that key only. */
export function admitPeers(keys: CurveKeys, peers: readonly string[]): void {
  peers.forEach((key, source) => {
    zap.admit(domainOf(keys, source), z85Decode(key));
  });
}

/** Forgets `keys`' receive sockets (their transport closed). */
export function forgetPeers(keys: CurveKeys, world: number): void {
  for (let source = 0; source < world; source++) zap.forget(domainOf(keys, source));
}

/** How long a handshake may wait for its socket's admitted key (a peer may connect before the table is read). */
const PENDING_MS = 30_000;

/**
 * The process's ZAP handler: a Router on ZeroMQ's well-known inproc endpoint, answering each CURVE handshake
 * with 200 when the client's key is the one admitted for the socket's domain, 400 otherwise. A handshake for a
 * domain whose key is not known yet waits for it (up to `PENDING_MS`).
 */
class ZapHandler {
  readonly #admitted = new Map<string, Buffer>();
  readonly #pending = new Map<string, { reply: (ok: boolean) => void; timer: NodeJS.Timeout }[]>();
  #started: Promise<void> | undefined;
  /** Refused handshakes, for the logs and the tests. */
  refused = 0;

  /** Binds once per process; the handler lives as long as the process (ZeroMQ's well-known endpoint). */
  start(): Promise<void> {
    this.#started ??= (async () => {
      const router = new Router({ linger: 0 });
      await router.bind('inproc://zeromq.zap.01');
      void this.#serve(router);
    })();
    return this.#started;
  }

  admit(domain: string, key: Buffer): void {
    this.#admitted.set(domain, key);
    for (const p of this.#pending.get(domain) ?? []) {
      clearTimeout(p.timer);
      p.reply(true);
    }
    this.#pending.delete(domain);
  }

  forget(domain: string): void {
    this.#admitted.delete(domain);
  }

  async #serve(router: Router): Promise<void> {
    for await (const frames of router) {
      // [routing id, empty, version, request id, domain, address, identity, mechanism, client key]
      const [id, , version, requestId, domain, , , mechanism, clientKey] = frames;
      const answer = (ok: boolean) => {
        if (!ok) this.refused++;
        void router
          .send([
            id,
            Buffer.alloc(0),
            version,
            requestId,
            Buffer.from(ok ? '200' : '400'),
            Buffer.from(ok ? 'OK' : 'not a peer of this job'),
            Buffer.alloc(0),
            Buffer.alloc(0),
          ])
          .catch(() => {});
      };
      const name = domain.toString();
      if (mechanism.toString() !== 'CURVE' || !clientKey) {
        answer(false);
        continue;
      }
      const admitted = this.#admitted.get(name);
      if (admitted) {
        answer(admitted.equals(clientKey));
        continue;
      }
      const waiting = this.#pending.get(name) ?? [];
      const entry = {
        reply: (known: boolean) => answer(known && (this.#admitted.get(name)?.equals(clientKey) ?? false)),
        timer: setTimeout(() => {
          this.#pending.set(
            name,
            (this.#pending.get(name) ?? []).filter((p) => p !== entry),
          );
          answer(false);
        }, PENDING_MS),
      };
      entry.timer.unref();
      waiting.push(entry);
      this.#pending.set(name, waiting);
    }
  }
}

const zap = new ZapHandler();

/** Handshakes the process's ZAP handler refused so far. */
export function refusedHandshakes(): number {
  return zap.refused;
}

const Z85 = '0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#';

/** Z85 (ZeroMQ RFC 32) to bytes: 5 characters per 4 bytes. */
export function z85Decode(text: string): Buffer {
  if (text.length % 5 !== 0) throw new RangeError('a Z85 string is a multiple of 5 characters');
  const out = Buffer.alloc((text.length / 5) * 4);
  for (let i = 0; i < text.length; i += 5) {
    let value = 0;
    for (let j = 0; j < 5; j++) {
      const digit = Z85.indexOf(text[i + j]);
      if (digit < 0) throw new RangeError(`'${text[i + j]}' is not a Z85 character`);
      value = value * 85 + digit;
    }
    out.writeUInt32BE(value >>> 0, (i / 5) * 4);
  }
  return out;
}
