/**
 * `nanomind plan`: reads a bundle (bundle.json + plan.json, checked), and with `simulate` runs the
 * discrete-event simulation and writes the Gantt SVG and the Chrome trace where asked.
 */
import { randomBytes } from 'node:crypto';
import { rename, rm, writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { fail } from '../errors.js';
import { readBundle, type Bundle } from '../formats/bundle.js';
import { checkOutputFile } from '../util/files.js';
import { simulateBundle, type Scenario, type SimResult } from './simulate.js';
import { chromeTrace, ganttSvg } from './timeline.js';

export interface PlanOptions {
  readonly dir: string;
  readonly simulate?: boolean;
  readonly scenario?: Scenario;
  readonly batteryMah?: number;
  readonly svg?: string;
  readonly trace?: string;
}

export type SimSummary = Omit<SimResult, 'timeline' | 'baselineTimeline'>;

export interface PlanReport {
  readonly bundle: Bundle;
  readonly simulation?: SimSummary;
  readonly wrote: readonly string[];
}

export async function planReport(o: PlanOptions): Promise<PlanReport> {
  if (o.svg) await checkOutputFile(o.svg, '--svg');
  if (o.trace) await checkOutputFile(o.trace, '--trace');
  const bundle = await readBundle(resolve(o.dir));
  if (!o.simulate && !o.svg && !o.trace) return { bundle, wrote: [] };
  const sim = await simulateBundle(bundle, { scenario: o.scenario, batteryMah: o.batteryMah });
  const wrote: string[] = [];
  if (o.svg) { await writeAtomic(o.svg, ganttSvg(sim)); wrote.push(resolve(o.svg)); }
  if (o.trace) { await writeAtomic(o.trace, JSON.stringify(chromeTrace(sim)) + '\n'); wrote.push(resolve(o.trace)); }
  const { timeline: _t, baselineTimeline: _b, ...summary } = sim;
  return { bundle, simulation: summary, wrote };
}

async function writeAtomic(file: string, text: string): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    await writeFile(tmp, text);
    await rename(tmp, file);
  } catch (e) {
    await rm(tmp, { force: true });
    throw fail('E_OUTPUT_PATH', `${file}: cannot write (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, {}, e);
  }
}
