// `${VAR}` / `${VAR:-default}` expansion on parsed string scalars.
//
// It runs on values, never on the raw text: a variable's content can then neither
// inject YAML structure nor shift the positions used in error messages.
import { childPointer, isRecord, setOwn } from './positions.js';

export interface Expanded {
  value: string;
  /** one message per bad or missing reference; empty when the string expanded cleanly */
  problems: string[];
}

const REFERENCE = /^([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?$/s;

/**
 * Expands every reference in `text`. `$${` is a literal `${`. Like the shell,
 * `${VAR:-default}` uses the default when VAR is unset *or* empty. A missing
 * variable without default expands to '' and is reported as a problem.
 */
export function expandString(text: string, env: NodeJS.ProcessEnv): Expanded {
  const problems: string[] = [];
  let out = '';
  let i = 0;
  while (i < text.length) {
    if (text.startsWith('$${', i)) {
      out += '${';
      i += 3;
    } else if (text.startsWith('${', i)) {
      const end = text.indexOf('}', i + 2);
      if (end < 0) {
        problems.push(`unterminated reference "${text.slice(i)}" (missing "}"; write $\${ for a literal \${)`);
        break;
      }
      out += resolveReference(text.slice(i + 2, end), env, problems);
      i = end + 1;
    } else {
      out += text[i];
      i += 1;
    }
  }
  return { value: out, problems };
}

function resolveReference(inner: string, env: NodeJS.ProcessEnv, problems: string[]): string {
  const m = REFERENCE.exec(inner);
  if (!m) {
    problems.push(`malformed reference "\${${inner}}": expected \${NAME} or \${NAME:-default}, NAME matching [A-Za-z_][A-Za-z0-9_]*`);
    return '';
  }
  const name = m[1] as string;
  const fallback: string | undefined = m[2]; // undefined when there is no ":-" part
  if (fallback?.includes('${')) {
    problems.push(`nested reference in the default of \${${name}:-...} is not supported`);
    return '';
  }
  const value = env[name];
  if (fallback !== undefined) return value === undefined || value === '' ? fallback : value;
  if (value === undefined) {
    problems.push(`environment variable ${name} is not set (use \${${name}:-default} for a default)`);
    return '';
  }
  return value;
}

/**
 * Expands every string in a plain value, in place. `report(pointer, message)` is
 * called for each problem with the JSON pointer of the string.
 */
export function expandTree(value: unknown, env: NodeJS.ProcessEnv, report: (pointer: string, message: string) => void, pointer = ''): unknown {
  if (typeof value === 'string') {
    if (!value.includes('$')) return value; // the common case: nothing to do
    const r = expandString(value, env);
    for (const p of r.problems) report(pointer, p);
    return r.value;
  }
  if (Array.isArray(value)) {
    value.forEach((v, i) => {
      value[i] = expandTree(v, env, report, childPointer(pointer, i));
    });
  } else if (isRecord(value)) {
    for (const [k, v] of Object.entries(value)) setOwn(value, k, expandTree(v, env, report, childPointer(pointer, k)));
  }
  return value;
}
