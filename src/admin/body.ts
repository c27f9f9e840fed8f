// Admin request bodies: JSON only, size-limited, and checked against a field list (names and JSON
// types) before they reach the key service, which owns every rule about the values.

import type { IncomingMessage } from 'node:http';
import { readBody } from '../body.js';
import { KeygateError, ValidationError, type FieldError } from '../errors.js';
import { queryParam } from './router.js';

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

/** Unknown, read-only, missing and wrongly typed fields: every one, named as the body names it. */
export function bodyProblems(body: Record<string, unknown>, shape: BodyShape): FieldError[] {
  const out: FieldError[] = [];
  const allowed = Object.keys(shape.fields);
  for (const [name, value] of Object.entries(body)) {
    // own entries only: a body member "constructor" or "__proto__" is an unknown field
    const spec = Object.hasOwn(shape.fields, name) ? shape.fields[name] : undefined;
    if (spec === undefined) {
      out.push({ field: name, reason: shape.readOnly?.includes(name) ? 'is read-only' : `unknown field; allowed: ${allowed.join(', ')}` });
      continue;
    }
    const got = jsonTypeOf(value);
    if (got === 'null' && spec.nullable) continue;
    if (got !== spec.type) {
      out.push({ field: name, reason: `must be ${ARTICLE[spec.type]}${spec.nullable ? ' or null' : ''}` });
      continue;
    }
    if (spec.items && Array.isArray(value)) {
      value.forEach((item, i) => {
        if (jsonTypeOf(item) !== spec.items!.type) out.push({ field: `${name}[${i}]`, reason: `must be ${ARTICLE[spec.items!.type]}` });
      });
    }
  }
  for (const name of shape.required ?? []) {
    if (body[name] === undefined) out.push({ field: name, reason: 'is required' });
  }
  return out;
}

/** Refuses unknown, read-only, missing and wrongly typed fields: one 400 naming every one. */
export function checkBody(body: Record<string, unknown>, shape: BodyShape): void {
  const problems = bodyProblems(body, shape);
  if (problems.length > 0) throw ValidationError.of(problems, true);
}

/** The top-level body field a problem is about: "workspaceAccess" of "workspaceAccess.grants[0].role". */
const fieldBase = (field: string): string => /^[^.[]*/.exec(field)![0];

/** The body without the fields `problems` name (a field whose JSON is wrong is not judged again). */
export function withoutFields(body: Record<string, unknown>, problems: readonly FieldError[]): Record<string, unknown> {
  const bad = new Set(problems.map((p) => fieldBase(p.field)));
  return Object.fromEntries(Object.entries(body).filter(([k]) => !bad.has(k)));
}

/**
 * Validates a create or update body: the JSON shape and every rule of the key service, all
 * problems at once, each named as this API names it (`fieldNames`: key-service field → API field).
 * `dryRun` (or a shape problem) stops there: `check` runs the key service's dry run; otherwise
 * resolves and the caller makes the change.
 */
export async function validateBody(
  body: Record<string, unknown>,
  shape: BodyShape,
  fieldNames: Readonly<Record<string, string>>,
  dryRun: boolean,
  check: (clean: Record<string, unknown>) => Promise<void>,
): Promise<void> {
  const problems = bodyProblems(body, shape);
  if (problems.length === 0 && !dryRun) return;
  try {
    await check(withoutFields(body, problems));
  } catch (err) {
    if (problems.length === 0) throw err;
    // with the body's own problems, only the rules' problems join them (a 409 or 404 waits for a good body)
    if (err instanceof ValidationError) {
      // a field already refused for its JSON is absent to the rules: their word on it is not news
      const refused = new Set(problems.map((p) => fieldBase(p.field)));
      for (const e of err.errors) {
        const field = apiFieldName(e.field, fieldNames);
        if (!refused.has(fieldBase(field))) problems.push({ field, reason: e.reason });
      }
    }
  }
  if (problems.length > 0) throw ValidationError.of(problems, true);
}

/** A key-service field in an API's spelling (rateLimit → rate_limit; workspaceAccess.grants[0] stays). */
export function apiFieldName(field: string, names: Readonly<Record<string, string>> | undefined): string {
  if (!names) return field;
  for (const [from, to] of Object.entries(names)) {
    if (field === from || field.startsWith(`${from}.`) || field.startsWith(`${from}[`)) return to + field.slice(from.length);
  }
  return field;
}

/** A dry-run query parameter: true or false (absent = false). */
export function dryRunParam(v: string | undefined, name: string): boolean {
  if (v === undefined || v === 'false') return false;
  if (v === 'true') return true;
  throw new ValidationError(name, 'must be true or false');
}

/**
 * A create or update request's body, read and validated (validateBody), or undefined when the
 * query flag `flag` asked for a dry run and it passed: then answer dryRunAnswer(flag).
 */
export async function changeBody(
  req: IncomingMessage,
  query: URLSearchParams,
  flag: string,
  shape: BodyShape,
  fieldNames: Readonly<Record<string, string>>,
  check: (clean: Record<string, unknown>) => Promise<void>,
): Promise<Record<string, unknown> | undefined> {
  const body = await readJsonObject(req);
  const dryRun = dryRunParam(queryParam(query, flag), flag);
  await validateBody(body, shape, fieldNames, dryRun, check);
  return dryRun ? undefined : body;
}

/** The answer to a dry run that passed: `{<flag>: true, valid: true, errors: []}`. */
export function dryRunAnswer(flag: string): { status: 200; body: Record<string, unknown> } {
  return { status: 200, body: { [flag]: true, valid: true, errors: [] } };
}
