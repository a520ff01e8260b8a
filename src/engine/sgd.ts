import {
  type Betas,
  checkShard,
  type Optimizer,
  type OptimizerState,
  restoreState,
  type ShardLayout,
  shardLength,
} from './optimizer.ts';
import { stepKernels } from './step-kernels.ts';

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

  async step(
    params: Float32Array,
    grads: Float32Array,
    lr: number,
    _betas?: Betas,
    gradScale = 1,
  ): Promise<void> {
    checkShard(this.type, this.#layout, params, grads);
    const { momentum, nesterov, weight_decay } = this.#hp;
    const first = this.#t === 0;
    this.#t++;
    stepKernels().sgd(params, grads, this.#buf, lr, momentum, weight_decay, nesterov, first, gradScale);
  }

  state(): OptimizerState {
    return this.#buf ? { t: this.#t, momentum_buffer: this.#buf } : { t: this.#t };
  }

  loadState(state: OptimizerState): void {
    this.#t = restoreState(this.type, state, { momentum_buffer: this.#buf }, ['t'])['t'];
  }
}
