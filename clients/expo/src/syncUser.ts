/**
 * Framework-free client for the service's `POST /api/users/sync` route, which
 * creates or refreshes the MongoDB user document of the Clerk user whose
 * session token it is given.
 *
 * @packageDocumentation
 */

/** The shape of Clerk's `useAuth().getToken`, so it can be passed as is. */
export type GetToken = (opts?: { skipCache?: boolean }) => Promise<string | null>;

/** The user document as the service returns it. */
export interface UserProfile {
  _id: string;
  clerkId: string;
  email: string | null;
  firstName: string | null;
  lastName: string | null;
  username: string | null;
  profilePicture: string | null;
  banned: boolean;
  locked: boolean;
  bannerImage: string;
  bio: string;
  location: string;
  followers: string[];
  following: string[];
  createdAt: string | null;
  updatedAt: string | null;
}

/** A successful sync: the profile, and whether this call created it (201) rather than found it (200). */
export interface SyncedUser {
  profile: UserProfile;
  created: boolean;
}

export interface SyncOptions {
  /** Requests made for transient failures (429, 502, 503, network errors) before giving up. Default 4. */
  maxAttempts?: number;
  /** First backoff delay; doubles on each further attempt. Default 500 ms. */
  baseDelayMs?: number;
  /** Upper bound for any single wait, including one asked for by `Retry-After`. Default 30 000 ms. */
  maxDelayMs?: number;
  /** Waits between attempts; injectable so tests do not wait. */
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  /** Source of jitter in [0, 1); injectable so tests can pin the delays. Default `Math.random`. */
  random?: () => number;
  /** Aborts the request and any pending wait; the abort reason is rethrown as is. */
  signal?: AbortSignal;
}

/** Base class of every error `syncUser` throws, so callers can tell them from bugs. */
export class SyncError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** `getToken` gave no token: nobody is signed in, so no request was made. */
export class SyncSignedOutError extends SyncError {
  constructor() {
    super('not signed in: getToken returned no session token');
  }
}

/** The service rejected the token even after a fresh one was fetched. */
export class SyncUnauthorizedError extends SyncError {
  readonly status = 401;
  constructor(readonly detail: string | undefined) {
    super(`unauthorized${detail ? `: ${detail}` : ''}`);
  }
}

/** Clerk no longer has this user: the account is gone and the app should sign out. */
export class SyncAccountGoneError extends SyncError {
  readonly status = 404;
  constructor(readonly detail: string | undefined) {
    super(`account gone${detail ? `: ${detail}` : ''}`);
  }
}

/** The service stayed unavailable (429, 502 or 503) for every attempt. */
export class SyncUnavailableError extends SyncError {
  constructor(
    readonly status: number,
    /** The last `Retry-After` the service sent, if any: when it is worth trying again. */
    readonly retryAfterSeconds: number | null,
    readonly detail: string | undefined,
  ) {
    super(`service unavailable (HTTP ${status})${detail ? `: ${detail}` : ''}`);
  }
}

/** Every attempt failed before an answer arrived; `cause` holds the last fetch error. */
export class SyncNetworkError extends SyncError {
  constructor(cause: unknown) {
    super(`network error: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
  }
}

/** Any other answer (400, 413, 500 ...), or a success whose body is not a profile. */
export class SyncHttpError extends SyncError {
  constructor(
    readonly status: number,
    /** The body's `error` field, when the body is JSON. */
    readonly error: string | undefined,
    /** The body's `detail` field, when the body is JSON. */
    readonly detail: string | undefined,
  ) {
    super(`HTTP ${status}${error ? `: ${error}` : ''}${detail ? ` (${detail})` : ''}`);
  }
}

const RETRIED_STATUSES = new Set([429, 502, 503]);

/**
 * Creates or refreshes the signed-in user's document on the service.
 *
 * A 401 is answered once with a token fetched with `skipCache`, since Clerk's
 * cached token may just have expired. 429/502/503 and network errors are retried
 * with jittered exponential backoff, waiting `Retry-After` when the service sends it.
 *
 * @throws {SyncError} one of its subclasses; or the signal's abort reason.
 */
export async function syncUser(
  baseUrl: string,
  getToken: GetToken,
  fetch: typeof globalThis.fetch,
  options: SyncOptions = {},
): Promise<SyncedUser> {
  const {
    maxAttempts = 4,
    baseDelayMs = 500,
    maxDelayMs = 30_000,
    sleep = abortableSleep,
    random = Math.random,
    signal,
  } = options;
  const url = `${baseUrl.replace(/\/+$/, '')}/api/users/sync`;

  let token = await requireToken(getToken());
  let tokenRefreshed = false;
  let failedAttempts = 0;

  /** Backoff with "equal jitter": between half and all of the doubled delay, never above the cap. */
  const backoffMs = (): number => {
    const ceiling = Math.min(maxDelayMs, baseDelayMs * 2 ** (failedAttempts - 1));
    return Math.round(ceiling / 2 + (random() * ceiling) / 2);
  };

  for (;;) {
    if (signal?.aborted) throw abortReason(signal);
    let response: Response;
    try {
      response = await fetch(url, {
        method: 'POST',
        headers: { Authorization: `Bearer ${token}`, Accept: 'application/json' },
        signal,
      });
    } catch (cause) {
      if (signal?.aborted) throw abortReason(signal);
      failedAttempts += 1;
      if (failedAttempts >= maxAttempts) throw new SyncNetworkError(cause);
      await sleep(backoffMs(), signal);
      continue;
    }

    const body = await readJsonBody(response);
    const { error, detail } = errorFields(body);

    if (response.status === 200 || response.status === 201) {
      if (!isUserProfile(body)) throw new SyncHttpError(response.status, 'invalid profile body', undefined);
      return { profile: body, created: response.status === 201 };
    }
    if (response.status === 401) {
      if (tokenRefreshed) throw new SyncUnauthorizedError(detail);
      tokenRefreshed = true;
      token = await requireToken(getToken({ skipCache: true }));
      continue;
    }
    if (response.status === 404) throw new SyncAccountGoneError(detail);
    if (RETRIED_STATUSES.has(response.status)) {
      const retryAfterSeconds = parseRetryAfter(response.headers.get('Retry-After'));
      failedAttempts += 1;
      if (failedAttempts >= maxAttempts) {
        throw new SyncUnavailableError(response.status, retryAfterSeconds, detail);
      }
      await sleep(
        retryAfterSeconds === null ? backoffMs() : Math.min(retryAfterSeconds * 1000, maxDelayMs),
        signal,
      );
      continue;
    }
    throw new SyncHttpError(response.status, error, detail);
  }
}

async function requireToken(pending: Promise<string | null>): Promise<string> {
  const token = await pending;
  if (!token) throw new SyncSignedOutError();
  return token;
}

/** Reads the body as JSON; `undefined` when it is not JSON, since proxies answer errors in HTML. */
async function readJsonBody(response: Response): Promise<unknown> {
  try {
    return JSON.parse(await response.text());
  } catch {
    return undefined;
  }
}

function errorFields(body: unknown): { error: string | undefined; detail: string | undefined } {
  if (typeof body !== 'object' || body === null) return { error: undefined, detail: undefined };
  const { error, detail } = body as Record<string, unknown>;
  return {
    error: typeof error === 'string' ? error : undefined,
    detail: typeof detail === 'string' ? detail : undefined,
  };
}

function isUserProfile(body: unknown): body is UserProfile {
  if (typeof body !== 'object' || body === null) return false;
  const { _id, clerkId } = body as Record<string, unknown>;
  return typeof _id === 'string' && typeof clerkId === 'string';
}

/** Integer seconds only: the service sends no other form. */
function parseRetryAfter(header: string | null): number | null {
  if (header === null || !/^\s*\d+\s*$/.test(header)) return null;
  return Number(header);
}

function abortableSleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(abortReason(signal));
    const onAbort = (): void => {
      clearTimeout(timer);
      if (signal) reject(abortReason(signal));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** React Native's AbortSignal may lack `reason` and `throwIfAborted`. */
function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? new Error('aborted');
}
