/**
 * Shadow updates merge (objects key by key, `null` deletes a key, arrays and values replace —
 * device-shadow-document.html). To make one side's section equal the other's, the sync sends the patch
 * that turns the current value into the target under those rules, and nothing at all when they are
 * already equal — which is what keeps versions still when both sides are idle.
 */

type Json = unknown;

const isObject = (v: Json): v is Record<string, Json> => v !== null && typeof v === 'object' && !Array.isArray(v);

/** Deep equality of JSON values (key order ignored). */
export function jsonEqual(a: Json, b: Json): boolean {
  if (a === b) return true;
  if (Array.isArray(a)) return Array.isArray(b) && a.length === b.length && a.every((v, i) => jsonEqual(v, b[i]));
  if (isObject(a)) {
    if (!isObject(b)) return false;
    const ka = Object.keys(a);
    return ka.length === Object.keys(b).length && ka.every((k) => k in b && jsonEqual(a[k], b[k]));
  }
  return false;
}

/**
 * The merge patch from `current` to `target` (undefined = absent), or undefined when nothing changes.
 * A `null` in the result deletes; an absent target becomes `null`.
 */
export function replacePatch(current: Json, target: Json): Json {
  if (target === undefined) return current === undefined ? undefined : null;
  if (isObject(target) && isObject(current)) {
    const patch: Record<string, Json> = {};
    for (const [k, v] of Object.entries(target)) {
      const p = replacePatch(current[k], v);
      if (p !== undefined) patch[k] = p;
    }
    for (const k of Object.keys(current)) if (!(k in target)) patch[k] = null;
    return Object.keys(patch).length === 0 ? undefined : patch;
  }
  return jsonEqual(current, target) ? undefined : target;
}
