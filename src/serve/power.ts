/**
 * The battery-aware policy (src/run/power/policy.ts) applied to served requests. The battery is read
 * before every request (and when /health or /metrics is asked), the same folder `run` and `chat` read
 * (`--power-supply DIR`, default /sys/class/power_supply), with plan.json's thresholds and hysteresis:
 *
 * - unconstrained: the decoder runs with its full thread count; encoder sessions stay open between requests.
 * - proportional:  the decoder gets α of its threads (its session reopens between two requests; the KV
 *                  caches live in the slots' ChatSessions and stay).
 * - critical:      on-demand cascade: a request's encoders run when it brings media and their sessions are
 *                  released as soon as its features are in hand, so their memory is returned before the
 *                  decoder generates; the decoder and its caches stay.
 *
 * Only the Slots queue calls beforeRequest / afterEncode, one request at a time, so a decoder session is
 * never reopened under a running generation.
 */
import { availableParallelism } from 'node:os';
import { decoderThreadsFor, type PowerMonitor, type PowerReport } from '../run/power/policy.js';
import type { RuntimeModel } from '../run/model.js';

export interface ServePowerReport extends PowerReport {
  /** Intra-op threads the decoder was last reopened with; null: as the model was opened. */
  readonly decoderThreads: number | null;
  /** Encoder sessions closed by the cascade so far. */
  readonly encoderReleases: number;
}

export class ServePower {
  private threads: number | undefined;
  private releases = 0;
  private readonly base: number;

  constructor(readonly monitor: PowerMonitor, private readonly model: RuntimeModel, o: { baseThreads?: number } = {}) {
    this.base = o.baseThreads ?? availableParallelism();
  }

  /** Reads the battery and moves the state (a transition is logged by the monitor's callback). */
  async sample(): Promise<void> {
    await this.monitor.sample();
  }

  /** Before a request leaves the queue: read the battery, give the decoder its threads for the state. */
  async beforeRequest(): Promise<void> {
    await this.sample();
    const want = decoderThreadsFor(this.monitor.policy, this.base, this.threads);
    if (want !== undefined && want !== this.threads) {
      this.threads = want;
      await this.model.set.release(this.model.set.decoder.brick.name, { threads: want });
    }
    if (this.monitor.policy.state === 'critical') await this.releaseEncoders(); // opened before the battery fell
  }

  /** After a request's media were encoded: in the cascade, their encoder sessions go. */
  async afterEncode(): Promise<void> {
    if (this.monitor.policy.state === 'critical') await this.releaseEncoders();
  }

  report(): ServePowerReport {
    return { ...this.monitor.policy.report(), decoderThreads: this.threads ?? null, encoderReleases: this.releases };
  }

  private async releaseEncoders(): Promise<void> {
    const open = new Set(this.model.set.openBricks());
    for (const b of this.model.set.encoders.flatMap((e) => e.chain.map((x) => x.name)))
      if (open.has(b)) {
        await this.model.set.release(b);
        this.releases++;
      }
  }
}
