// Admin request bodies: JSON only, size-limited, and checked against a field list (names and JSON
// types) before they reach the key service, which owns every rule about the values.

import type { IncomingMessage } from 'node:http';
import { readBody } from '../body.js';
import { KeygateError, ValidationError } from '../errors.js';

/** Largest admin request body read (64 KiB); a larger one gets 413. */
export const DEFAULT_BODY_LIMIT = 64 * 1024;

export type JsonType = 'string' | 'integer' | 'boolean' | 'array' | 'object';

/** One field of a request body: its JSON type (checked here) and what the OpenAPI document says. */
export interface FieldSpec {
  type: JsonType;
  nullable?: boolean;
  description: string;
  /** documented; the key service checks the value */
  enum?: readonly string[];
  items?: { type: JsonType; enum?: readonly string[] };
  /** OpenAPI schema reference for an object field */
  ref?: string;
}

export type Fields = Readonly<Record<string, FieldSpec>>;

/** What a request body may hold: writable fields, the required ones, and output-only ones to refuse by name. */
export interface BodyShape {
  fields: Fields;
  required?: readonly string[];
  readOnly?: readonly string[];
}

/** Reads a JSON object body: 415 unless JSON, 413 over the limit, 400 when malformed or not an object. */
export async function readJsonObject(req: IncomingMessage, limit = DEFAULT_BODY_LIMIT): Promise<Record<string, unknown>> {
  const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
  if (type !== 'application/json') {
    throw new KeygateError('unsupported_media_type', 415, `request body must be JSON: send Content-Type: application/json${type ? ` (got ${type})` : ''}`);
  }
  const text = (await readBody(req, limit)).toString('utf8');
  if (text.trim() === '') throw new ValidationError('body', 'is required: a JSON object');
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new ValidationError('body', `is not valid JSON (${(err as Error).message})`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new ValidationError('body', 'must be a JSON object');
  return value as Record<string, unknown>;
}

function jsonTypeOf(v: unknown): JsonType | 'null' | 'number' {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number') return Number.isInteger(v) ? 'integer' : 'number';
  return typeof v as JsonType;
}

const ARTICLE: Record<JsonType, string> = { string: 'a string', integer: 'an integer', boolean: 'true or false', array: 'a list', object: 'an object' };

/** Refuses unknown, read-only, missing and wrongly typed fields, naming the field. */
export function checkBody(body: Record<string, unknown>, shape: BodyShape): void {
  const allowed = Object.keys(shape.fields);
  for (const [name, value] of Object.entries(body)) {
    // own entries only: a body member "constructor" or "__proto__" is an unknown field
    const spec = Object.hasOwn(shape.fields, name) ? shape.fields[name] : undefined;
    if (spec === undefined) {
      if (shape.readOnly?.includes(name)) throw new ValidationError(name, 'is read-only');
      throw new ValidationError(name, `unknown field; allowed: ${allowed.join(', ')}`);
    }
    const got = jsonTypeOf(value);
    if (got === 'null' && spec.nullable) continue;
    if (got !== spec.type) throw new ValidationError(name, `must be ${ARTICLE[spec.type]}${spec.nullable ? ' or null' : ''}`);
    if (spec.items && Array.isArray(value)) {
      value.forEach((item, i) => {
        if (jsonTypeOf(item) !== spec.items!.type) throw new ValidationError(`${name}[${i}]`, `must be ${ARTICLE[spec.items!.type]}`);
      });
    }
  }
  for (const name of shape.required ?? []) {
    if (body[name] === undefined) throw new ValidationError(name, 'is required');
  }
}
