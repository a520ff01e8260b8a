/**
 * The flat parameter space of one training job: the net's blocks in order, then the objective's own trainable
 * parameters (distillation's projections) as one last group. A group is the unit ZeRO-3 gathers and releases,
 * and the unit a block-wise backward produces gradients for.
 */
import { type FlatRange, layoutSlots, type TensorSlot } from './flat-params.ts';
import type { Net, ParamSpec } from './net.ts';

/** Name of the group that holds the objective's parameters. */
export const OBJECTIVE_GROUP = 'objective';

export interface ParamGroup {
  readonly name: string;
  /** The group's tensors, with offsets in the whole flat space. */
  readonly slots: readonly TensorSlot[];
  readonly range: FlatRange;
}

export class ParamGroups {
  readonly groups: readonly ParamGroup[];
  /** Every tensor, in flat order. */
  readonly slots: readonly TensorSlot[];
  /** Real parameters in the flat space. */
  readonly length: number;

  constructor(net: Net, objectiveParams: readonly ParamSpec[]) {
    const owners = [
      ...net.blocks.map((b) => ({ name: b.name, params: b.params })),
      { name: OBJECTIVE_GROUP, params: objectiveParams },
    ];
    const names = new Set(owners.map((o) => o.name));
    if (names.size !== owners.length) {
      throw new Error(`block names must be unique and not '${OBJECTIVE_GROUP}'`);
    }
    this.slots = layoutSlots(
      owners.flatMap((o) => o.params.map((p) => ({ name: `${o.name}/${p.name}`, shape: p.shape }))),
    );
    let next = 0;
    this.groups = owners.map((o) => {
      const slots = this.slots.slice(next, next + o.params.length);
      next += o.params.length;
      const start = slots[0]?.offset ?? (next > 0 ? endOf(this.slots[next - 1]) : 0);
      const end = slots.length > 0 ? endOf(slots[slots.length - 1]) : start;
      return { name: o.name, slots, range: { start, end } };
    });
    this.length = this.slots.length > 0 ? endOf(this.slots[this.slots.length - 1]) : 0;
  }

  /** Index of the objective's group (the last one). */
  get objective(): number {
    return this.groups.length - 1;
  }

  /** The largest group, in elements. */
  get largest(): number {
    return this.#sizesDescending()[0] ?? 0;
  }

  /**
   * The two largest groups together, in elements: ZeRO-3's bound on gathered parameters alive at once (the block
   * computing and the next one, prefetched).
   */
  get largestPair(): number {
    const [a = 0, b = 0] = this.#sizesDescending();
    return a + b;
  }

  #sizesDescending(): number[] {
    return this.groups.map((g) => g.range.end - g.range.start).sort((x, y) => y - x);
  }
}

function endOf(slot: TensorSlot): number {
  return slot.offset + slot.size;
}
