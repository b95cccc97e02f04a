/** Rendering for the CLI: JSON for scripts, aligned tables and human sizes for people. */
export type Renderer<T> = (value: T) => string;

export function emit<T>(value: T, json: boolean | undefined, render: Renderer<T>): void {
  process.stdout.write(json ? JSON.stringify(value, null, 2) + '\n' : render(value));
}

export function table(header: readonly string[], rows: readonly (readonly (string | number)[])[]): string {
  const cells = [header, ...rows].map((r) => r.map(String));
  const widths = header.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  const numeric = header.map((_, i) => rows.length > 0 && rows.every((r) => typeof r[i] === 'number' || /^[\d.,]+\s*\S*$/.test(String(r[i]))));
  const line = (r: readonly string[]) => r.map((c, i) => (numeric[i] ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join('  ').trimEnd();
  return [line(cells[0]), line(widths.map((w) => '-'.repeat(w))), ...cells.slice(1).map(line)].join('\n') + '\n';
}

export function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u++; }
  return `${v.toFixed(v < 10 ? 2 : 1)} ${units[u]}`;
}

export function count(n: number): string {
  if (n < 1e3) return String(n);
  if (n < 1e6) return `${(n / 1e3).toFixed(1)}K`;
  if (n < 1e9) return `${(n / 1e6).toFixed(2)}M`;
  return `${(n / 1e9).toFixed(2)}G`;
}

export const shapeText = (shape: readonly (number | string | null)[] | null): string =>
  shape ? `[${shape.map((d) => (d === null ? '?' : d)).join(', ')}]` : '[?]';

/**
 * Folds per-layer names into one (`past_key_values.0.key … past_key_values.23.value` →
 * `past_key_values.{0..23}.{key,value}`) so tables stay readable for real decoders.
 */
export function compactNames(names: readonly string[]): string[] {
  const groups = new Map<string, { layers: Set<number>; leaves: Set<string> }>();
  const out: string[] = [];
  for (const n of names) {
    const m = /^(.*)\.(\d+)\.(key|value)$/.exec(n);
    if (!m) { out.push(n); continue; }
    let g = groups.get(m[1]);
    if (!g) { g = { layers: new Set(), leaves: new Set() }; groups.set(m[1], g); out.push(`\0${m[1]}`); }
    g.layers.add(Number(m[2]));
    g.leaves.add(m[3]);
  }
  return out.map((n) => {
    if (!n.startsWith('\0')) return n;
    const g = groups.get(n.slice(1))!;
    const layers = [...g.layers].sort((a, b) => a - b);
    return `${n.slice(1)}.{${layers[0]}..${layers[layers.length - 1]}}.{${[...g.leaves].join(',')}}`;
  });
}

export function flopsText(n: number): string {
  const units: [number, string][] = [[1e12, 'TFLOP'], [1e9, 'GFLOP'], [1e6, 'MFLOP'], [1e3, 'kFLOP']];
  const [div, unit] = units.find(([d]) => n >= d) ?? [1, 'FLOP'];
  return `${(n / div).toFixed(n / div < 10 ? 2 : 1)} ${unit}`;
}
