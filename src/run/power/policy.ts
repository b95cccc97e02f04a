/**
 * The battery-aware policy (NANOMIND §3.2), as plan.json's `powerPolicy` states it:
 *   unconstrained  B > T_high (or on mains, or no battery): every brick runs, encoders ∥ decoder;
 *   proportional   T_low < B ≤ T_high: α = (B − T_low) / (T_high − T_low) scales the image-stream
 *                  frame rate and the decoder's threads; the pipeline is kept;
 *   critical       B ≤ T_low: on-demand cascade: encoders run one after another on this thread only
 *                  when a request needs them and their sessions are released afterwards; the
 *                  decoder (and its KV cache) stays.
 * Hysteresis: a state is left upwards only once B clears its threshold by `hysteresisPercent`, so a
 * battery hovering at a threshold does not flap. Every state change is kept as a transition.
 */
import { fail } from '../../errors.js';
import type { PowerPolicyPlan } from '../../formats/bundle.js';
import { readBattery, type BatteryReading } from './battery.js';

export type PowerState = 'unconstrained' | 'proportional' | 'critical';

export interface PowerThresholds {
  readonly highPercent: number;
  readonly lowPercent: number;
  /** How far above a threshold B must rise before the state goes up (default 2 points). */
  readonly hysteresisPercent?: number;
}

/** Without a bundle: the thresholds compile writes when the target names none (50 % / 15 %). */
export const DEFAULT_THRESHOLDS: PowerThresholds = { highPercent: 50, lowPercent: 15 };

export interface PowerTransition {
  /** ms since the policy started. */
  readonly atMs: number;
  readonly from: PowerState;
  readonly to: PowerState;
  readonly batteryPercent: number | null;
  readonly alpha: number;
  /** Why, e.g. 'battery 42% ≤ 50%'. */
  readonly why: string;
}

export interface PowerReport {
  readonly state: PowerState;
  readonly alpha: number;
  readonly thresholds: PowerThresholds;
  readonly batteryPercent: number | null;
  readonly transitions: readonly PowerTransition[];
}

export function thresholdsFrom(plan: PowerPolicyPlan | undefined): PowerThresholds {
  const t = plan ? { highPercent: plan.highPercent, lowPercent: plan.lowPercent } : DEFAULT_THRESHOLDS;
  if (!(t.lowPercent >= 0 && t.highPercent > t.lowPercent && t.highPercent <= 100))
    throw fail('E_POWER_POLICY', `power thresholds need 0 ≤ low < high ≤ 100, got low ${t.lowPercent} high ${t.highPercent}`, { file: 'plan.json' });
  return t;
}

export class PowerPolicy {
  private current: PowerState = 'unconstrained';
  private a = 1;
  private battery: number | null = null;
  private readonly log: PowerTransition[] = [];
  private readonly t0 = performance.now();
  private readonly h: number;

  constructor(readonly thresholds: PowerThresholds, private readonly onTransition?: (t: PowerTransition) => void) {
    this.h = thresholds.hysteresisPercent ?? 2;
  }

  get state(): PowerState { return this.current; }
  /** 1 unconstrained, (B − T_low)/(T_high − T_low) proportional, 0 critical. */
  get alpha(): number { return this.a; }

  /** Moves the state for one battery reading; returns the transition when the state changed. */
  update(r: BatteryReading): PowerTransition | undefined {
    const { highPercent: hi, lowPercent: lo } = this.thresholds;
    const b = r.percent;
    this.battery = b;
    let next: PowerState, why: string;
    if (b === null || r.onMains) { next = 'unconstrained'; why = b === null ? 'no battery' : `on mains (battery ${b}%)`; }
    else {
      // Going up needs B past the threshold plus the hysteresis; going down needs only the threshold.
      const up = (t: number, from: PowerState[]) => (from.includes(this.current) ? b > t + this.h : b > t);
      if (!up(lo, ['critical'])) { next = 'critical'; why = `battery ${b}% ≤ ${lo}%${this.current === 'critical' ? ` (+${this.h} to leave)` : ''}`; }
      else if (!up(hi, ['critical', 'proportional'])) { next = 'proportional'; why = `battery ${b}% in (${lo}%, ${hi}%]`; }
      else { next = 'unconstrained'; why = `battery ${b}% > ${hi}%`; }
    }
    this.a = next === 'unconstrained' ? 1 : next === 'critical' ? 0 : Math.min(1, Math.max(0, (b! - lo) / (hi - lo)));
    if (next === this.current) return undefined;
    const t: PowerTransition = { atMs: Math.round(performance.now() - this.t0), from: this.current, to: next, batteryPercent: b, alpha: this.a, why };
    this.current = next;
    this.log.push(t);
    this.onTransition?.(t);
    return t;
  }

  report(): PowerReport {
    return { state: this.current, alpha: this.a, thresholds: this.thresholds, batteryPercent: this.battery, transitions: [...this.log] };
  }
}

/** A policy fed from a power-supply folder: `sample()` reads it and updates the state. */
export interface PowerMonitor {
  readonly policy: PowerPolicy;
  sample(): Promise<PowerTransition | undefined>;
}

export function powerMonitor(o: { dir?: string; thresholds: PowerThresholds; onTransition?: (t: PowerTransition) => void }): PowerMonitor {
  const policy = new PowerPolicy(o.thresholds, o.onTransition);
  return { policy, sample: async () => policy.update(await readBattery(o.dir)) };
}

/** The one log line of a transition. */
export const transitionLine = (t: PowerTransition): string =>
  `power: ${t.from} → ${t.to} (${t.why}${t.to === 'proportional' ? `, α = ${t.alpha.toFixed(2)}` : ''}) at ${t.atMs} ms`;

/**
 * Decoder intra-op threads for the policy's state: `base` unconstrained, α × `base` (at least 1)
 * proportional; critical keeps what it had (the cascade's cut is in the encoders).
 */
export function decoderThreadsFor(p: PowerPolicy, base: number, current: number | undefined): number | undefined {
  if (p.state === 'critical') return current;
  if (p.state === 'unconstrained') return current === undefined ? undefined : base;
  return Math.max(1, Math.round(p.alpha * base));
}
