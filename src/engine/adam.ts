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

export interface AdamParams {
  betas: readonly [number, number];
  eps: number;
  weight_decay: number;
}

/**
 * Adam and AdamW as torch.optim (and DeepSpeed FusedAdam) define them, without amsgrad:
 *   Adam:  g += wd·p                 (L2 penalty through the gradient)
 *   AdamW: p -= lr·wd·p              (decoupled decay, before the moment update is applied)
 *   m = β1·m + (1-β1)·g;  v = β2·v + (1-β2)·g²
 *   p -= lr/(1-β1^t) · m / (sqrt(v)/sqrt(1-β2^t) + eps)
 * Purely per element, so any shard works alike.
 */
export class Adam implements Optimizer {
  readonly type: 'Adam' | 'AdamW';
  readonly #hp: AdamParams;
  readonly #layout: ShardLayout;
  readonly #m: Float32Array;
  readonly #v: Float32Array;
  #t = 0;

  constructor(hp: AdamParams, layout: ShardLayout, decoupled: boolean) {
    this.type = decoupled ? 'AdamW' : 'Adam';
    this.#hp = hp;
    this.#layout = layout;
    this.#m = new Float32Array(shardLength(layout));
    this.#v = new Float32Array(shardLength(layout));
  }

  async step(
    params: Float32Array,
    grads: Float32Array,
    lr: number,
    betas?: Betas,
    gradScale = 1,
  ): Promise<void> {
    checkShard(this.type, this.#layout, params, grads);
    const [b1, b2] = betas ?? this.#hp.betas;
    const { eps, weight_decay: wd } = this.#hp;
    const t = ++this.#t;
    stepKernels().adam(
      params,
      grads,
      this.#m,
      this.#v,
      b1,
      b2,
      eps,
      lr / (1 - b1 ** t),
      1 / Math.sqrt(1 - b2 ** t),
      this.type === 'Adam' ? wd : 0,
      this.type === 'AdamW' ? 1 - lr * wd : 1,
      gradScale,
    );
  }

  state(): OptimizerState {
    return { t: this.#t, exp_avg: this.#m, exp_avg_sq: this.#v };
  }

  loadState(state: OptimizerState): void {
    this.#t = restoreState(this.type, state, { exp_avg: this.#m, exp_avg_sq: this.#v }, ['t'])['t'];
  }
}
