/** Rendering for the CLI: JSON for scripts, aligned tables and human sizes for people. */
export type Renderer<T> = (value: T) => string;

export function emit<T>(value: T, json: boolean | undefined, render: Renderer<T>): void {
  process.stdout.write(json ? JSON.stringify(value, null, 2) + '\n' : fitLines(render(value), outputWidth()));
}

/**
 * Text output folded to `width`: each longer line is wrapped at spaces, continuation lines indented two
 * more than the line's own indent (tables are already narrowed by `table`, so this only touches prose).
 */
export function fitLines(text: string, width: number): string {
  if (!Number.isFinite(width)) return text;
  return text.split('\n').map((line) => {
    if (line.length <= width) return line;
    const indent = /^ */.exec(line)![0].length;
    const pad = ' '.repeat(Math.min(indent + 2, Math.floor(width / 2)));
    const [first, ...rest] = wrapText(line.slice(indent), width - indent);
    const more = rest.join(' ');
    return [' '.repeat(indent) + first, ...(more ? wrapText(more, width - pad.length).map((l) => pad + l) : [])].join('\n');
  }).join('\n');
}

/**
 * The width text output must fit: the terminal's columns, or $COLUMNS; unlimited when piped without
 * COLUMNS (scripts read --json; a captured table keeps its full cells).
 */
export function outputWidth(): number {
  if (process.stdout.isTTY && process.stdout.columns) return process.stdout.columns;
  const c = Number(process.env.COLUMNS);
  return Number.isInteger(c) && c > 0 ? c : Infinity;
}

/** `text` broken into lines of at most `w` characters, at spaces where possible. */
export function wrapText(text: string, w: number): string[] {
  if (text.length <= w) return [text];
  const out: string[] = [];
  let line = '';
  for (const word of text.split(' ')) {
    let rest = word;
    while (rest.length > w) {                    // a word longer than the column: hard split
      if (line) { out.push(line); line = ''; }
      out.push(rest.slice(0, w));
      rest = rest.slice(w);
    }
    if (!line) line = rest;
    else if (line.length + 1 + rest.length <= w) line += ' ' + rest;
    else { out.push(line); line = rest; }
  }
  if (line) out.push(line);
  return out;
}

/**
 * An aligned table. When it is wider than `width`, the widest text columns are narrowed (not below
 * their header or 8 characters) and their cells wrapped onto more lines; numeric columns keep their
 * width. The full values are in each command's --json output.
 */
export function table(header: readonly string[], rows: readonly (readonly (string | number)[])[], width = outputWidth()): string {
  const cells = [header, ...rows].map((r) => r.map(String));
  const natural = header.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  const numeric = header.map((_, i) => rows.length > 0 && rows.every((r) => typeof r[i] === 'number' || /^[\d.,]+\s*\S*$/.test(String(r[i]))));
  // A text column narrows down to its header or its longest word (at most 16), so words are not cut.
  const longestWord = (i: number) => Math.max(...cells.map((r) => Math.max(...(r[i] ?? '').split(' ').map((w) => w.length))));
  const floor = header.map((h, i) => (numeric[i] ? natural[i] : Math.min(natural[i], Math.max(h.length, Math.min(longestWord(i), 16)))));
  const span = (cols: readonly number[], w: readonly number[]) => cols.reduce((a, i) => a + w[i], 0) + 2 * (cols.length - 1);
  // Columns that cannot fit even narrowed go to further tables below, each led by the first column.
  const groups: number[][] = [[0]];
  for (let i = 1; i < header.length; i++) {
    const g = groups[groups.length - 1];
    if (g.length > 1 && span([...g, i], floor) > width) groups.push([0, i]);
    else g.push(i);
  }
  return groups.map((cols) => renderTable(cols.map((i) => header[i]), cells.slice(1).map((r) => cols.map((i) => r[i] ?? '')),
    cols.map((i) => natural[i]), cols.map((i) => floor[i]), cols.map((i) => numeric[i]), width)).join('\n');
}

function renderTable(header: readonly string[], rows: readonly (readonly string[])[], natural: readonly number[], floor: readonly number[], numeric: readonly boolean[], width: number): string {
  const widths = [...natural];
  const total = () => widths.reduce((a, b) => a + b, 0) + 2 * (widths.length - 1);
  while (total() > width) {
    let widest = -1;
    widths.forEach((w, i) => { if (w > floor[i] && (widest < 0 || w > widths[widest])) widest = i; });
    if (widest < 0) break;                       // cannot narrow further: let the terminal wrap
    widths[widest]--;
  }
  const render = (r: readonly string[]): string[] => {
    const parts = r.map((c, i) => wrapText(c, widths[i]));
    const height = Math.max(...parts.map((p) => p.length));
    return Array.from({ length: height }, (_, k) => parts.map((p, i) => {
      const c = p[k] ?? '';
      return numeric[i] ? c.padStart(widths[i]) : c.padEnd(widths[i]);
    }).join('  ').trimEnd());
  };
  return [...render(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.flatMap(render)].join('\n') + '\n';
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
