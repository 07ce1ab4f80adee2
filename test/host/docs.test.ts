// docs/openapi.json and docs/api.md stay true to the code: same endpoints, same request fields and bounds.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { API_ROUTES, CREATE_VM, SET_BALLOON, START_MIGRATION } from '../../src/host/api.js';
import { MIGRATION_DEFAULTS } from '../../src/host/migrations.js';
import type { Schema } from '../../src/host/validate.js';

interface OpenApiSchema {
  required?: string[];
  additionalProperties?: boolean;
  properties: Record<string, { type?: string; minimum?: number; maximum?: number; minLength?: number; maxLength?: number; multipleOf?: number; default?: unknown; $ref?: string }>;
}
interface OpenApi {
  openapi: string;
  paths: Record<string, Record<string, unknown>>;
  components: { schemas: Record<string, OpenApiSchema> };
}

const DOCS = new URL('../../../docs/', import.meta.url);
const spec = JSON.parse(readFileSync(new URL('openapi.json', DOCS), 'utf8')) as OpenApi;
const md = readFileSync(new URL('api.md', DOCS), 'utf8');

test('openapi.json has exactly the endpoints the daemon serves, and api.md names each', () => {
  assert.match(spec.openapi, /^3\./);
  const docd = Object.entries(spec.paths).map(([p, ops]) => `${p} ${Object.keys(ops).filter((k) => k !== 'parameters').map((m) => m.toUpperCase()).sort().join(',')}`).sort();
  const code = Object.entries(API_ROUTES).map(([p, ms]) => `${p} ${[...ms].sort().join(',')}`).sort();
  assert.deepEqual(docd, code);
  for (const [path, methods] of Object.entries(API_ROUTES)) {
    for (const m of methods) assert.ok(md.includes(`${m} ${path}`) || md.includes(`\`${m} ${path}`), `api.md documents ${m} ${path}`);
  }
});

function checkSchema(name: string, code: Schema): void {
  const doc = spec.components.schemas[name]!;
  assert.equal(doc.additionalProperties, false, `${name} refuses unknown fields`);
  assert.deepEqual(Object.keys(doc.properties).sort(), Object.keys(code).sort(), `${name} fields`);
  assert.deepEqual([...(doc.required ?? [])].sort(), Object.entries(code).filter(([, r]) => r.required === true).map(([k]) => k).sort(), `${name} required`);
  for (const [field, rule] of Object.entries(code)) {
    const d = doc.properties[field]!;
    if (d.$ref !== undefined) continue;
    assert.equal(d.type, rule.type, `${name}.${field} type`);
    if (rule.type === 'integer') {
      assert.equal(d.minimum, rule.min, `${name}.${field} minimum`);
      assert.equal(d.maximum, rule.max, `${name}.${field} maximum`);
      assert.equal(d.multipleOf, rule.multipleOf, `${name}.${field} multipleOf`);
    }
    if (rule.type === 'string' && field !== 'image') assert.equal(d.maxLength, rule.maxLength, `${name}.${field} maxLength`);
  }
}

test('request bodies in openapi.json match the validation schemas', () => {
  checkSchema('CreateVmRequest', CREATE_VM);
  checkSchema('StartMigrationRequest', START_MIGRATION);
  checkSchema('SetBalloonRequest', SET_BALLOON);
  const m = spec.components.schemas['StartMigrationRequest']!.properties;
  for (const [k, v] of Object.entries(MIGRATION_DEFAULTS)) assert.equal(m[k]!.default, v, `default of ${k}`);
});
