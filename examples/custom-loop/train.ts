// A training loop of your own with prepare(): the engine (data parallel, ZeRO-2 here) behind a handful of calls.
import { prepare, type WorkerContext } from 'kd-launch';

export async function main(ctx: WorkerContext) {
  const epochs = Number(ctx.args['epochs'] ?? 2);
  const run = await prepare(ctx, {
    model: { type: 'mlp', layers: [784, 128, 10], dropout: 0.1 },
    data: { dataset: 'mnist' },
    optimizer: { type: 'Adam', params: { lr: 0.002 } },
    scheduler: { type: 'WarmupCosineLR', params: { warmup_num_steps: 20 } },
    train_micro_batch_size_per_gpu: 32,
    zero_optimization: { stage: 2 },
    epochs,
  });
  for (let epoch = 0; epoch < epochs; epoch++) {
    for (const batch of run.batches(epoch)) {
      const stats = await run.step(batch);
      ctx.progress({ step: stats.step, totalSteps: run.totalSteps, metrics: { loss: stats.loss } });
    }
    const accuracy = await run.evaluate();
    if (ctx.rank === 0) ctx.log(`epoch ${epoch + 1}: test accuracy ${(accuracy * 100).toFixed(2)}%`);
    ctx.report({ epoch: epoch + 1, accuracy });
  }
  await run.save(String(ctx.args['out'] ?? 'model'));
  run.dispose();
}
