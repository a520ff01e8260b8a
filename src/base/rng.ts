/**
 * Seeded pseudo-random numbers of our own, so that shuffles and initial weights are the same on every rank,
 * every run and every backend (`Math.random` is none of these).
 */

/** Mixes a 32-bit value into a well-spread 32-bit value (the finaliser of MurmurHash3). */
function mix32(h: number): number {
  let x = h >>> 0;
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
  return (x ^ (x >>> 16)) >>> 0;
}

/**
 * A seed for one purpose derived from the job seed, e.g. `deriveSeed(seed, LAYER_INIT, layerIndex)`:
 * different purposes get unrelated streams, the same purpose gets the same stream on every rank.
 */
export function deriveSeed(seed: number, ...parts: readonly number[]): number {
  let h = mix32(seed ^ 0x9e3779b9);
  for (const p of parts) h = mix32(h ^ mix32(p + 0x632be5ab));
  return h;
}

/** mulberry32: small, fast and good enough for shuffles and weight init (period 2^32). */
export class Rng {
  #state: number;

  constructor(seed: number) {
    this.#state = seed >>> 0;
  }

  /** A uniform 32-bit unsigned integer. */
  nextUint32(): number {
    this.#state = (this.#state + 0x6d2b79f5) >>> 0;
    let t = this.#state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }

  /** Uniform in [0, 1). */
  next(): number {
    return this.nextUint32() / 4294967296;
  }

  /** Uniform integer in [0, n). */
  nextInt(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** A uniformly random permutation of 0 … n-1 (Fisher–Yates). */
  permutation(n: number): Int32Array {
    const out = new Int32Array(n);
    for (let i = 0; i < n; i++) out[i] = i;
    for (let i = n - 1; i > 0; i--) {
      const j = this.nextInt(i + 1);
      const t = out[i];
      out[i] = out[j];
      out[j] = t;
    }
    return out;
  }
}
