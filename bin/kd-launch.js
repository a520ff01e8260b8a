#!/usr/bin/env node
// kd-launch runs compiled (dist/, built by `npm run build` and at install) with plain Node; in a checkout without
// dist/ it runs from its TypeScript sources through tsx.
import { existsSync } from 'node:fs';

const compiled = new URL('../dist/launcher/cli.js', import.meta.url);
if (existsSync(compiled)) {
  await import(compiled.href);
} else {
  const { register } = await import('tsx/esm/api');
  register();
  await import('../launcher/cli.ts');
}
