#!/usr/bin/env node
// kd-launch is written in TypeScript and runs from source: tsx compiles it on load, no build step.
import { register } from 'tsx/esm/api';

register();
await import('../launcher/cli.ts');
