/**
 * Checks of a training job against its dataset, made in the launcher before any worker starts: what the schema
 * alone cannot know (the dataset's sample shape, classes and size). Each problem is one line of a ConfigError
 * naming the field to change.
 */
import type { BatchPlan } from '../src/config/batch.ts';
import { ConfigError, type ConfigIssue } from '../src/config/errors.ts';
import { fieldLine } from '../src/config/load.ts';
import type { ParsedJob } from '../src/config/schema.ts';
import { datasetInfo } from '../src/data/datasets.ts';
import { cnnBlockShapes, modelOutputSize } from '../src/models/shapes.ts';

const dims = (shape: readonly number[]) => shape.join('×');
const product = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

/** Throws a ConfigError listing every mismatch between the job's model, batch sizes and dataset. */
export function checkTrainingJob(job: ParsedJob, batch: BatchPlan, file: string | undefined): void {
  const { model, data } = job;
  if (!model || !data) return; // the schema already demands them of a training job
  const ds = datasetInfo(data.dataset);
  const name = data.dataset;
  const issues: Omit<ConfigIssue, 'line'>[] = [];

  switch (model.type) {
    case 'mlp': {
      const first = model.layers[0];
      if (first !== ds.features) {
        issues.push({
          path: 'model.layers',
          message: `the MLP takes ${first} inputs but ${name} samples have ${ds.features} values (${dims(ds.sampleShape)}): make the first size ${ds.features}`,
        });
      }
      break;
    }
    case 'cnn': {
      const values = product(model.input);
      if (values !== ds.features) {
        issues.push({
          path: 'model.input',
          message: `the CNN takes ${dims(model.input)} = ${values} values per sample but ${name} samples have ${ds.features}: use [${ds.sampleShape.join(', ')}]`,
        });
      }
      const shapes = cnnBlockShapes(model);
      const collapsed = shapes.findIndex(([h, w]) => h < 1 || w < 1);
      if (collapsed >= 0) {
        issues.push({
          path: `model.conv.${collapsed}`,
          message: `conv block ${collapsed} leaves no pixels of the ${dims(model.input)} input (after it: ${dims(shapes[collapsed])}): fewer blocks, smaller strides or pools`,
        });
      }
      break;
    }
  }

  const outputs = modelOutputSize(model);
  if (outputs !== ds.classes) {
    const [path, what] =
      model.type === 'mlp' ? ['model.layers', 'the last size'] : ['model.classes', 'model.classes'];
    issues.push({
      path,
      message: `the model has ${outputs} outputs but ${name} has ${ds.classes} classes: make ${what} ${ds.classes}`,
    });
  }

  if (batch.trainBatchSize > ds.trainSize) {
    const field = job.train_batch_size !== undefined ? 'train_batch_size' : 'train_micro_batch_size_per_gpu';
    issues.push({
      path: field,
      message: `train_batch_size ${batch.trainBatchSize} (train_micro_batch_size_per_gpu ${batch.microBatch} × gradient_accumulation_steps ${batch.accumulation} × data-parallel size ${batch.dataParallel}) is larger than the ${ds.trainSize} samples of ${name}'s training set`,
    });
  }

  if (issues.length > 0) {
    throw new ConfigError(
      file ?? '<job>',
      issues.map((i) => ({ ...i, line: file ? fieldLine(file, i.path) : undefined })),
    );
  }
}
