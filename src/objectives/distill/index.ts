/** Knowledge distillation (TextBrewer's feature set) as an Objective: what the training job wires in. */
export { CachedTeacher, cacheTeacherLogits, encodeTeacherLogits, type SampleSource } from './cache.ts';
export { type DistillationMode, DistillationObjective, type DistillationOptions } from './distiller.ts';
export * from './losses.ts';
export * from './projection.ts';
export * from './schedulers.ts';
export {
  type Adaptor,
  blockTapAdaptor,
  type Feature,
  type FeatureRef,
  featureKey,
  LiveTeacher,
  NetTeacher,
  type Teacher,
  type TeacherSource,
  tapAdaptor,
} from './teacher.ts';
