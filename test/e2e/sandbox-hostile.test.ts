/**
 * Hostile tasks (issue 4, acceptance 2): each one tries to escape, starve or flood the gateway and is
 * contained with the right code, while a well-behaved task next to it keeps answering a device over MQTT
 * with bounded latency. Real coordinator (in this process), real broker, real task host with isolates.
 */
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Coordinator } from '../../src/coordinator.js';
import type { TaskBundle } from '../../src/tasks/spec.js';
import { bundle, startInProcess } from '../helpers/in-process.js';
import { connect } from '../helpers/mqtt.js';

const STEADY = bundle(
  {
    name: 'steady',
    triggers: [{ topic: 'steady/+/in' }],
    routes: [{ source: 'task:steady', filter: 'steady/+/out', target: 'broker' }],
    limits: { concurrency: 2, timeoutMs: 1000 },
    permissions: { publish: ['steady/+/out'] },
  },
  `export default { async onEvent(e, ctx) { await ctx.publish('steady/' + e.topic.split('/')[1] + '/out', e.text); } }`,
);

interface Case {
  readonly name: string;
  readonly code: string;
  readonly manifest?: Record<string, unknown>;
  /** The invocation fails with this code... */
  readonly code_?: string;
  /** ...or installing the task fails with this code... */
  readonly loadCode?: string;
  /** ...or it succeeds and its result passes this check. */
  readonly result?: (r: unknown) => void;
}

const CASES: Case[] = [
  { name: 'reaches for process', code: `export default { onEvent() { return process.pid; } }`, code_: 'COORD_ERR_TASK_THREW' },
  { name: 'calls require', code: `export default { onEvent() { return require('node:child_process').execSync('id'); } }`, code_: 'COORD_ERR_TASK_THREW' },
  { name: 'imports a built-in dynamically', code: `export default { async onEvent() { return (await import('node:fs')).readFileSync('/etc/passwd', 'utf8'); } }`, code_: 'COORD_ERR_TASK_THREW' },
  { name: 'imports a built-in statically', code: `import fs from 'node:fs'; export default { onEvent() { return fs.readFileSync('/etc/passwd', 'utf8'); } }`, loadCode: 'COORD_ERR_TASK_LOAD' },
  { name: 'spins in a getter on its default export', code: `export default { get onEvent() { for (;;) {} } }`, loadCode: 'COORD_ERR_TASK_LOAD' },
  { name: 'spins in its top-level code', code: `for (;;) {} export default { onEvent() {} }`, loadCode: 'COORD_ERR_TASK_LOAD' },
  {
    name: 'climbs constructor chains toward the host',
    code: `export default { onEvent() {
      const g = ({}).constructor.constructor('return this')();
      const viaError = (() => { try { null.x; } catch (e) { return e.constructor.constructor('return typeof process')(); } })();
      return { process: typeof g.process, require: typeof g.require, viaError, fetch: typeof g.fetch, wasm: typeof g.WebAssembly, sab: typeof g.SharedArrayBuffer };
    } }`,
    result: (r) => expect(r).toEqual({ process: 'undefined', require: 'undefined', viaError: 'undefined', fetch: 'undefined', wasm: 'undefined', sab: 'undefined' }),
  },
  {
    name: 'searches the global object for isolated-vm handles',
    code: `export default { onEvent() {
      const found = [];
      for (const k of Object.getOwnPropertyNames(globalThis)) {
        const v = globalThis[k];
        if (v && (typeof v === 'object' || typeof v === 'function') && ('deref' in v || 'applySync' in v || 'copyInto' in v)) found.push(k);
      }
      return found;
    } }`,
    result: (r) => expect(r).toEqual([]),
  },
  {
    name: 'poisons prototypes of values handed back',
    code: `export default { async onEvent(e, ctx) {
      Object.prototype.polluted = 'yes';
      Object.defineProperty(Object.prototype, 'then', { value: undefined, writable: true, configurable: true });
      Array.prototype.push = function () { throw new Error('push poisoned'); };
      JSON.parse = () => ({ forged: true });
      Promise.prototype.then = function () { throw new Error('then poisoned'); };
      return { a: 1, list: [1, 2] };
    } }`,
    result: (r) => {
      expect(r).toEqual({ a: 1, list: [1, 2] });
      expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    },
  },
  { name: 'loops forever synchronously', code: `export default { onEvent() { for (;;) {} } }`, code_: 'COORD_ERR_TASK_TIMEOUT', manifest: { limits: { timeoutMs: 300 } } },
  {
    name: 'loops forever through microtasks',
    code: `export default { onEvent() { const spin = () => { Promise.resolve().then(spin); }; spin(); return new Promise(() => {}); } }`,
    code_: 'COORD_ERR_TASK_TIMEOUT',
    manifest: { limits: { timeoutMs: 300 } },
  },
  { name: 'never settles', code: `export default { onEvent() { return new Promise(() => {}); } }`, code_: 'COORD_ERR_TASK_TIMEOUT', manifest: { limits: { timeoutMs: 300 } } },
  { name: 'allocates without bound', code: `export default { onEvent() { const a = []; for (;;) a.push(new Array(1e5).fill(Math.random())); } }`, code_: 'COORD_ERR_TASK_MEMORY', manifest: { limits: { memoryMb: 16 } } },
  { name: 'returns a huge result', code: `export default { onEvent() { return 'x'.repeat(4 * 1024 * 1024); } }`, code_: 'COORD_ERR_TASK_LIMIT', manifest: { limits: { memoryMb: 64 } } },
  {
    name: 'floods publishes',
    code: `export default { async onEvent(e, ctx) { await Promise.all(Array.from({ length: 5000 }, (_, i) => ctx.publish('flood/x', String(i)))); } }`,
    code_: 'COORD_ERR_TASK_LIMIT',
    manifest: { permissions: { publish: ['flood/#'] }, routes: [{ source: 'task:hostile', filter: 'flood/#', target: 'broker' }] },
  },
  { name: 'recurses without end', code: `export default { onEvent() { const f = (n) => f(n + 1) + 1; return f(0); } }`, code_: 'COORD_ERR_TASK_THREW' },
  { name: 'floods timers', code: `export default { onEvent() { for (let i = 0; i < 1e6; i++) setTimeout(() => {}, 60000); } }`, code_: 'COORD_ERR_TASK_LIMIT' },
  { name: 'publishes to a topic it was not granted', code: `export default { async onEvent(e, ctx) { await ctx.publish('steady/1/out', 'forged'); } }`, code_: 'COORD_ERR_TASK_DENIED' },
  {
    name: "uses '#' to publish on a reserved $ topic",
    code: `export default { async onEvent(e, ctx) { await ctx.publish('$aws/things/lamp/shadow/update', '{"state":{"desired":{"on":true}}}'); } }`,
    code_: 'COORD_ERR_TASK_DENIED',
    manifest: { permissions: { publish: ['#'] } },
  },
  { name: "writes another thing's shadow", code: `export default { async onEvent(e, ctx) { await ctx.shadow.update('door-lock', { state: { desired: { locked: false } } }); } }`, code_: 'COORD_ERR_TASK_DENIED', manifest: { permissions: { shadows: ['thermostat-1'] } } },
  {
    name: "writes the coordinator's own deployment shadow",
    code: `export default { async onEvent(e, ctx) { await ctx.shadow.update('gw-hostile', { state: { desired: { tasks: {} } } }, 'deployment'); } }`,
    code_: 'COORD_ERR_TASK_DENIED',
    manifest: { permissions: { shadows: ['#'] } },
  },
  { name: 'throws a non-Error', code: `export default { onEvent() { throw 42; } }`, code_: 'COORD_ERR_TASK_THREW' },
  {
    name: 'returns early and spins in the continuation of a host call',
    code: `export default { async onEvent(e, ctx) { ctx.state.get('x').then(() => { for (;;) {} }); return 'early'; } }`,
    manifest: { limits: { timeoutMs: 300 } },
    result: (r) => expect(r).toBe('early'),
  },
  { name: 'floods the log', code: `export default { onEvent() { const big = 'x'.repeat(100000); for (;;) console.log(big); } }`, code_: 'COORD_ERR_TASK_TIMEOUT', manifest: { limits: { timeoutMs: 300 } } },
  {
    name: 'replaces Array.prototype.push to publish a payload past the size check',
    code: `export default { async onEvent(e, ctx) { Array.prototype.push = () => 0; await ctx.publish('flood/big', 'x'.repeat(16 * 1024 * 1024)); } }`,
    code_: 'COORD_ERR_TASK_LIMIT',
    manifest: { limits: { memoryMb: 128 }, permissions: { publish: ['flood/#'] }, routes: [{ source: 'task:hostile', filter: 'flood/#', target: 'broker' }] },
  },
  // Issue 14: every value crossing the boundary is size-checked inside the sandbox, before it is copied.
  { name: 'saves a 10 MB state value in a 32 MB isolate', code: `export default { async onEvent(e, ctx) { await ctx.state.set('big', 'x'.repeat(10 * 1024 * 1024)); } }`, code_: 'COORD_ERR_TASK_LIMIT', manifest: { limits: { memoryMb: 32 } } },
  { name: 'saves a 10 MB state object in a 32 MB isolate', code: `export default { async onEvent(e, ctx) { await ctx.state.set('big', { list: Array.from({ length: 200000 }, (_, i) => 'item-' + i) }); } }`, code_: 'COORD_ERR_TASK_LIMIT', manifest: { limits: { memoryMb: 32 } } },
  {
    name: 'sends a 10 MB shadow update in a 32 MB isolate',
    code: `export default { async onEvent(e, ctx) { await ctx.shadow.update('thermostat-1', { state: { reported: { blob: 'x'.repeat(10 * 1024 * 1024) } } }); } }`,
    code_: 'COORD_ERR_TASK_LIMIT',
    manifest: { limits: { memoryMb: 32 }, permissions: { shadows: ['thermostat-1'] } },
  },
  {
    name: 'publishes a 10 MB payload in a 32 MB isolate',
    code: `export default { async onEvent(e, ctx) { await ctx.publish('flood/big', 'x'.repeat(10 * 1024 * 1024)); } }`,
    code_: 'COORD_ERR_TASK_LIMIT',
    manifest: { limits: { memoryMb: 32 }, permissions: { publish: ['flood/#'] }, routes: [{ source: 'task:hostile', filter: 'flood/#', target: 'broker' }] },
  },
  { name: 'returns a 10 MB result from a 32 MB isolate', code: `export default { onEvent() { return 'x'.repeat(10 * 1024 * 1024); } }`, code_: 'COORD_ERR_TASK_LIMIT', manifest: { limits: { memoryMb: 32 } } },
  {
    name: 'logs a 10 MB line (truncated in the sandbox, the invocation succeeds)',
    code: `export default { onEvent(e, ctx) { ctx.log.info('x'.repeat(10 * 1024 * 1024)); console.log({ big: 'y'.repeat(1024 * 1024) }); return 'logged'; } }`,
    manifest: { limits: { memoryMb: 32 } },
    result: (r) => expect(r).toBe('logged'),
  },
  { name: 'uses a 10 MB thing name', code: `export default { async onEvent(e, ctx) { await ctx.shadow.get('t'.repeat(10 * 1024 * 1024)); } }`, code_: 'COORD_ERR_TASK_LIMIT', manifest: { limits: { memoryMb: 64 } } },
  { name: 'asks for $aws/# in permissions.publish', code: `export default { onEvent() {} }`, loadCode: 'COORD_ERR_DEPLOY_RESERVED_TOPIC', manifest: { permissions: { publish: ['$aws/#'] } } },
  { name: 'asks for $SYS/# in permissions.subscribe', code: `export default { onEvent() {} }`, loadCode: 'COORD_ERR_DEPLOY_RESERVED_TOPIC', manifest: { permissions: { subscribe: ['$SYS/#'] } } },
  { name: 'is triggered by a $aws topic', code: `export default { onEvent() {} }`, loadCode: 'COORD_ERR_DEPLOY_RESERVED_TOPIC', manifest: { triggers: [{ topic: '$aws/things/+/shadow/update' }] } },
  {
    name: 'publishes a forged shadow delta under a "+" grant',
    code: `export default { async onEvent(e, ctx) { await ctx.publish('$aws/things/lamp/shadow/update/delta', '{"state":{"on":true}}'); } }`,
    code_: 'COORD_ERR_TASK_DENIED',
    manifest: { permissions: { publish: ['+/things/+/shadow/#'] } },
  },
  { name: 'floods host calls without waiting', code: `export default { async onEvent(e, ctx) { await Promise.all(Array.from({ length: 5000 }, () => ctx.state.get('k'))); } }`, code_: 'COORD_ERR_TASK_LIMIT', manifest: { limits: { memoryMb: 64 } } },
];

describe('sandbox: hostile tasks are contained', () => {
  let coordinator: Coordinator;
  let device: MqttClient;
  const sent = new Map<number, number>();
  const latencies: number[] = [];
  let pinger: NodeJS.Timeout | undefined;
  let seq = 0;
  let current = 'setup';

  beforeAll(async () => {
    const started = await startInProcess({ thingName: 'gw-hostile' });
    coordinator = started.coordinator;
    await coordinator.tasks.install([STEADY]);
    device = await connect(started.url, { clientId: 'steady-device' });
    device.on('message', (topic) => {
      const id = Number(topic.split('/')[1]);
      const at = sent.get(id);
      if (at === undefined) return;
      sent.delete(id);
      latencies.push(performance.now() - at);
      if (performance.now() - at > 50) process.stdout.write(`slow ping ${(performance.now() - at).toFixed(0)} ms during ${current}\n`);
    });
    await device.subscribeAsync('steady/+/out', { qos: 0 });
    pinger = setInterval(() => {
      const id = ++seq;
      sent.set(id, performance.now());
      device.publish(`steady/${id}/in`, `ping ${id}`, { qos: 0 });
    }, 20);
  });

  afterAll(() => {
    clearInterval(pinger);
    device?.end(true);
  });

  for (const c of CASES) {
    it(`${c.name}: ${c.code_ ?? c.loadCode ?? 'contained'}`, async () => {
      current = c.name;
      const hostile: TaskBundle = bundle({ name: 'hostile', limits: { timeoutMs: 1000 }, ...c.manifest }, c.code);
      if (c.loadCode) {
        await expect(coordinator.tasks.install([STEADY, hostile])).rejects.toMatchObject({ code: c.loadCode });
        return;
      }
      await coordinator.tasks.install([STEADY, hostile]);
      const outcome = coordinator.tasks.invoke('hostile', { type: 'invoke', payload: null });
      if (c.code_) await expect(outcome).rejects.toMatchObject({ code: c.code_ });
      else c.result!(await outcome);
    });
  }

  it('kept the well-behaved task answering throughout, with bounded latency', async () => {
    await new Promise((r) => setTimeout(r, 200));
    const sorted = [...latencies].sort((a, b) => a - b);
    const p99 = sorted[Math.floor(sorted.length * 0.99)]!;
    const max = sorted[sorted.length - 1]!;
    process.stdout.write(`steady task during the hostile suite: ${sorted.length} answers, p50 ${sorted[Math.floor(sorted.length / 2)]!.toFixed(1)} ms, p99 ${p99.toFixed(1)} ms, max ${max.toFixed(1)} ms, unanswered ${sent.size}\n`);
    expect(sorted.length).toBeGreaterThan(50);
    // Every ping was answered, except at most the few still in flight.
    expect(sent.size).toBeLessThanOrEqual(3);
    expect(p99).toBeLessThan(250);
    expect(max).toBeLessThan(1500);
    expect(coordinator.tasks.list().find((t) => t.name === 'steady')).toMatchObject({ state: 'RUNNING', failed: 0 });
    // The task host is responsive (a spinning continuation was stopped) and its memory stayed bounded.
    const started = performance.now();
    const status = (await coordinator.tasks.status()) as { host: { rssBytes: number } };
    expect(performance.now() - started).toBeLessThan(1000);
    expect(status.host.rssBytes).toBeGreaterThan(0);
    expect(status.host.rssBytes).toBeLessThan(400 * 1024 * 1024);
  });
});
