/**
 * The code that runs inside every task isolate before the task: it builds the sandbox's globals
 * (console, bounded timers, TextEncoder/TextDecoder) and the `ctx` handed to the task, and it is the only
 * code that holds the host's handles. A bare V8 context has no require, process, file system or network;
 * this module adds nothing that reaches them.
 *
 * Why a script evaluated before the task, whose value is a function (boot) that takes the host's handles
 * and returns the one entry point the host calls (entry, an operation from OP and its arguments): both
 * go to the host only (they are bound to no global) and the task never sees the function's scope, so the
 * isolated-vm Callbacks given to `boot` stay in this closure. One entry point rather than one per
 * operation: each is a Reference the host makes when an isolate starts, and a few microseconds there
 * are a good part of what starting an isolate costs beyond V8's own work. Intrinsics are captured at
 * evaluation, before task code could replace them, and everything that crosses to the host is a JSON
 * string built with the captured JSON.stringify, so poisoned prototypes in the task's realm cannot reach
 * the host. A script rather than a module because isolated-vm reuses V8's code cache for scripts only:
 * compiling this source is most of what it costs to start an isolate without it (isolate-runtime.ts).
 *
 * The functions of the start-up and invocation paths are parenthesized function expressions
 * (`const f = (function f() {...});`): V8 compiles those at once rather than on first call, so their
 * bytecode is in that code cache instead of being compiled again in every new isolate (measured: about
 * 0.1 ms of an isolate's start and 0.2 ms of its first invocation). They are only called once this
 * script has run, so declaring them as constants changes nothing else.
 */
/** The operations of the entry point (its first argument). */
export const OP = {
  setTask: 1,
  run: 2,
  start: 3,
  stop: 4,
  fire: 5,
  clearTimers: 6,
  deliver: 7,
  setMode: 8,
  runOnHost: 9,
  fireOnHost: 10,
  runMany: 11,
  cutMany: 12,
  flushPublishes: 13,
} as const;

export const BOOTSTRAP_SOURCE = String.raw`(function () {
'use strict';
const G = globalThis;
const { parse: jsonParse, stringify: jsonStringify } = JSON;
const ReflectApply = Reflect.apply;
const ObjectFreeze = Object.freeze;
const ObjectDefineProperty = Object.defineProperty;
const MapCtor = Map;
const ErrorCtor = Error;
const StringCtor = String;
const ArrayIsArray = Array.isArray;
const Uint8ArrayCtor = Uint8Array;
const ArrayBufferCtor = ArrayBuffer;
const isView = ArrayBuffer.isView;
const fromCharCode = String.fromCharCode;
const PromiseCtor = Promise;
const promiseThen = Promise.prototype.then;
const mapGet = Map.prototype.get;
const mapSet = Map.prototype.set;
const mapDelete = Map.prototype.delete;
const mapClear = Map.prototype.clear;
const mapHas = Map.prototype.has;
const mapSize = Object.getOwnPropertyDescriptor(Map.prototype, 'size').get;
const hasOwn = Object.prototype.hasOwnProperty;
const charCodeAt = String.prototype.charCodeAt;

// Surfaces a task never needs and that only widen what a hostile one can do.
for (const name of ['WebAssembly', 'SharedArrayBuffer', 'Atomics']) delete G[name];

// Each host handle comes in two kinds: "ignored" (queued to the host's thread; used while this isolate
// runs on isolated-vm's thread pool) and "sync" (called at once; used once the host runs this isolate on
// its own thread, see isolate-runtime.ts), chosen by setMode(). Results of invocations run on the host's
// thread come back through hostDone, after the publishes and log lines they made.
let hostSendI; let hostLogI; let hostTimerI; let hostPublishI;
let hostSendS; let hostLogS; let hostTimerS; let hostPublishS; let hostDone;
let onHostThread = false;
// On the host's thread a crossing costs more than all the checks of a publish, so publishes wait in
// pubText and cross together: with the report of the invocation (hostDone), before a host call, a log
// line or a timer (so nothing overtakes them), or when the host asks (flushPublishes). Packed into one
// string of length-prefixed fields: string concatenation is all it takes, and nothing a task can replace.
let pubText = '';
const pubField = (function pubField(v) { return v === null ? '-' : v.length + ':' + v; });
const takePublishes = (function takePublishes() { const t = pubText; pubText = ''; return t; });
const flushPublishes = (function flushPublishes() { if (pubText !== '') hostPublishS(takePublishes()); });
function hostSend(a, b, c, d) { if (onHostThread) { flushPublishes(); hostSendS(a, b, c, d); } else hostSendI(a, b, c, d); }
function hostLog(a, b, c) { if (onHostThread) { flushPublishes(); hostLogS(a, b, c); } else hostLogI(a, b, c); }
function hostTimer(a, b, c, d) { if (onHostThread) { flushPublishes(); hostTimerS(a, b, c, d); } else hostTimerI(a, b, c, d); }
// Work started on the host's thread and not reported yet: a publish made with none open (code running
// on after its invocation reported) has nothing to ride with and crosses at once.
let open = 0;
const hostPublish = (function hostPublish(a, b, c, d, e) {
  if (!onHostThread) { hostPublishI(a, b, c, d, e); return; }
  pubText += pubField(a) + pubField(b) + pubField(c) + pubField(d) + (e === 1 ? '1' : '0');
  if (open === 0) flushPublishes();
});
const report = (function report(seq, ok, value, stack) { open--; hostDone(seq, ok, value, stack, takePublishes()); });
let task; let config; let maxTimers = 64; let maxPublishes = 100; let publishFilters = []; let maxPayloadBytes = 131072;
const timers = new MapCtor();
let nextTimerId = 1;
const pendingCalls = new MapCtor();
let nextCallId = 1;
let maxLogLines = 200;
let maxCallsInFlight = 256;
let logLines = 0;
const MAX_LOG_CHARS = 4096;
const stringSlice = String.prototype.slice;

// The code leads the message: only message and stack cross the isolate boundary (see isolate-runtime.ts).
const codedError = (function codedError(code, message) {
  const err = new ErrorCtor(code + ': ' + message);
  ObjectDefineProperty(err, 'code', { value: code, enumerable: true });
  return err;
});

const toJson = (function toJson(value, what) {
  let text;
  try { text = jsonStringify(value); } catch (e) { throw codedError('COORD_ERR_TASK_BAD_CALL', what + ' is not JSON-serializable: ' + (e && e.message)); }
  return text === undefined ? 'null' : text;
});

// Limits of what may leave the isolate (docs/tasks.md, "Limits"), checked here — before a byte is copied
// to the host — and again by the core, which is the authority. A string value larger than its limit is
// refused before it is even serialized; a JSON text whose length in characters is already over the limit
// needs no UTF-8 count.
let maxResultBytes = 65536; let maxStateValueBytes = 262144; let maxShadowRequestBytes = 9216; let maxCallChars = 2097152;
const tooLarge = (function tooLarge(what, size, limit, setting) {
  return codedError('COORD_ERR_TASK_LIMIT', what + ' of ' + size + ' bytes exceeds ' + setting + ' (' + limit + ' bytes)');
});
const jsonWithin = (function jsonWithin(value, what, limit, setting) {
  if (typeof value === 'string' && value.length > limit) throw tooLarge(what, value.length, limit, setting);
  const text = toJson(value, what);
  if (text.length > limit) throw tooLarge(what, text.length, limit, setting);
  if (text.length * 3 > limit) { const n = utf8Length(text); if (n > limit) throw tooLarge(what, n, limit, setting); }
  return text;
});

// A host call is sent one-way; its answer comes back through deliver(), which the host calls with the
// task's time limit — so the code that awaited it runs under that limit too, even after the invocation
// that made the call has returned.
const call = (function call(invocationId, method, args) {
  // Refused here, without a crossing, past the bound the host enforces too.
  if (ReflectApply(mapSize, pendingCalls, []) >= maxCallsInFlight) return PromiseCtor.reject(codedError('COORD_ERR_TASK_LIMIT', 'more than ' + maxCallsInFlight + ' host calls in flight'));
  const argsJson = jsonStringify(args);
  if (argsJson.length > maxCallChars) return PromiseCtor.reject(codedError('COORD_ERR_TASK_LIMIT', 'a host call (' + method + ') of ' + argsJson.length + ' characters exceeds the limit of ' + maxCallChars));
  const id = nextCallId++;
  return new PromiseCtor((resolve, reject) => {
    ReflectApply(mapSet, pendingCalls, [id, { resolve, reject }]);
    hostSend(id, method, argsJson, invocationId);
  });
});

function format(args) {
  let out = '';
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    let s;
    if (typeof a === 'string') s = a;
    else if (a instanceof ErrorCtor) s = (a.stack || (a.name + ': ' + a.message));
    else { try { s = jsonStringify(a); } catch { s = StringCtor(a); } if (s === undefined) s = StringCtor(a); }
    out += (i ? ' ' : '') + s;
    if (out.length > MAX_LOG_CHARS) break;
  }
  return out;
}

// Capped here, before anything is copied out of the isolate: a task cannot flood the host's memory.
function emit(invocationId, level, args) {
  if (++logLines > maxLogLines) {
    if (logLines === maxLogLines + 1) hostLog(invocationId, 'warn', 'more than ' + maxLogLines + ' log lines in one invocation; the rest are dropped');
    return;
  }
  let text = format(args);
  if (text.length > MAX_LOG_CHARS) text = ReflectApply(stringSlice, text, [0, MAX_LOG_CHARS]) + '…';
  hostLog(invocationId, level, text);
}

const logger = (function logger(invocationId) {
  const at = (level) => (...args) => { emit(invocationId, level, args); };
  return ObjectFreeze({ debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') });
});

// The current invocation, for console.* (one isolate runs one invocation at a time, except pinned tasks).
let currentInvocation = 'none';
const consoleLevels = { log: 'info', info: 'info', debug: 'debug', warn: 'warn', error: 'error', trace: 'debug' };
const consoleObj = {};
for (const k of ['log', 'info', 'debug', 'warn', 'error', 'trace']) consoleObj[k] = (...args) => { emit(currentInvocation, consoleLevels[k], args); };
G.console = ObjectFreeze(consoleObj);

// --- timers: the host keeps the clock; callbacks run through fire(id) with the task's time limit.
function addTimer(fn, ms, args, repeat) {
  if (typeof fn !== 'function') throw codedError('COORD_ERR_TASK_BAD_CALL', 'timer callback must be a function');
  if (ReflectApply(mapSize, timers, []) >= maxTimers) throw codedError('COORD_ERR_TASK_LIMIT', 'too many pending timers (limit ' + maxTimers + ')');
  let delay = +ms; if (!(delay >= 0)) delay = 0; if (delay > 2147483647) delay = 2147483647;
  if (repeat && delay < 10) delay = 10;
  const id = nextTimerId++;
  ReflectApply(mapSet, timers, [id, { fn, args, repeat, invocation: currentInvocation }]);
  hostTimer('set', id, delay, repeat);
  return id;
}
function clearTimer(id) {
  if (ReflectApply(mapDelete, timers, [id])) hostTimer('clear', id, 0, false);
}
G.setTimeout = (fn, ms, ...args) => addTimer(fn, ms, args, false);
G.setInterval = (fn, ms, ...args) => addTimer(fn, ms, args, true);
G.clearTimeout = clearTimer;
G.clearInterval = clearTimer;
G.queueMicrotask = (fn) => { ReflectApply(promiseThen, PromiseCtor.resolve(), [() => fn()]); };

// --- UTF-8, the only encoding TextEncoder/TextDecoder speak here.
// Counted arithmetically: nothing here a task could have replaced (the host checks again anyway).
function utf8Length(s) {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length && s.charCodeAt(i + 1) >= 0xdc00 && s.charCodeAt(i + 1) <= 0xdfff) { n += 4; i++; }
    else n += 3;
  }
  return n;
}
function utf8Encode(input) {
  const s = StringCtor(input === undefined ? '' : input);
  const out = [];
  for (let i = 0; i < s.length; i++) {
    let c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) { c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00); i++; } else c = 0xfffd;
    } else if (c >= 0xd800 && c <= 0xdfff) c = 0xfffd;
    if (c < 0x80) out.push(c);
    else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 63));
    else if (c < 0x10000) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    else out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
  }
  return new Uint8ArrayCtor(out);
}
function bytesOf(input) {
  if (input instanceof ArrayBufferCtor) return new Uint8ArrayCtor(input);
  if (isView(input)) return new Uint8ArrayCtor(input.buffer, input.byteOffset, input.byteLength);
  throw new TypeError('expected an ArrayBuffer or a typed array');
}
function utf8Decode(input, fatal) {
  const b = input === undefined ? new Uint8ArrayCtor(0) : bytesOf(input);
  let out = ''; let i = 0;
  const bad = () => { if (fatal) throw new TypeError('invalid UTF-8'); out += '\ufffd'; };
  while (i < b.length) {
    const c = b[i];
    let need = 0; let cp = 0; let min = 0;
    if (c < 0x80) { out += fromCharCode(c); i++; continue; }
    else if (c >= 0xc2 && c <= 0xdf) { need = 1; cp = c & 31; min = 0x80; }
    else if (c >= 0xe0 && c <= 0xef) { need = 2; cp = c & 15; min = 0x800; }
    else if (c >= 0xf0 && c <= 0xf4) { need = 3; cp = c & 7; min = 0x10000; }
    else { bad(); i++; continue; }
    let j = 1;
    for (; j <= need; j++) { const d = b[i + j]; if (d === undefined || (d & 0xc0) !== 0x80) break; cp = (cp << 6) | (d & 63); }
    if (j <= need || cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) { bad(); i += Math.max(1, j); continue; }
    i += need + 1;
    if (cp >= 0x10000) { cp -= 0x10000; out += fromCharCode(0xd800 + (cp >> 10), 0xdc00 + (cp & 1023)); } else out += fromCharCode(cp);
  }
  return out;
}
class TextEncoder { get encoding() { return 'utf-8'; } encode(s) { return utf8Encode(s); } }
class TextDecoder {
  #fatal;
  constructor(label = 'utf-8', options = {}) {
    const l = StringCtor(label).toLowerCase();
    if (l !== 'utf-8' && l !== 'utf8') throw new RangeError('only utf-8 is supported in the sandbox');
    this.#fatal = !!(options && options.fatal);
  }
  get encoding() { return 'utf-8'; }
  decode(input) { return utf8Decode(input, this.#fatal); }
}
G.TextEncoder = TextEncoder;
G.TextDecoder = TextDecoder;

const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
function base64(bytes) {
  let out = '';
  for (let i = 0; i < bytes.length; i += 3) {
    const n = (bytes[i] << 16) | ((bytes[i + 1] ?? 0) << 8) | (bytes[i + 2] ?? 0);
    out += B64[(n >> 18) & 63] + B64[(n >> 12) & 63] + (i + 1 < bytes.length ? B64[(n >> 6) & 63] : '=') + (i + 2 < bytes.length ? B64[n & 63] : '=');
  }
  return out;
}

function unbase64(text) {
  const s = StringCtor(text).replace(/[\t\n\f\r ]+/g, '');
  if (s.length % 4 === 1 || /[^A-Za-z0-9+/=]/.test(s)) throw new ErrorCtor('atob: invalid base64');
  let out = ''; let bits = 0; let acc = 0;
  for (let i = 0; i < s.length && s[i] !== '='; i++) {
    acc = (acc << 6) | B64.indexOf(s[i]); bits += 6;
    if (bits >= 8) { bits -= 8; out += fromCharCode((acc >> bits) & 255); }
  }
  return out;
}
G.btoa = (text) => {
  const s = StringCtor(text); const bytes = [];
  for (let i = 0; i < s.length; i++) { const c = s.charCodeAt(i); if (c > 255) throw new ErrorCtor('btoa: characters outside Latin-1'); bytes.push(c); }
  return base64(bytes);
};
G.atob = unbase64;

// --- ctx
const payloadOf = (function payloadOf(payload) {
  if (typeof payload === 'string') return { text: payload };
  if (payload instanceof ArrayBufferCtor || isView(payload)) return { base64: base64(bytesOf(payload)) };
  return { text: toJson(payload, 'payload') };
});
// [MQTT-4.7] filter matching, as the core does it; [MQTT-4.7.2-1] wildcards never match '$' topics first.
const filterMatches = (function filterMatches(filter, topic) {
  if (topic[0] === '$' && (filter[0] === '+' || filter[0] === '#')) return false;
  const f = filter.split('/'); const t = topic.split('/');
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '#') return true;
    if (i >= t.length || (f[i] !== '+' && f[i] !== t[i])) return false;
  }
  return f.length === t.length;
});
const mayPublish = (function mayPublish(topic) {
  for (let i = 0; i < publishFilters.length; i++) if (filterMatches(publishFilters[i], topic)) return true;
  return false;
});
function checkKey(key) {
  if (typeof key !== 'string' || key.length === 0) throw codedError('COORD_ERR_TASK_BAD_CALL', 'state keys are non-empty strings');
  if (key.length > 1024) throw codedError('COORD_ERR_TASK_LIMIT', 'state key of ' + key.length + ' characters exceeds the key limit');
  return key;
}
const makeCtx = (function makeCtx(invocationId, background) {
  const c = (method, args) => call(invocationId, method, args);
  // The core counts and refuses too (it is the authority); counting here spares the host and the core a
  // flood of calls that would all be refused.
  let published = 0;
  // One-way: checked here (so a refusal throws in the task at once), sent without waiting, and checked
  // again by the core, which is the authority and drops (and logs) anything outside the permissions.
  const publish = async (topic, payload, options) => {
    const t = StringCtor(topic);
    if (t === '' || t.length > 65535 || t.includes('+') || t.includes('#') || t.includes('\u0000')) throw codedError('COORD_ERR_TASK_BAD_CALL', 'topic ' + jsonStringify(t) + ' is not a valid topic name');
    if (ReflectApply(charCodeAt, t, [0]) === 36) throw codedError('COORD_ERR_TASK_DENIED', 'this task may not publish to ' + t + ': $ topics are reserved to the coordinator');
    if (!mayPublish(t)) throw codedError('COORD_ERR_TASK_DENIED', 'this task may not publish to ' + t + ' (permissions.publish)');
    const p = payloadOf(payload === undefined ? '' : payload);
    const size = p.text !== undefined ? (p.text.length * 3 > maxPayloadBytes ? utf8Length(p.text) : p.text.length) : (p.base64.length * 3) / 4;
    if (size > maxPayloadBytes) throw codedError('COORD_ERR_TASK_LIMIT', 'payload of ' + size + ' bytes exceeds broker.maxPayloadBytes (' + maxPayloadBytes + ')');
    // onStart's ctx lives as long as the task (its timers publish through it): the core limits it per second instead.
    if (!background && ++published > maxPublishes) throw codedError('COORD_ERR_TASK_LIMIT', 'more than ' + maxPublishes + ' publishes in one invocation (tasks.maxPublishesPerInvocation)');
    hostPublish(invocationId, t, p.text === undefined ? null : p.text, p.base64 === undefined ? null : p.base64, options && options.qos === 1 ? 1 : 0);
  };
  return ObjectFreeze({
    invocationId,
    config: config === undefined ? undefined : jsonParse(config),
    publish,
    shadow: ObjectFreeze({
      get: (thing, name) => c('shadow.get', { thing: StringCtor(thing), name: name === undefined ? undefined : StringCtor(name) }),
      update: (thing, request, name) => c('shadow.update', { thing: StringCtor(thing), name: name === undefined ? undefined : StringCtor(name), requestJson: jsonWithin(request, 'shadow update', maxShadowRequestBytes, 'shadows.maxStateBytes + 1 KiB of envelope') }),
      delete: (thing, name) => c('shadow.delete', { thing: StringCtor(thing), name: name === undefined ? undefined : StringCtor(name) }),
    }),
    devices: ObjectFreeze({
      // params travel as JSON (toJson refuses what is not): nothing but data leaves the sandbox.
      invoke: (thing, action, params) => c('devices.invoke', { thing: StringCtor(thing), action: StringCtor(action), params: params === undefined ? {} : jsonParse(jsonWithin(params, 'device action params', maxPayloadBytes, 'broker.maxPayloadBytes')) }),
    }),
    state: ObjectFreeze({
      get: (key) => c('state.get', { key: checkKey(key) }),
      set: (key, value) => c('state.set', { key: checkKey(key), valueJson: jsonWithin(value, 'state value', maxStateValueBytes, 'tasks.maxStateValueBytes') }),
      delete: (key) => c('state.delete', { key: checkKey(key) }),
      keys: () => c('state.keys', {}),
    }),
    log: logger(invocationId),
  });
});

const handler = (function handler(name) {
  const t = task && task.default;
  const fn = t && t[name];
  return typeof fn === 'function' ? fn : undefined;
});

const invoke = (async function invoke(name, invocationId, event) {
  const fn = handler(name);
  if (!fn) return 'null';
  currentInvocation = invocationId;
  logLines = 0;
  const result = await ReflectApply(fn, task.default, event === undefined ? [makeCtx(invocationId, true)] : [event, makeCtx(invocationId, false)]);
  return jsonWithin(result, 'result', maxResultBytes, 'tasks.maxResultBytes');
});

const boot = (function boot(sendCb, logCb, timerCb, publishCb, configJson, limitsJson, sendSync, logSync, timerSync, publishSync, doneSync) {
  if (hostSendI) throw new ErrorCtor('already initialised');
  hostSendI = sendCb; hostLogI = logCb; hostTimerI = timerCb; hostPublishI = publishCb;
  hostSendS = sendSync; hostLogS = logSync; hostTimerS = timerSync; hostPublishS = publishSync; hostDone = doneSync;
  config = configJson;
  const limits = jsonParse(limitsJson);
  maxTimers = limits.maxTimers; maxPublishes = limits.maxPublishes; publishFilters = limits.publishFilters; maxPayloadBytes = limits.maxPayloadBytes; maxLogLines = limits.maxLogLines; maxCallsInFlight = limits.maxCallsInFlight;
  maxResultBytes = limits.maxResultBytes; maxStateValueBytes = limits.maxStateValueBytes; maxShadowRequestBytes = limits.maxShadowRequestBytes; maxCallChars = limits.maxCallChars;
  return entry;
});
/** The answer to host call id, as {ok, value} or {ok: false, error} JSON. */
function deliver(id, answerJson) {
  const p = ReflectApply(mapGet, pendingCalls, [id]);
  if (!p) return;
  ReflectApply(mapDelete, pendingCalls, [id]);
  const answer = jsonParse(answerJson);
  if (answer.ok) p.resolve(answer.value);
  else p.reject(codedError(answer.error.code, answer.error.message));
}
// The task module's namespace object itself (the host passes it with derefInto(), so no isolated-vm
// Reference is made in this context).
const setTask = (function setTask(namespace) {
  task = namespace;
  return handler('onEvent') ? 'ok' : 'no onEvent';
});
// A message event with a text payload comes as its text alone (the core leaves parsing it here, see
// messageEventJson in runtime.ts): the payload is the text parsed as JSON when it can start a JSON value
// and parses, else the text itself (the one place this rule lives).
const eventOf = (function eventOf(eventJson) {
  const e = jsonParse(eventJson);
  if (e === null || typeof e !== 'object' || e.type !== 'message' || ReflectApply(hasOwn, e, ['payload'])) return e;
  const text = e.text;
  let payload = text;
  const c = ReflectApply(charCodeAt, text, [0]);
  if (c === 123 || c === 91 || c === 34 || c === 45 || (c >= 48 && c <= 57) || text === 'true' || text === 'false' || text === 'null') {
    try { payload = jsonParse(text); } catch { payload = text; }
  }
  return { type: 'message', topic: e.topic, payload, text, qos: e.qos, source: e.source };
});
const run = (function run(invocationId, eventJson) { return invoke('onEvent', invocationId, eventOf(eventJson)); });
function start(invocationId) { return invoke('onStart', invocationId, undefined); }
function stop(invocationId) { return invoke('onStop', invocationId, undefined); }
async function fire(id) {
  const t = ReflectApply(mapGet, timers, [id]);
  if (!t) return false;
  if (!t.repeat) ReflectApply(mapDelete, timers, [id]);
  currentInvocation = t.invocation;
  logLines = 0;
  await ReflectApply(t.fn, undefined, t.args);
  return ReflectApply(mapHas, timers, [id]);
}
function clearTimers() { ReflectApply(mapClear, timers, []); }

// --- entry points for an isolate the host runs on its own thread (applySync): they start the work and
// return; the outcome is reported through hostDone(seq, ok, valueOrMessage, stack, publishes) when it settles.
const setMode = (function setMode(hostThread) { flushPublishes(); onHostThread = hostThread === true; });
// What crosses for a failure: the message (the code leads it for the sandbox's own errors) and the stack,
// read defensively (a thrown value's getters are the task's code, and may throw).
const reportFailure = (function reportFailure(seq, e) {
  let message;
  let stack = null;
  try {
    message = e !== null && (typeof e === 'object' || typeof e === 'function') && typeof e.message === 'string' ? e.message : StringCtor(e);
  } catch { message = 'the task threw a value that cannot be shown'; }
  try { if (e !== null && typeof e === 'object' && typeof e.stack === 'string') stack = e.stack; } catch { stack = null; }
  report(seq, false, message, stack);
});
const settle = (function settle(seq, promise, ok) {
  ReflectApply(promiseThen, promise, [(value) => { ok(value); }, (e) => { reportFailure(seq, e); }]);
});
const runOnHost = (function runOnHost(seq, invocationId, eventJson) {
  const event = eventOf(eventJson);
  open++;
  settle(seq, invoke('onEvent', invocationId, event), (json) => { report(seq, true, json, null); });
});
function fireOnHost(seq, id) {
  open++;
  settle(seq, fire(id), (again) => { report(seq, true, again ? 'true' : 'false', null); });
}
// A batch of invocations in one call (entry(OP.runMany, seq, id1, event1, id2, event2, ...), numbered
// seq, seq + 1, ...): each starts when the one before it has settled, so the isolate still runs one invocation
// at a time. Whatever does not settle within the call stops the batch there, and so do timers left
// behind (an on-demand invocation's timers end with it; the host clears them between calls): the host
// takes back what was not started (cutMany). The arguments object is read, never iterated: nothing of
// the task's realm is reached.
let many = null; let manyAt = 0; let manySeq = 0;
const runManyOnHost = (function runManyOnHost(args) { many = args; manyAt = 2; manySeq = args[1]; nextOfMany(); });
const nextOfMany = (function nextOfMany() {
  const m = many;
  if (m === null) return;
  if (manyAt >= m.length) { many = null; return; }
  if (ReflectApply(mapSize, timers, []) > 0) return;
  const seq = manySeq++; const invocationId = m[manyAt]; const eventJson = m[manyAt + 1];
  manyAt += 2;
  open++;
  let event;
  try { event = eventOf(eventJson); } catch (e) { reportFailure(seq, e); nextOfMany(); return; }
  ReflectApply(promiseThen, invoke('onEvent', invocationId, event), [(json) => { report(seq, true, json, null); nextOfMany(); }, (e) => { reportFailure(seq, e); nextOfMany(); }]);
});
/** Ends the batch; how many of its invocations were not started. */
const cutMany = (function cutMany() { const m = many; many = null; return m === null ? 0 : (m.length - manyAt) / 2; });

// The entry point, for the host only.
const entry = (function entry(op, a, b, c) {
  switch (op) {
    case ${OP.runOnHost}: return runOnHost(a, b, c);
    case ${OP.runMany}: return runManyOnHost(arguments);
    case ${OP.deliver}: return deliver(a, b);
    case ${OP.flushPublishes}: return flushPublishes();
    case ${OP.cutMany}: return cutMany();
    case ${OP.fireOnHost}: return fireOnHost(a, b);
    case ${OP.run}: return run(a, b);
    case ${OP.fire}: return fire(a);
    case ${OP.clearTimers}: return clearTimers();
    case ${OP.setMode}: return setMode(a);
    case ${OP.setTask}: return setTask(a);
    case ${OP.start}: return start(a);
    case ${OP.stop}: return stop(a);
    default: throw new ErrorCtor('unknown operation');
  }
});
return boot;
})()
`;
