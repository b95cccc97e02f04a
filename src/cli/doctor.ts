import type { Command } from 'commander';
import type { BundleReport, MachineReport } from '../run/doctor.js';
import { parseNumber } from './flags.js';
import { emit, table } from './output.js';

interface DoctorFlags { json?: boolean; threads?: string }

const mark = (ok: boolean) => (ok ? 'ok' : '--');
const num = (x: number, digits: number) => (Number.isFinite(x) ? x.toFixed(digits) : '-');

export const doctorVerb = (program: Command) => program
  .command('doctor [bundle]')
  .description("what this machine can run (backends, NPU/GPU libraries and devices, Vulkan, CPU clusters); with a bundle, each brick on its placed backend vs the CPU")
  .option('--threads <n>', 'CPU threads per brick')
  .option('--json', 'print the report as JSON')
  .action(async (bundle: string | undefined, f: DoctorFlags) => {
    const { probeMachine, checkBundle } = await import('../run/doctor.js');
    // The bundle first: a bad path is one error line, before any backend probe prints (Dawn warns on stderr).
    const bricks = bundle ? await checkBundle(bundle, { threads: parseNumber('--threads', f.threads, { min: 1, integer: true }) }) : undefined;
    const machine = await probeMachine();
    emit<DoctorReport>({ machine, ...(bricks ? { bundle: bricks } : {}) }, f.json, renderDoctor);
  });

/** `doctor --json`'s shape (deploy --doctor renders the board's copy with the same function). */
export interface DoctorReport { readonly machine: MachineReport; readonly bundle?: BundleReport }

export const renderDoctor = (r: DoctorReport): string => renderMachine(r.machine) + (r.bundle ? renderBundle(r.bundle) : '');

function renderMachine(m: MachineReport): string {
  let out = 'backends\n' + table(['backend', '', 'detail'], Object.entries(m.backends).map(([k, c]) => [k, mark(c.ok), c.detail]));
  out += 'NPU runtime libraries\n' + table(['library', '', 'detail'], Object.entries(m.libraries).map(([k, c]) => [k, mark(c.ok), c.detail]));
  out += `NPU device nodes: ${m.devices.npu.join(', ') || 'none'}; NPU driver: ${m.npuDriver ?? 'not reported'}\n`;
  out += `GPU render nodes: ${m.devices.gpuRender.join(', ') || 'none'}\n`;
  out += m.vulkan.ok
    ? 'Vulkan devices\n' + table(['device', 'type', 'api', 'driver'], m.vulkan.devices.map((d) => [d.name, d.type, d.apiVersion, [d.driverName, d.driverInfo].filter(Boolean).join(', ')]))
    : `Vulkan: ${m.vulkan.reason}\n`;
  out += 'CPU clusters\n' + table(['cpus', 'model', 'max MHz', 'min MHz'], m.cpu.map((c) => [c.cpus, c.model, c.maxMhz ?? '-', c.minMhz ?? '-']));
  return out;
}

function renderBundle(b: BundleReport): string {
  let out = `\nbundle ${b.dir}: each brick on its backend vs ort-cpu, same synthetic inputs (second run timed)\n`;
  for (const n of b.notices) out += `notice: ${n}\n`;
  out += table(['brick', 'placed', 'ran on', 'open ms', 'run ms', 'cpu ms', 'cosine', 'max abs err'], b.bricks.map((x) =>
    [x.brick, x.placed, x.backend, num(x.openMs, 0), num(x.runMs, 2), num(x.cpuRunMs, 2), x.error ? `error: ${x.error}` : num(x.cosine, 6), num(x.maxAbsError, 6)]));
  return out;
}
