import {
  checkShard,
  type Optimizer,
  type OptimizerState,
  restoreState,
  type ShardLayout,
  shardLength,
} from './optimizer.ts';

export interface SgdParams {
  momentum: number;
  nesterov: boolean;
  weight_decay: number;
}

/**
 * torch.optim.SGD (dampening 0): g += wd·p; buf = g on the first step, else μ·buf + g;
 * nesterov: g += μ·buf, else g = buf; p -= lr·g. Purely per element, so any shard works alike.
 */
export class Sgd implements Optimizer {
  readonly type = 'SGD';
  readonly #hp: SgdParams;
  readonly #layout: ShardLayout;
  readonly #buf: Float32Array | undefined;
  #t = 0;

  constructor(hp: SgdParams, layout: ShardLayout) {
    if (hp.nesterov && hp.momentum <= 0) throw new RangeError('SGD: nesterov needs momentum > 0');
    this.#hp = hp;
    this.#layout = layout;
    this.#buf = hp.momentum > 0 ? new Float32Array(shardLength(layout)) : undefined;
  }

  async step(params: Float32Array, grads: Float32Array, lr: number): Promise<void> {
    checkShard(this.type, this.#layout, params, grads);
    const { momentum: mu, nesterov, weight_decay: wd } = this.#hp;
    const buf = this.#buf;
    const first = this.#t === 0;
    this.#t++;
    for (let i = 0; i < params.length; i++) {
      let g = grads[i] + wd * params[i];
      if (buf) {
        const b = first ? g : mu * buf[i] + g;
        buf[i] = b;
        g = nesterov ? g + mu * b : b;
      }
      params[i] -= lr * g;
    }
  }

  state(): OptimizerState {
    return this.#buf ? { t: this.#t, momentum_buffer: this.#buf } : { t: this.#t };
  }

  loadState(state: OptimizerState): void {
    this.#t = restoreState(this.type, state, { momentum_buffer: this.#buf }, ['t'])['t'];
  }
}
