// One class and one stable `code` per failure, in the manner of undici's errors.
// `status` is what an HTTP caller sees; `code` is what scripts match on.

export class KeygateError extends Error {
  readonly code: string;
  readonly status: number;
  constructor(code: string, status: number, message: string) {
    super(message);
    this.name = new.target.name;
    this.code = code;
    this.status = status;
  }
}

/** One problem in a configuration file, with its position. */
export interface ConfigIssue {
  file: string;
  line: number;
  col: number;
  /** dotted field path, e.g. routes[3].upstream */
  field: string;
  message: string;
}

export function formatConfigIssue(i: ConfigIssue): string {
  return `${i.file}:${i.line}:${i.col}: ${i.field ? i.field + ': ' : ''}${i.message}`;
}

export class ConfigError extends KeygateError {
  readonly issues: ConfigIssue[];
  constructor(issues: ConfigIssue[]) {
    super('config_invalid', 500, issues.map(formatConfigIssue).join('\n'));
    this.issues = issues;
  }
}

/** One field that breaks a rule: the field and the message without it. */
export interface FieldError {
  field: string;
  reason: string;
}

/**
 * A key-service input that breaks a rule (bad name, scope, rate limit…). `field` and `reason` are
 * the first problem (what `message` says, as always); `errors` holds every problem found in the
 * input, so a form can show each at its field at once.
 */
export class ValidationError extends KeygateError {
  readonly field: string;
  /** the message without the field, so an API can name the field in its own spelling */
  readonly reason: string;
  /** every problem, the first one first; at least one */
  readonly errors: readonly FieldError[];
  /** the fields are already named as the API that raised it names them (not key-service names) */
  readonly apiNamed: boolean;
  constructor(field: string, message: string, more: readonly FieldError[] = [], apiNamed = false) {
    super('bad_request', 400, `${field}: ${message}`);
    this.field = field;
    this.reason = message;
    this.errors = [{ field, reason: message }, ...more];
    this.apiNamed = apiNamed;
  }

  /** One error holding every problem of `list` (not empty). */
  static of(list: readonly FieldError[], apiNamed = false): ValidationError {
    const [first, ...more] = list;
    return new ValidationError(first!.field, first!.reason, more, apiNamed);
  }
}

/**
 * Gathers the problems of one input: each check runs, and a ValidationError it throws is kept
 * instead of ending the validation, so every field's problem is found in one pass.
 */
export class Problems {
  readonly list: FieldError[] = [];

  /** The value `check` returns, or undefined (and its problems kept) when it throws a ValidationError. */
  check<T>(check: () => T): T | undefined {
    try {
      return check();
    } catch (err) {
      if (!(err instanceof ValidationError)) throw err;
      this.list.push(...err.errors);
      return undefined;
    }
  }

  add(field: string, reason: string): void {
    this.list.push({ field, reason });
  }

  /** Whether a problem was found at `field` or inside it (field.x, field[0]). */
  has(field: string): boolean {
    return this.list.some((e) => e.field === field || e.field.startsWith(`${field}.`) || e.field.startsWith(`${field}[`));
  }

  throwIfAny(apiNamed = false): void {
    if (this.list.length > 0) throw ValidationError.of(this.list, apiNamed);
  }
}

export class NotFoundError extends KeygateError {
  constructor(message: string) {
    super('not_found', 404, message);
  }
}

export class ConflictError extends KeygateError {
  /** the field at fault when one is (a taken name: "name") */
  readonly field: string | undefined;
  constructor(message: string, field?: string) {
    super('conflict', 409, message);
    this.field = field;
  }
}

export class LimitError extends KeygateError {
  constructor(message: string) {
    super('forbidden', 403, message);
  }
}

/** The key store cannot answer or take changes (read-only or corrupt file, Redis down): retry later. */
export class StoreUnavailableError extends KeygateError {
  constructor(message: string) {
    super('store_unavailable', 503, message);
  }
}
