import { defineConfig } from 'vitest/config';

/**
 * Suites that run in this process only (no workers, no launcher, no CLI): two at a time, first. Everything that
 * starts real processes comes after, one file at a time, so that two launches do not fight for the cores and
 * time out (a launch of two workers already takes both cores of the machine the suite is sized for).
 */
const IN_PROCESS = [
  'test/{backend,comm,config,data,engine,models,objectives,pipeline,trainer}/**/*.test.ts',
  'test/trace/!(launch).test.ts',
  'test/layers.test.ts',
];

export default defineConfig({
  test: {
    testTimeout: 120_000,
    hookTimeout: 60_000,
    pool: 'forks',
    projects: [
      {
        extends: true,
        test: { name: 'in-process', include: IN_PROCESS, sequence: { groupOrder: 0 }, maxWorkers: 2 },
      },
      {
        extends: true,
        test: {
          name: 'processes',
          include: ['test/**/*.test.ts'],
          exclude: IN_PROCESS,
          sequence: { groupOrder: 1 },
          fileParallelism: false,
        },
      },
    ],
  },
});
