/**
 * Request body validation: every field typed and bounded, unknown fields refused, so a typo in a
 * script ("downtimeLimit") is an error rather than a silently ignored setting.
 */
import { ApiFailure } from './errors.js';

export type FieldRule =
  | { readonly type: 'string'; readonly required?: boolean; readonly minLength?: number; readonly maxLength?: number; readonly pattern?: RegExp; readonly patternHint?: string }
  | { readonly type: 'integer'; readonly required?: boolean; readonly min?: number; readonly max?: number; readonly multipleOf?: number }
  | { readonly type: 'boolean'; readonly required?: boolean }
  | { readonly type: 'array'; readonly required?: boolean; readonly maxItems: number; readonly itemPattern: RegExp; readonly itemHint: string };

export type Schema = Readonly<Record<string, FieldRule>>;

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'number' && !Number.isInteger(v)) return `the number ${v}`;
  return typeof v === 'object' ? 'an object' : `a ${typeof v}`;
}

/** Checks `body` against `schema`; returns it typed as T or throws a 400 naming the field. */
export function validate<T>(body: unknown, schema: Schema, what: string): T {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw ApiFailure.badRequest(`${what}: the body must be a JSON object, not ${describe(body)}`);
  }
  const obj = body as Record<string, unknown>;
  const unknown = Object.keys(obj).filter((k) => !Object.hasOwn(schema, k));
  if (unknown.length > 0) {
    throw ApiFailure.badRequest(`${what}: unknown field${unknown.length > 1 ? 's' : ''} ${unknown.map((k) => `'${k}'`).join(', ')} (allowed: ${Object.keys(schema).join(', ')})`);
  }
  for (const [key, rule] of Object.entries(schema)) {
    const v = obj[key];
    if (v === undefined) {
      if (rule.required === true) throw ApiFailure.badRequest(`${what}: field '${key}' is required`);
      continue;
    }
    switch (rule.type) {
      case 'string':
        if (typeof v !== 'string') throw ApiFailure.badRequest(`${what}: '${key}' must be a string, not ${describe(v)}`);
        if (rule.minLength !== undefined && v.length < rule.minLength) throw ApiFailure.badRequest(`${what}: '${key}' must not be ${rule.minLength === 1 ? 'empty' : `shorter than ${rule.minLength} characters`}`);
        if (rule.maxLength !== undefined && v.length > rule.maxLength) throw ApiFailure.badRequest(`${what}: '${key}' is longer than ${rule.maxLength} characters`);
        if (rule.pattern !== undefined && !rule.pattern.test(v)) throw ApiFailure.badRequest(`${what}: '${key}' ${JSON.stringify(v.length > 80 ? v.slice(0, 80) + '…' : v)} is not valid${rule.patternHint !== undefined ? ` (${rule.patternHint})` : ''}`);
        break;
      case 'integer':
        if (typeof v !== 'number' || !Number.isSafeInteger(v)) throw ApiFailure.badRequest(`${what}: '${key}' must be an integer, not ${describe(v)}`);
        if ((rule.min !== undefined && v < rule.min) || (rule.max !== undefined && v > rule.max)) {
          throw ApiFailure.badRequest(`${what}: '${key}' is ${v}, outside ${rule.min ?? '-∞'}..${rule.max ?? '∞'}`);
        }
        if (rule.multipleOf !== undefined && v % rule.multipleOf !== 0) throw ApiFailure.badRequest(`${what}: '${key}' is ${v}, not a multiple of ${rule.multipleOf}`);
        break;
      case 'boolean':
        if (typeof v !== 'boolean') throw ApiFailure.badRequest(`${what}: '${key}' must be true or false, not ${describe(v)}`);
        break;
      case 'array':
        // An array of strings, each matching itemPattern.
        if (!Array.isArray(v)) throw ApiFailure.badRequest(`${what}: '${key}' must be an array of strings, not ${describe(v)}`);
        if (v.length > rule.maxItems) throw ApiFailure.badRequest(`${what}: '${key}' has ${v.length} items; at most ${rule.maxItems}`);
        v.forEach((item: unknown, i: number) => {
          if (typeof item !== 'string') throw ApiFailure.badRequest(`${what}: '${key}[${i}]' must be a string, not ${describe(item)}`);
          if (!rule.itemPattern.test(item)) throw ApiFailure.badRequest(`${what}: '${key}[${i}]' ${JSON.stringify(item.length > 80 ? item.slice(0, 80) + '…' : item)} is not valid (${rule.itemHint})`);
        });
        break;
    }
  }
  return obj as T;
}
