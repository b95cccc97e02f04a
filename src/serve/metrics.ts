/**
 * Counters and histograms for `GET /metrics`, in Prometheus' text exposition format (version 0.0.4),
 * with the power policy's state (one 0/1 gauge per state), α, battery, decoder threads and transitions.
 */
import type { ServePowerReport } from './power.js';
import type { ServeStats } from './request.js';

const POWER_STATES = ['unconstrained', 'proportional', 'critical'] as const;

class Histogram {
  private readonly counts: number[];
  private sum = 0;
  private n = 0;
  constructor(readonly name: string, readonly help: string, readonly buckets: readonly number[]) { this.counts = buckets.map(() => 0); }
  observe(v: number): void {
    this.sum += v;
    this.n++;
    for (let i = 0; i < this.buckets.length; i++) if (v <= this.buckets[i]!) this.counts[i]!++;
  }
  render(): string[] {
    return [
      `# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`,
      ...this.buckets.map((b, i) => `${this.name}_bucket{le="${b}"} ${this.counts[i]}`),
      `${this.name}_bucket{le="+Inf"} ${this.n}`, `${this.name}_sum ${this.sum}`, `${this.name}_count ${this.n}`,
    ];
  }
}

const SECONDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
const PER_TOKEN = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1];

export type Outcome = 'ok' | 'cancelled' | 'refused' | 'client_error' | 'server_error';

export class Metrics {
  private readonly requests = new Map<string, number>();
  private promptTokens = 0;
  private cachedTokens = 0;
  private generatedTokens = 0;
  private readonly ttft = new Histogram('nanomind_time_to_first_token_seconds', 'From leaving the queue to the first token (encoders included).', SECONDS);
  private readonly decode = new Histogram('nanomind_decode_seconds_per_token', 'Mean decode step time of each request.', PER_TOKEN);
  private readonly queueWait = new Histogram('nanomind_queue_wait_seconds', 'Time a request waited for the decoder.', SECONDS);
  private readonly duration = new Histogram('nanomind_request_duration_seconds', 'Queue + encoders + generation per request.', SECONDS);

  constructor(private readonly gauges: () => { queue: number; busy: boolean; power?: ServePowerReport }) {}

  request(api: string, outcome: Outcome): void {
    const k = `api="${api}",outcome="${outcome}"`;
    this.requests.set(k, (this.requests.get(k) ?? 0) + 1);
  }

  generation(s: ServeStats): void {
    this.promptTokens += s.promptTokens;
    this.cachedTokens += s.cachedTokens;
    this.generatedTokens += s.completionTokens;
    this.ttft.observe(s.ttftMs / 1000);
    if (s.completionTokens > 1) this.decode.observe(s.decodeMs / 1000 / (s.completionTokens - 1));
    this.queueWait.observe(s.queueMs / 1000);
    this.duration.observe(s.totalMs / 1000);
  }

  render(): string {
    const g = this.gauges();
    const counter = (name: string, help: string, v: number) => [`# HELP ${name} ${help}`, `# TYPE ${name} counter`, `${name} ${v}`];
    const gauge = (name: string, help: string, v: number) => [`# HELP ${name} ${help}`, `# TYPE ${name} gauge`, `${name} ${v}`];
    return [
      '# HELP nanomind_requests_total Generation requests by API and outcome.', '# TYPE nanomind_requests_total counter',
      ...[...this.requests].map(([k, v]) => `nanomind_requests_total{${k}} ${v}`),
      ...gauge('nanomind_queue_length', 'Requests waiting for the decoder.', g.queue),
      ...gauge('nanomind_decoder_busy', '1 while a request generates.', g.busy ? 1 : 0),
      ...counter('nanomind_prompt_tokens_total', 'Prompt tokens of finished generations.', this.promptTokens),
      ...counter('nanomind_prompt_tokens_cached_total', 'Prompt tokens whose KV cache was reused.', this.cachedTokens),
      ...counter('nanomind_generated_tokens_total', 'Tokens generated (cancelled generations included).', this.generatedTokens),
      ...this.ttft.render(), ...this.decode.render(), ...this.queueWait.render(), ...this.duration.render(),
      ...(g.power ? powerLines(g.power, gauge, counter) : []),
    ].join('\n') + '\n';
  }
}

function powerLines(p: ServePowerReport, gauge: (n: string, h: string, v: number) => string[], counter: (n: string, h: string, v: number) => string[]): string[] {
  return [
    '# HELP nanomind_power_state 1 for the power policy\'s current state (unconstrained, proportional, critical).', '# TYPE nanomind_power_state gauge',
    ...POWER_STATES.map((s) => `nanomind_power_state{state="${s}"} ${p.state === s ? 1 : 0}`),
    ...gauge('nanomind_power_alpha', 'α of the policy: 1 unconstrained, (B - T_low)/(T_high - T_low) proportional, 0 critical.', p.alpha),
    ...(p.batteryPercent === null ? [] : gauge('nanomind_battery_percent', 'Battery capacity last read (lowest battery).', p.batteryPercent)),
    ...(p.decoderThreads === null ? [] : gauge('nanomind_decoder_threads', 'Intra-op threads the decoder was reopened with for the power state.', p.decoderThreads)),
    ...counter('nanomind_power_transitions_total', 'Power state changes since the server started.', p.transitions.length),
    ...counter('nanomind_power_encoder_releases_total', 'Encoder sessions closed by the critical-state cascade.', p.encoderReleases),
  ];
}
