import type { Command } from 'commander';
import { parseNumber } from './flags.js';
import { bytes, emit, table } from './output.js';

interface PlanFlags { simulate?: boolean; scenario: string; battery?: string; svg?: string; trace?: string; json?: boolean }

const n = (x: number | null, d = 3) => (x === null ? 'n/a' : x.toFixed(d));

export const planVerb = (program: Command) => program
  .command('plan <bundle-dir>')
  .description('show a bundle\'s schedule plan; --simulate predicts its timeline, memory, energy and battery life against a monolithic baseline')
  .option('--simulate', 'run the discrete-event simulation of the plan on its target (model-based estimate)')
  .option('--scenario <name>', 'chat | voice | camera:FPS', 'chat')
  .option('--battery <mAh>', 'battery capacity (default: the target profile\'s)')
  .option('--svg <file>', 'write the timeline as an SVG Gantt chart (implies --simulate)')
  .option('--trace <file>', 'write a Chrome/Perfetto trace (JSON trace event format; implies --simulate)')
  .option('--json', 'print the result as JSON')
  .action(async (dir: string, f: PlanFlags) => {
    const { planReport } = await import('../compile/plan-report.js');
    const { parseScenario } = await import('../compile/simulate.js');
    const r = await planReport({
      dir, simulate: f.simulate, scenario: parseScenario(f.scenario), svg: f.svg, trace: f.trace,
      batteryMah: parseNumber('--battery', f.battery, { min: 1 }),
    });
    const p = r.bundle.plan;
    if (r.simulation) {
      const s = r.simulation;
      emit({ ...s, wrote: r.wrote }, f.json, () => {
        let out = `${r.bundle.dir}: simulated ${s.scenario} on ${s.target} — MODEL-BASED ESTIMATE, not a measurement\n`;
        out += table(['', 'latency ms', 'energy mJ', 'peak MB', 'battery h (unconstrained)', 'battery h (proportional)', 'battery h (critical)', 'requests', 'dropped'], [
          ['plan', n(s.latencyMs), n(s.energyMj), n(s.peakMemoryMb, 2), n(s.batteryHours.unconstrained, 2), n(s.batteryHours.proportional, 2), n(s.batteryHours.critical, 2), s.requests, s.dropped],
          [`baseline (${s.baseline.accelerator})`, n(s.baseline.latencyMs), n(s.baseline.energyMj), n(s.baseline.peakMemoryMb, 2), n(s.baseline.batteryHours.unconstrained, 2), n(s.baseline.batteryHours.proportional, 2), n(s.baseline.batteryHours.critical, 2), s.baseline.requests, s.baseline.dropped],
        ]);
        out += `ratios (baseline ÷ plan): latency ×${n(s.ratios.latency, 2)}, energy ×${n(s.ratios.energy, 2)}, memory ×${n(s.ratios.peakMemory, 2)}; battery hours (plan ÷ baseline) ×${n(s.ratios.batteryHours.unconstrained, 2)}\n`;
        out += 'assumptions:\n' + s.assumptions.map((a) => `  - ${a}\n`).join('');
        for (const w of r.wrote) out += `wrote ${w}\n`;
        return out;
      });
      return;
    }
    emit({ dir: r.bundle.dir, manifest: r.bundle.manifest, plan: p }, f.json, () => {
      let out = `${r.bundle.dir}: ${r.bundle.manifest.model.id} for ${r.bundle.manifest.target.title} (objective ${p.objective})\n`;
      out += table(['stage', 'accelerator', 'after', 'repeat', 'ms (estimate)', 'mJ (estimate)'], p.stages.map((s) => [s.id, s.accelerator, s.dependsOn.join(', ') || '-', s.repeat ?? 'once', s.predicted.ms, s.predicted.mJ ?? 'n/a']));
      for (const rb of p.ringBuffers) out += `ring buffer ${rb.from} → ${rb.to}: ${rb.slots} × ${bytes(rb.slotBytes)}\n`;
      for (const d of p.memory.domains) out += `memory domain base_domain_id=${d.baseDomainId}: ${d.bricks.join(', ')} (${bytes(d.bytes)})\n`;
      for (const a of p.affinity) out += `affinity ${a.brick}: ${a.accelerator}${a.cpuList ? ` cpus ${a.cpuList}` : ''}${a.coreMask ? ` NPU cores ${a.coreMask}` : ''} — ${a.why}\n`;
      const pp = p.powerPolicy;
      out += `power policy: unconstrained when ${pp.states.unconstrained.when}; proportional when ${pp.states.proportional.when} (α = ${pp.states.proportional.alpha}); critical when ${pp.states.critical.when}: cascade ${pp.states.critical.order.join(' → ')}\n`;
      out += `predicted per request (model-based estimate): ${p.predicted.latencyMs} ms, ${p.predicted.energyMj ?? 'n/a'} mJ, ${bytes(p.predicted.memoryBytes)}\n`;
      out += 'run with --simulate for the timeline, battery life and the monolithic baseline\n';
      return out;
    });
  });
