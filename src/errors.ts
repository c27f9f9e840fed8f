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

/** A key-service input that breaks a rule (bad name, scope, rate limit…). */
export class ValidationError extends KeygateError {
  readonly field: string;
  /** the message without the field, so an API can name the field in its own spelling */
  readonly reason: string;
  constructor(field: string, message: string) {
    super('bad_request', 400, `${field}: ${message}`);
    this.field = field;
    this.reason = message;
  }
}

export class NotFoundError extends KeygateError {
  constructor(message: string) {
    super('not_found', 404, message);
  }
}

export class ConflictError extends KeygateError {
  constructor(message: string) {
    super('conflict', 409, message);
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
