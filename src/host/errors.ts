/** Machine-readable error codes of the management API (the `error.code` of every 4xx/5xx). */
export type ApiErrorCode =
  | 'bad-request'
  | 'invalid-json'
  | 'body-too-large'
  | 'not-found'
  | 'method-not-allowed'
  | 'exists'
  | 'conflict'
  | 'no-memory'
  | 'bad-image'
  | 'unreachable'
  | 'peer-error'
  | 'shutting-down'
  | 'internal';

/** The JSON body of every error response. */
export interface ApiErrorBody {
  error: { code: ApiErrorCode; message: string };
}

/** An error the API turns into a response with this status and body. */
export class ApiFailure extends Error {
  constructor(readonly status: number, readonly code: ApiErrorCode, message: string) {
    super(message);
    this.name = 'ApiFailure';
  }

  static badRequest(message: string): ApiFailure {
    return new ApiFailure(400, 'bad-request', message);
  }

  static notFound(message: string): ApiFailure {
    return new ApiFailure(404, 'not-found', message);
  }

  static conflict(message: string, code: ApiErrorCode = 'conflict'): ApiFailure {
    return new ApiFailure(409, code, message);
  }

  toBody(): ApiErrorBody {
    return { error: { code: this.code, message: this.message } };
  }
}
