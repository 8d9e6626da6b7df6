/**
 * A thermostat for any number of rooms. A sensor publishes its temperature on
 * `sensors/<thing>/temperature` or `devices/<thing>/temperature` (a number, {"celsius": n} or
 * {"temperatureC": n}); the task reads the target from the thing's shadow (desired.targetC, else
 * config.defaultTargetC), switches the heater with a hysteresis band, tells the device on
 * `devices/<thing>/heater/set`, and reports what it decided in the shadow. When config.heaters maps the
 * sensor to a heater device, the heater is switched through its profile too (ctx.devices.invoke
 * turnOn/turnOff): a smart plug through its shadow, a relay board through its topics — the task does not
 * care which. The heater's last state per thing is kept in ctx.state, so a restart does not forget it.
 */
import type { JsonValue, Task, TaskContext } from 'edge-coordinator';

type Heater = 'on' | 'off';

function celsiusOf(payload: JsonValue): number | undefined {
  if (typeof payload === 'number') return payload;
  if (typeof payload === 'string' && payload.trim() !== '') return Number(payload);
  if (payload && typeof payload === 'object' && !Array.isArray(payload)) {
    if (typeof payload.celsius === 'number') return payload.celsius;
    if (typeof payload.temperatureC === 'number') return payload.temperatureC;
  }
  return undefined;
}

async function targetOf(ctx: TaskContext, thing: string): Promise<number> {
  const fallback = Number(ctx.config?.defaultTargetC ?? 21);
  try {
    const doc = await ctx.shadow.get(thing);
    const desired = doc.state.desired as { targetC?: unknown } | undefined;
    return typeof desired?.targetC === 'number' ? desired.targetC : fallback;
  } catch {
    return fallback; // no shadow yet: the configured default
  }
}

export default {
  async onEvent(event, ctx) {
    if (event.type !== 'message') return { ignored: event.type };
    const thing = event.topic.split('/')[1]!;
    const celsius = celsiusOf(event.payload);
    if (celsius === undefined || !Number.isFinite(celsius)) {
      ctx.log.warn(`ignoring a reading from ${thing} that is not a temperature: ${event.text}`);
      return { ignored: 'not a temperature' };
    }
    const target = await targetOf(ctx, thing);
    const band = Number(ctx.config?.hysteresisC ?? 0.5);
    const was: Heater = (await ctx.state.get<Heater>(`heater:${thing}`)) ?? 'off';
    const heater: Heater = celsius < target - band ? 'on' : celsius > target + band ? 'off' : was;

    await ctx.publish(`devices/${thing}/heater/set`, { heater, targetC: target, temperatureC: celsius }, { qos: 1 });
    if (heater !== was) {
      await ctx.state.set(`heater:${thing}`, heater);
      ctx.log.info(`${thing}: ${celsius} °C against ${target} °C, heater ${was} → ${heater}`);
      const device = (ctx.config?.heaters as Record<string, JsonValue> | undefined)?.[thing];
      if (typeof device === 'string') {
        try {
          await ctx.devices.invoke(device, heater === 'on' ? 'turnOn' : 'turnOff');
        } catch (err) {
          // The reading is handled either way; the device's trouble is in the log.
          ctx.log.warn(`heater ${device} of ${thing} not switched ${heater}: ${(err as Error).message}`);
        }
      }
    }
    await ctx.shadow.update(thing, { state: { reported: { temperatureC: celsius, heater } } });
    return { thing, heater, targetC: target };
  },
} satisfies Task;
