/**
 * A small table-driven command parser over node:util parseArgs: subcommands, typed flags, generated
 * help. (A CLI framework costs the long-running `start` process megabytes of memory it never uses.)
 */
import { parseArgs } from 'node:util';
import { CoordinatorError } from '../errors.js';

/** One flag of a command. */
export interface OptionSpec {
  readonly type: 'string' | 'boolean';
  readonly description: string;
  /** Placeholder shown in help for string flags, e.g. `<file>`. */
  readonly value?: string;
  /** A string flag that may be given more than once; its value is then an array. */
  readonly multiple?: boolean;
}

/** Parsed flag values by camelCase name (arrays for `multiple` flags). */
export type FlagValues = Record<string, string | boolean | string[] | undefined>;

/** One command: its words, positional arguments, flags and what it runs. */
export interface CommandSpec {
  readonly words: readonly string[];
  readonly summary: string;
  readonly args?: readonly string[];
  /** The last argument may be given more than once (at least once), e.g. `deploy <dir>...`. */
  readonly variadic?: boolean;
  readonly options?: Readonly<Record<string, OptionSpec>>;
  readonly run: (values: FlagValues, positionals: string[]) => Promise<void> | void;
}

/** What parsing the command line decided. */
export type Parsed =
  | { kind: 'run'; command: CommandSpec; values: FlagValues; positionals: string[] }
  | { kind: 'help'; text: string }
  | { kind: 'version' };

function kebab(name: string): string {
  return name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

function camel(name: string): string {
  return name.replace(/-([a-z])/g, (_m, c: string) => c.toUpperCase());
}

/** Help for one command. */
export function commandHelp(program: string, command: CommandSpec): string {
  const usage = [program, ...command.words, ...(command.args ?? []), command.variadic ? '...' : '', command.options ? '[options]' : ''].filter(Boolean).join(' ');
  const lines = [`usage: ${usage}`, '', command.summary];
  const rows: [string, string][] = Object.entries(command.options ?? {}).map(([name, o]) => [
    `--${kebab(name)}${o.type === 'string' ? ` ${o.value ?? '<value>'}` : ''}${o.multiple ? ' ...' : ''}`,
    o.description,
  ]);
  rows.push(['-h, --help', 'show this help']);
  const width = Math.max(...rows.map(([flag]) => flag.length));
  lines.push('', 'options:', ...rows.map(([flag, text]) => `  ${flag.padEnd(width)}  ${text}`));
  return `${lines.join('\n')}\n`;
}

/** Help listing every command. */
export function programHelp(program: string, description: string, commands: readonly CommandSpec[]): string {
  const names = commands.map((c) => [...c.words, ...(c.args ?? [])].join(' '));
  const width = Math.max(...names.map((n) => n.length));
  return [
    `usage: ${program} <command> [options]`,
    '',
    description,
    '',
    'commands:',
    ...commands.map((c, i) => `  ${names[i]!.padEnd(width)}  ${c.summary}`),
    '',
    `Run \`${program} <command> --help\` for a command's options. \`${program} --version\` prints the version.`,
    '',
  ].join('\n');
}

/** Parses `argv` (without node and script) against the command table. */
export function parseCommandLine(program: string, description: string, commands: readonly CommandSpec[], argv: readonly string[]): Parsed {
  const wantsHelp = argv.includes('--help') || argv.includes('-h');
  if (argv.length === 0 || (wantsHelp && !commands.some((c) => c.words[0] === argv[0]))) {
    return { kind: 'help', text: programHelp(program, description, commands) };
  }
  if (argv[0] === '--version' || argv[0] === '-v') return { kind: 'version' };

  // The longest command whose words start the command line.
  const command = [...commands]
    .sort((a, b) => b.words.length - a.words.length)
    .find((c) => c.words.every((w, i) => argv[i] === w));
  if (!command) {
    const group = commands.filter((c) => c.words[0] === argv[0]);
    const hint = group.length > 0 ? `; did you mean ${group.map((c) => `"${c.words.join(' ')}"`).join(' or ')}?` : '';
    throw new CoordinatorError('COORD_ERR_CLI_USAGE', `unknown command "${argv.slice(0, 2).join(' ')}"${hint} (see ${program} --help)`);
  }
  if (wantsHelp) return { kind: 'help', text: commandHelp(program, command) };

  const options = Object.fromEntries(Object.entries(command.options ?? {}).map(([name, o]) => [kebab(name), { type: o.type, ...(o.multiple ? { multiple: true } : {}) }]));
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args: argv.slice(command.words.length), options, strict: true, allowPositionals: true });
  } catch (err) {
    // parseArgs explains at length how to pass a positional starting with '-'; the first sentence is the news.
    const message = (err as Error).message.split(/\.\s/)[0]!;
    throw new CoordinatorError('COORD_ERR_CLI_USAGE', `${message} (see ${program} ${command.words.join(' ')} --help)`);
  }
  const expected = command.args?.length ?? 0;
  const countOk = command.variadic ? parsed.positionals.length >= expected : parsed.positionals.length === expected;
  if (!countOk) {
    const what = expected === 0 ? 'no arguments' : `${command.variadic ? 'at least ' : ''}${expected} argument(s): ${command.args!.join(' ')}`;
    throw new CoordinatorError('COORD_ERR_CLI_USAGE', `${program} ${command.words.join(' ')} takes ${what} (see --help)`);
  }
  const values = Object.fromEntries(Object.entries(parsed.values).map(([k, v]) => [camel(k), v as string | boolean | string[]]));
  return { kind: 'run', command, values, positionals: parsed.positionals };
}
