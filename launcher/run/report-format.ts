/** Text for the HTML report: escaping, and numbers with their units (%, MiB, s, samples/s). */
import type { RunLabel } from '../../src/trainer/records.ts';

const HTML_ESCAPES: Record<string, string> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&#39;',
};

/** Any string from metrics.jsonl (job names, paths, config values) goes through this before it is HTML. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => HTML_ESCAPES[c]);
}

/** JSON inside a `<script>`: no `<` at all, so neither `</script>` nor `<!--` can appear in it. */
export function scriptJson(value: unknown): string {
  return JSON.stringify(value).replace(/</g, '\\u003c');
}

export const MIB = 2 ** 20;

/** JSON turns NaN and ±Infinity into null: shown as a dash. */
function finite(value: number | null | undefined, text: (v: number) => string): string {
  return typeof value === 'number' && Number.isFinite(value) ? text(value) : '—';
}

export const mib = (bytes: number | null | undefined) => finite(bytes, (b) => `${(b / MIB).toFixed(2)} MiB`);
export const percent = (fraction: number | null | undefined) =>
  finite(fraction, (f) => `${(f * 100).toFixed(2)} %`);
export const seconds = (s: number | null | undefined) => finite(s, (v) => `${v.toFixed(1)} s`);
export const samplesPerSecond = (v: number | null | undefined) =>
  finite(v, (x) => `${x.toFixed(1)} samples/s`);
export const plain = (v: number | null | undefined) =>
  finite(v, (x) => (Number.isInteger(x) ? String(x) : x.toPrecision(4)));

/** A run of a multi-stage job as the report's legends and tables name it: `stage` or `stage seed N`. */
export function runName(label: RunLabel): string {
  return label.seed === undefined ? label.stage : `${label.stage} seed ${label.seed}`;
}

/** Fields that are fractions, shown as percentages: accuracies, comm_fraction, the pipeline bubble. */
const FRACTION = /accuracy|fraction|^bubble/;

/** A summary field with the unit its name implies (`…_bytes…` MiB, `…samples_per_s` samples/s, `…_s` s). */
export function fieldText(key: string, value: unknown): string {
  if (Array.isArray(value)) return value.map((v) => fieldText(key, v)).join(', ');
  if (typeof value === 'number' || value === null) {
    if (key.includes('bytes')) return mib(value);
    if (key.endsWith('samples_per_s')) return samplesPerSecond(value);
    if (key.endsWith('_s')) return seconds(value);
    if (FRACTION.test(key)) return percent(value);
    return plain(value);
  }
  return typeof value === 'string' ? value : JSON.stringify(value);
}
