/**
 * The control plane's TLS, keyed by the job token: the token derives an Ed25519 key pair (HKDF) and a self-signed
 * certificate that is the same bytes on every holder of the token (Ed25519 signs deterministically). The master
 * presents it and requires it back from every client (mutual TLS), each side trusting that certificate alone. So
 * only holders of the token complete a handshake, everything after it is encrypted, and the token itself never
 * crosses the wire: not in a message, not in the handshake.
 */
import { createPrivateKey, createPublicKey, hkdfSync, sign } from 'node:crypto';

/** The name the certificate is issued to, which clients check instead of the master's host name. */
export const TLS_NAME = 'kd-launch';

export interface TokenCertificate {
  /** PEM, self-signed: the job's one trusted certificate. */
  readonly cert: Buffer;
  /** PEM (PKCS #8). */
  readonly key: Buffer;
}

const cache = new Map<string, TokenCertificate>();

/** The certificate and key the job token derives (see the module comment). */
export function tokenCertificate(token: string): TokenCertificate {
  let made = cache.get(token);
  if (!made) {
    made = derive(token);
    cache.set(token, made);
  }
  return made;
}

function derive(token: string): TokenCertificate {
  const seed = Buffer.from(hkdfSync('sha256', token, 'kd-launch', 'control-plane key', 32));
  // PKCS #8 of an Ed25519 key is a fixed 16-byte prefix and the 32-byte seed.
  const pkcs8 = Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), seed]);
  const key = createPrivateKey({ key: pkcs8, format: 'der', type: 'pkcs8' });
  const spki = createPublicKey(key).export({ format: 'der', type: 'spki' });
  const name = seq(set(seq(oid(0x55, 0x04, 0x03), tlv(0x0c, Buffer.from(TLS_NAME)))));
  const basicConstraints = seq(
    oid(0x55, 0x1d, 0x13),
    tlv(0x01, Buffer.from([0xff])),
    tlv(0x04, seq(tlv(0x01, Buffer.from([0xff])))),
  );
  const altName = seq(oid(0x55, 0x1d, 0x11), tlv(0x04, seq(tlv(0x82, Buffer.from(TLS_NAME)))));
  const tbs = seq(
    tlv(0xa0, tlv(0x02, Buffer.from([2]))), // version 3
    tlv(0x02, Buffer.from([1])), // serial number
    ED25519,
    name,
    // Fixed dates: the certificate must be the same bytes wherever it is derived.
    seq(tlv(0x17, Buffer.from('000101000000Z')), tlv(0x18, Buffer.from('20991231235959Z'))),
    name,
    spki,
    tlv(0xa3, seq(basicConstraints, altName)),
  );
  const der = seq(tbs, ED25519, tlv(0x03, Buffer.concat([Buffer.from([0]), sign(null, tbs, key)])));
  const lines = der.toString('base64').match(/.{1,64}/g) ?? [];
  return {
    cert: Buffer.from(`-----BEGIN CERTIFICATE-----\n${lines.join('\n')}\n-----END CERTIFICATE-----\n`),
    key: Buffer.from(key.export({ format: 'pem', type: 'pkcs8' }) as string),
  };
}

// DER, as far as a certificate needs it.
function tlv(tag: number, ...parts: Buffer[]): Buffer {
  const body = Buffer.concat(parts);
  const n = body.length;
  const length = n < 0x80 ? [n] : n < 0x100 ? [0x81, n] : [0x82, n >> 8, n & 0xff];
  return Buffer.concat([Buffer.from([tag, ...length]), body]);
}
const seq = (...parts: Buffer[]) => tlv(0x30, ...parts);
const set = (...parts: Buffer[]) => tlv(0x31, ...parts);
const oid = (...bytes: number[]) => tlv(0x06, Buffer.from(bytes));
const ED25519 = seq(oid(0x2b, 0x65, 0x70));
