/**
 * TensorFlow.js, loaded with `require`. Imported as ESM, its CommonJS bundles are first scanned for their export
 * names (Node's cjs-module-lexer over some 10 MB of JavaScript): 0.6 s instead of 0.3 s, paid by every launcher,
 * planner and worker process of every job. It is the same module instance either way: a user's
 * `import * as tf from '@tensorflow/tfjs'` shares this one's engine, backends and kernels.
 */
import { createRequire } from 'node:module';
import type * as TF from '@tensorflow/tfjs';

export const tf = createRequire(import.meta.url)('@tensorflow/tfjs') as typeof TF;

/**
 * The package's types under the same name, so that `tf.Tensor` reads the same in a type as in a value. A type the
 * project starts to use is added here (the compiler names it).
 */
export declare namespace tf {
  type Rank = TF.Rank;
  type Tensor<R extends Rank = Rank> = TF.Tensor<R>;
  type Scalar = TF.Scalar;
  type Tensor1D = TF.Tensor1D;
  type Tensor2D = TF.Tensor2D;
  type Tensor3D = TF.Tensor3D;
  type Tensor4D = TF.Tensor4D;
  type Variable<R extends Rank = Rank> = TF.Variable<R>;
  type DataType = TF.DataType;
  type NamedTensorMap = TF.NamedTensorMap;
  type TensorContainer = TF.TensorContainer;
  type LayersModel = TF.LayersModel;
  type Sequential = TF.Sequential;
  namespace layers {
    type Layer = TF.layers.Layer;
  }
  namespace data {
    type Dataset<T extends TF.TensorContainer> = TF.data.Dataset<T>;
  }
  namespace io {
    type ModelJSON = TF.io.ModelJSON;
    type ModelArtifacts = TF.io.ModelArtifacts;
    type WeightsManifestEntry = TF.io.WeightsManifestEntry;
    type SaveResult = TF.io.SaveResult;
    type IOHandler = TF.io.IOHandler;
  }
  namespace backend_util {
    type Conv2DInfo = TF.backend_util.Conv2DInfo;
  }
}
