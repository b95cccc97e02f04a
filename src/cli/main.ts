/**
 * The CLI boundary: builds the commander program and is the one place that catches errors.
 * A NanomindError prints `error[CODE] message` (+ hint, notes) and exits 1; a usage error exits 2;
 * anything else is a bug: "internal error" with the stack, exit 70. With --json errors are JSON too.
 */
import { Command, CommanderError } from 'commander';
import { isNanomindError } from '../errors.js';
import { benchVerb } from './bench.js';
import { chatVerb } from './chat.js';
import { compileVerb } from './compile.js';
import { demoVerb } from './demo.js';
import { deployVerb } from './deploy.js';
import { doctorVerb } from './doctor.js';
import { evalVerb } from './eval.js';
import { inspectVerb } from './inspect.js';
import { partitionVerb } from './partition.js';
import { planVerb } from './plan.js';
import { pullVerb } from './pull.js';
import { quantizeVerb } from './quantize.js';
import { runVerb } from './run.js';
import { serveVerb } from './serve.js';

export const VERSION = '0.1.0';

export function buildProgram(): Command {
  const program = new Command('nanomind')
    .description('compile and run large multimodal models as bricks on small boards')
    .version(VERSION)
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });
  for (const verb of [demoVerb, pullVerb, inspectVerb, partitionVerb, quantizeVerb, compileVerb, planVerb, runVerb, chatVerb, serveVerb, benchVerb, evalVerb, deployVerb, doctorVerb]) verb(program);
  for (const c of program.commands) c.exitOverride();
  return program;
}

export async function main(argv: readonly string[]): Promise<number> {
  const json = argv.includes('--json');
  // No verb at all is a usage error (docs/cli.md): the help goes to stderr and the exit code is 2.
  if (argv.length <= 2) {
    process.stderr.write(buildProgram().helpInformation());
    return 2;
  }
  try {
    const program = buildProgram();
    // Under --json the error is printed once, as JSON, below: commander's own text is silenced.
    if (json) for (const c of [program, ...program.commands]) c.showHelpAfterError(false).configureOutput({ writeErr: () => {} });
    await program.parseAsync([...argv]);
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.code === 'commander.help') return 0;
      // Same shape as any other error under --json (commander printed the text form already otherwise).
      if (json) process.stdout.write(JSON.stringify({ error: { code: 'E_USAGE', message: e.message.replace(/^error: /, ''), hint: 'run with --help for usage' } }, null, 2) + '\n');
      return 2;
    }
    if (isNanomindError(e)) {
      if (json) {
        process.stdout.write(JSON.stringify({ error: e.toJSON() }, null, 2) + '\n');
      } else {
        const lines = [`error[${e.code}] ${e.message}`];
        for (const n of (e.detail.notes ?? []).slice(0, 20)) lines.push(`  note: ${n}`);
        if (e.detail.hint) lines.push(`hint: ${e.detail.hint}`);
        process.stderr.write(lines.join('\n') + '\n');
      }
      return e.code === 'E_USAGE' ? 2 : 1;
    }
    const err = e as Error;
    process.stderr.write(`internal error: ${err?.stack ?? String(e)}\nThis is a bug in nanomind; please report it with the command you ran.\n`);
    return 70;
  }
}
