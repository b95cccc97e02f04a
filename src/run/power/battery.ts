/**
 * The battery as Linux reports it: `/sys/class/power_supply/<name>/{type,capacity,status,online}`
 * (kernel ABI: Documentation/ABI/testing/sysfs-class-power). `dir` points elsewhere for tests
 * (`--power-supply DIR`): a folder laid out the same way.
 *
 * On mains: a supply of type Mains/USB with `online` 1, or a battery Charging or Full. No battery
 * (a desktop, a container without the folder): the reading says so and the policy runs unconstrained.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fail } from '../../errors.js';

export const SYSFS_POWER_SUPPLY = '/sys/class/power_supply';

export interface BatteryReading {
  /** Lowest capacity among the batteries, in percent; null without a battery. */
  readonly percent: number | null;
  readonly onMains: boolean;
  /** The battery's status word (Discharging, Charging, Full, Not charging, Unknown); null without a battery. */
  readonly status: string | null;
  /** Which supplies were read, for the log. */
  readonly supplies: readonly string[];
}

const read = async (f: string): Promise<string | undefined> => (await readFile(f, 'utf8').catch(() => undefined))?.trim();

export async function readBattery(dir: string = SYSFS_POWER_SUPPLY): Promise<BatteryReading> {
  const names = await readdir(dir).catch((e: NodeJS.ErrnoException) => {
    if (dir === SYSFS_POWER_SUPPLY && e.code === 'ENOENT') return [] as string[]; // no power-supply class: no battery
    throw fail('E_POWER_SUPPLY', `cannot read the power-supply folder ${dir}: ${e.code ?? e.message}`, { file: dir, hint: 'point --power-supply at a folder laid out like /sys/class/power_supply' });
  });
  let percent: number | null = null, status: string | null = null, onMains = false;
  const supplies: string[] = [];
  for (const name of names.sort()) {
    const type = await read(join(dir, name, 'type'));
    if (!type) continue;
    supplies.push(`${name}:${type}`);
    if (type === 'Battery') {
      const cap = await read(join(dir, name, 'capacity'));
      const n = cap === undefined ? NaN : Number(cap);
      // The real sysfs can hold a battery whose capacity is unreadable (a phantom or a driver without it):
      // it is skipped there; a folder given on purpose (--power-supply) must be well formed.
      if (!(Number.isFinite(n) && n >= 0 && n <= 100) && dir === SYSFS_POWER_SUPPLY) continue;
      if (!(Number.isFinite(n) && n >= 0 && n <= 100))
        throw fail('E_POWER_SUPPLY', `${join(dir, name, 'capacity')}: '${cap ?? '(missing)'}' is not a percentage`, { file: join(dir, name, 'capacity') });
      const st = (await read(join(dir, name, 'status'))) ?? 'Unknown';
      if (percent === null || n < percent) { percent = n; status = st; }
      if (st === 'Charging' || st === 'Full') onMains = true;
    } else if ((type === 'Mains' || type.startsWith('USB')) && (await read(join(dir, name, 'online'))) === '1') onMains = true;
  }
  return { percent, onMains, status, supplies };
}
