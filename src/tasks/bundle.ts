/**
 * Bundles a task's TypeScript (or JavaScript) entry into one ES module with esbuild: what the sandbox
 * loads. Platform "neutral": Node built-ins do not resolve, so a task importing one fails here with a
 * clear message instead of at run time.
 */
import { createHash } from 'node:crypto';
import { join, resolve } from 'node:path';
import { build, stop } from 'esbuild';
import { CoordinatorError } from '../errors.js';

/** The bundled module and its sha256 (hex). */
export interface BundledCode {
  readonly code: string;
  readonly sha256: string;
}

/** Bundles `entry` (relative to `dir`); throws COORD_ERR_TASK_BUNDLE with esbuild's messages. */
export async function bundleTask(dir: string, entry: string): Promise<BundledCode> {
  const entryPath = resolve(join(dir, entry));
  try {
    const out = await build({
      entryPoints: [entryPath],
      bundle: true,
      write: false,
      format: 'esm',
      platform: 'neutral',
      target: 'es2022',
      // Only what the task imports itself; nothing resolves to Node's built-ins.
      mainFields: ['module', 'main'],
      logLevel: 'silent',
      legalComments: 'none',
      charset: 'utf8',
    });
    const code = out.outputFiles[0]!.text;
    return { code, sha256: createHash('sha256').update(code).digest('hex') };
  } catch (err) {
    const errors = (err as { errors?: { text: string; location?: { file: string; line: number; column: number } | null }[] }).errors;
    const detail = errors?.length
      ? errors.map((e) => (e.location ? `${e.location.file}:${e.location.line}:${e.location.column}: ${e.text}` : e.text)).join('; ')
      : (err as Error).message;
    throw new CoordinatorError('COORD_ERR_TASK_BUNDLE', `cannot bundle ${entryPath}: ${detail}`, { cause: err });
  }
}

/** Ends esbuild's service process: a running gateway should not keep a bundler alive between deploys. */
export async function stopBundler(): Promise<void> {
  await stop();
}
