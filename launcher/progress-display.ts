// log-update draws the live bars: it is maintained (7.x runs on our Node 20; 8.x needs Node 22), owns the terminal's
// cursor and erase codes, redraws only the lines that changed, and keeps its region below whatever is written above
// it. cli-progress's MultiBar would do too, but its last release (3.12.0) is years old; listr2 and @clack/prompts
// draw task lists and spinners, not several bars with a job's log scrolling above them.
import { createLogUpdate } from 'log-update';
import { type Bar, barFigures, barName, fraction, runOf } from './progress.ts';

/** Where the human output goes: lines of the job as they come, blocks (the plan, tables), and the progress bars. */
export interface Display {
  /** One line of the job's output (a worker's log line, an evaluation): above the bars, or stamped. */
  line(text: string): void;
  /** Lines printed as they are, never stamped: the plan, a table. */
  block(text: string): void;
  /** A bar moved; `bars` are all of the job's, in the order they started. */
  progress(bar: Bar, bars: Bar[]): void;
  /** Training ended: the bars stay as they last were, and what follows is printed below them. */
  end(): void;
}

/** The bars when stderr is a terminal, else timestamped progress lines; `out` carries the lines and blocks. */
export function displayFor(out: NodeJS.WriteStream, bars: NodeJS.WriteStream): Display {
  const write = (text: string) => out.write(`${text}\n`);
  const line = out.isTTY ? write : (text: string) => write(`${hhmmss(new Date())} ${text}`);
  return bars.isTTY && process.env['TERM'] !== 'dumb'
    ? new TerminalDisplay(line, write, bars)
    : new PlainDisplay(line, write);
}

/** 14:03:07, local time. */
export function hhmmss(d: Date): string {
  return d.toTimeString().slice(0, 8);
}

/** One line per bar: name, percent, the bar itself, step/total and its figures; sized to the terminal's width. */
export function barLines(bars: Bar[], columns: number): string[] {
  const names = bars.map(barName);
  const nameWidth = Math.max(...names.map((n) => n.length));
  return bars.map((bar, i) => {
    const done = fraction(bar);
    const status = `${bar.step}/${bar.total}  ${barFigures(bar)}`;
    const percent = `${Math.floor(done * 100)}%`.padStart(4);
    const width = Math.max(10, Math.min(40, columns - nameWidth - percent.length - status.length - 4));
    const filled = Math.round(width * done);
    return `${names[i].padEnd(nameWidth)} ${percent} ${'█'.repeat(filled)}${'░'.repeat(width - filled)} ${status}`;
  });
}

/** Redraws at most this often: a step can take a millisecond, a terminal need not show each. */
const FRAME_MS = 100;

/** Live bars at the bottom of the terminal (log-update); lines and blocks are written above them. */
class TerminalDisplay implements Display {
  readonly #live: ReturnType<typeof createLogUpdate>;
  #bars: Bar[] = [];
  #drawnMs = 0;
  #pending: NodeJS.Timeout | undefined;

  constructor(
    private readonly writeLine: (text: string) => void,
    private readonly writeBlock: (text: string) => void,
    private readonly stream: NodeJS.WriteStream,
  ) {
    // The cursor stays: hiding it makes log-update hook every signal (signal-exit), which re-raises a Ctrl-C once
    // the launcher's own handler has run, and the launcher would die before it stops the workers.
    this.#live = createLogUpdate(stream, { showCursor: true });
  }

  line(text: string): void {
    this.#above(() => this.writeLine(text));
  }

  block(text: string): void {
    this.#above(() => this.writeBlock(text));
  }

  progress(_bar: Bar, bars: Bar[]): void {
    this.#bars = bars;
    const wait = this.#drawnMs + FRAME_MS - Date.now();
    if (wait <= 0) this.#draw();
    else this.#pending ??= setTimeout(() => this.#draw(), wait).unref();
  }

  end(): void {
    if (this.#bars.length === 0) return;
    this.#draw();
    this.#live.done();
    this.#bars = [];
  }

  /** The bars come off, the text goes where they were, and they are drawn again below it. */
  #above(write: () => void): void {
    if (this.#bars.length > 0) this.#live.clear();
    write();
    if (this.#bars.length > 0) this.#draw();
  }

  #draw(): void {
    clearTimeout(this.#pending);
    this.#pending = undefined;
    this.#drawnMs = Date.now();
    this.#live(barLines(this.#bars, this.stream.columns ?? 80).join('\n'));
  }
}

/** Progress as lines: at each tenth of a run and at least every this often. */
const PLAIN_EVERY_MS = 30_000;

/** No terminal: no bars and no escape codes, a progress line now and then among the stamped lines. */
class PlainDisplay implements Display {
  /** Per bar: the run (seed) it was on, the tenth of it and the time of its last line. */
  readonly #printed = new WeakMap<Bar, { run: number; tenth: number; ms: number }>();

  constructor(
    readonly line: (text: string) => void,
    readonly block: (text: string) => void,
  ) {}

  progress(bar: Bar): void {
    const tenth = Math.floor(10 * fraction(bar));
    const run = bar.seeds.length;
    const last = this.#printed.get(bar);
    const due = !last || last.run !== run || tenth > last.tenth || bar.nowMs - last.ms >= PLAIN_EVERY_MS;
    if (!due) return;
    this.#printed.set(bar, { run, tenth, ms: bar.nowMs });
    const percent = Math.floor(100 * fraction(bar));
    this.line(`${runOf(bar)} step ${bar.step}/${bar.total} (${percent}%)  ${barFigures(bar)}`);
  }

  end(): void {}
}
