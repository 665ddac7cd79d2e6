/**
 * The JSON Schema rules the config form follows: the faults of a value, a schema's defaults,
 * secret references. Pure (the server validates again with the full JSON Schema).
 */
import type { JSONObject } from '../graph.js';

export type Schema = { [key: string]: any };

/** Return `[pointer, message]` for each fault of `value` against a (simple) JSON Schema. */
export function validate(schema: Schema, value: any, pointer = ''): [string, string][] {
  const out: [string, string][] = [];
  if (value === undefined) {
    return out;
  }
  if (isSecretRef(value)) {
    return out;
  }
  const types: string[] = Array.isArray(schema.type) ? schema.type : schema.type ? [schema.type] : [];
  if (types.length && !types.some(t => hasType(t, value))) {
    out.push([pointer, `must be ${types.join(' or ')}`]);
    return out;
  }
  if (schema.enum && !schema.enum.some((e: any) => JSON.stringify(e) === JSON.stringify(value))) {
    out.push([pointer, `must be one of ${schema.enum.map((e: any) => JSON.stringify(e)).join(', ')}`]);
  }
  if (schema.const !== undefined && JSON.stringify(schema.const) !== JSON.stringify(value)) {
    out.push([pointer, `must be ${JSON.stringify(schema.const)}`]);
  }
  if (typeof value === 'string') {
    if (schema.minLength !== undefined && value.length < schema.minLength) {
      out.push([pointer, schema.minLength === 1 ? 'is required' : `needs at least ${schema.minLength} characters`]);
    }
    if (schema.maxLength !== undefined && value.length > schema.maxLength) {
      out.push([pointer, `must be at most ${schema.maxLength} characters`]);
    }
    if (schema.pattern) {
      try {
        if (!new RegExp(schema.pattern, 'u').test(value)) {
          out.push([pointer, `does not match ${schema.pattern}`]);
        }
      } catch {
        // a pattern JS cannot compile is checked by the server
      }
    }
  }
  if (typeof value === 'number') {
    if (schema.minimum !== undefined && value < schema.minimum) {
      out.push([pointer, `must be ≥ ${schema.minimum}`]);
    }
    if (schema.maximum !== undefined && value > schema.maximum) {
      out.push([pointer, `must be ≤ ${schema.maximum}`]);
    }
    if (schema.exclusiveMinimum !== undefined && value <= schema.exclusiveMinimum) {
      out.push([pointer, `must be > ${schema.exclusiveMinimum}`]);
    }
    if (schema.exclusiveMaximum !== undefined && value >= schema.exclusiveMaximum) {
      out.push([pointer, `must be < ${schema.exclusiveMaximum}`]);
    }
  }
  if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
    for (const key of schema.required ?? []) {
      if (value[key] === undefined || value[key] === '') {
        out.push([`${pointer}/${key}`, 'is required']);
      }
    }
    for (const [key, sub] of Object.entries(schema.properties ?? {})) {
      out.push(...validate(sub as Schema, value[key], `${pointer}/${key}`));
    }
  }
  if (Array.isArray(value) && schema.items && !Array.isArray(schema.items)) {
    value.forEach((item, i) => out.push(...validate(schema.items, item, `${pointer}/${i}`)));
  }
  return out;
}

function hasType(type: string, value: any): boolean {
  switch (type) {
    case 'string':
      return typeof value === 'string';
    case 'integer':
      return typeof value === 'number' && Number.isInteger(value);
    case 'number':
      return typeof value === 'number';
    case 'boolean':
      return typeof value === 'boolean';
    case 'array':
      return Array.isArray(value);
    case 'object':
      return value !== null && typeof value === 'object' && !Array.isArray(value);
    case 'null':
      return value === null;
    default:
      return true;
  }
}

export function isSecretRef(value: any): value is { $secret: string } {
  return value !== null && typeof value === 'object' && typeof value.$secret === 'string';
}

/** Whether a field takes only a `{"$secret": NAME}` reference (never a typed value). */
export function isSecretOnly(schema: Schema): boolean {
  const props = schema.properties;
  return schema.type === 'object' && !!props && Object.keys(props).length === 1 && '$secret' in props;
}

/** Return the config a new node of this schema starts with (the schema's defaults). */
export function defaultsOf(schema: Schema): JSONObject {
  const out: JSONObject = {};
  for (const [key, sub] of Object.entries(schema.properties ?? {})) {
    if ((sub as Schema).default !== undefined) {
      out[key] = (sub as Schema).default;
    }
  }
  return out;
}
