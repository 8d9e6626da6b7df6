/**
 * The gateway's heartbeat: on every cron tick, one retained-free message on `gateway/heartbeat` with a
 * sequence number that survives restarts (ctx.state), the time the tick fired and how late it ran — a
 * monitoring system that stops seeing it, or sees the lag grow, knows the gateway is down or overloaded.
 */
import type { Task } from 'edge-coordinator';

export default {
  async onEvent(event, ctx) {
    if (event.type !== 'cron') return { ignored: event.type };
    const seq = ((await ctx.state.get<number>('seq')) ?? 0) + 1;
    await ctx.state.set('seq', seq);
    const lagMs = Date.now() - Date.parse(event.firedAt);
    const beat = { gateway: ctx.config?.gateway ?? 'gateway', seq, firedAt: event.firedAt, lagMs, status: 'ok' };
    await ctx.publish('gateway/heartbeat', beat);
    return beat;
  },
} satisfies Task;
