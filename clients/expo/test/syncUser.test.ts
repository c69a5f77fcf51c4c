import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import {
  type GetToken,
  type SyncOptions,
  type UserProfile,
  SyncAccountGoneError,
  SyncError,
  SyncHttpError,
  SyncNetworkError,
  SyncSignedOutError,
  SyncUnauthorizedError,
  SyncUnavailableError,
  syncUser,
} from '../src/syncUser.js';

const PROFILE: UserProfile = {
  _id: '665f1c2e9b1e8a0012345678',
  clerkId: 'user_123',
  email: 'ada@example.com',
  firstName: 'Ada',
  lastName: 'Lovelace',
  username: 'ada',
  profilePicture: null,
  banned: false,
  locked: false,
  bannerImage: '',
  bio: '',
  location: '',
  followers: [],
  following: [],
  createdAt: '2024-06-04T12:00:00Z',
  updatedAt: '2024-06-04T12:00:00Z',
};

type Answer = Response | Error;

interface RecordedRequest {
  url: string;
  init: RequestInit | undefined;
}

/** A fetch that hands out the given answers in order (rejecting for `Error`s) and records each request. */
function stubFetch(...answers: Answer[]): typeof fetch & { requests: RecordedRequest[] } {
  const requests: RecordedRequest[] = [];
  const stub = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    requests.push({ url: String(input), init });
    const answer = answers.shift();
    if (answer === undefined) throw new Error('stubFetch: no answer left');
    if (answer instanceof Error) throw answer;
    return answer;
  };
  return Object.assign(stub, { requests });
}

function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { 'Content-Type': 'application/json', ...headers },
  });
}

/** A getToken that returns the given tokens in order (the last one repeatedly) and records its arguments. */
function stubGetToken(...tokens: (string | null)[]): GetToken & { calls: ({ skipCache?: boolean } | undefined)[] } {
  const calls: ({ skipCache?: boolean } | undefined)[] = [];
  const getToken = async (opts?: { skipCache?: boolean }): Promise<string | null> => {
    calls.push(opts);
    return tokens.length > 1 ? (tokens.shift() ?? null) : (tokens[0] ?? null);
  };
  return Object.assign(getToken, { calls });
}

/** Options whose sleep only records the delays, with jitter pinned to its upper end. */
function instantOptions(extra: SyncOptions = {}): SyncOptions & { delays: number[] } {
  const delays: number[] = [];
  return {
    sleep: async (ms) => {
      delays.push(ms);
    },
    random: () => 1,
    ...extra,
    delays,
  };
}

const BASE = 'https://api.example.com';

describe('syncUser', () => {
  it('returns the profile with created=false on 200', async () => {
    const fetch = stubFetch(json(200, PROFILE));
    const result = await syncUser(BASE, stubGetToken('tok'), fetch, instantOptions());
    assert.deepEqual(result, { profile: PROFILE, created: false });
  });

  it('returns the profile with created=true on 201', async () => {
    const fetch = stubFetch(json(201, PROFILE));
    const result = await syncUser(BASE, stubGetToken('tok'), fetch, instantOptions());
    assert.deepEqual(result, { profile: PROFILE, created: true });
  });

  it('POSTs to /api/users/sync with a Bearer token and no body', async () => {
    const fetch = stubFetch(json(200, PROFILE));
    await syncUser(BASE, stubGetToken('tok-abc'), fetch, instantOptions());
    assert.equal(fetch.requests.length, 1);
    const [{ url, init }] = fetch.requests;
    assert.equal(url, 'https://api.example.com/api/users/sync');
    assert.equal(init?.method, 'POST');
    assert.equal(new Headers(init?.headers).get('Authorization'), 'Bearer tok-abc');
    assert.equal(init?.body, undefined);
  });

  it('joins base URLs with trailing slashes and paths', async () => {
    for (const [base, expected] of [
      ['https://api.example.com/', 'https://api.example.com/api/users/sync'],
      ['https://api.example.com///', 'https://api.example.com/api/users/sync'],
      ['http://10.0.2.2:5000/prefix/', 'http://10.0.2.2:5000/prefix/api/users/sync'],
    ] as const) {
      const fetch = stubFetch(json(200, PROFILE));
      await syncUser(base, stubGetToken('tok'), fetch, instantOptions());
      assert.equal(fetch.requests[0]?.url, expected);
    }
  });

  it('retries a 401 once with a token fetched with skipCache', async () => {
    const fetch = stubFetch(json(401, { error: 'unauthorized', detail: 'expired' }), json(200, PROFILE));
    const getToken = stubGetToken('stale', 'fresh');
    const result = await syncUser(BASE, getToken, fetch, instantOptions());
    assert.equal(result.profile.clerkId, PROFILE.clerkId);
    assert.deepEqual(getToken.calls, [undefined, { skipCache: true }]);
    assert.equal(fetch.requests.length, 2);
    assert.equal(new Headers(fetch.requests[1]?.init?.headers).get('Authorization'), 'Bearer fresh');
  });

  it('throws SyncUnauthorizedError after a second 401, having made exactly 2 requests', async () => {
    const unauthorized = { error: 'unauthorized', detail: 'bad signature' };
    const fetch = stubFetch(json(401, unauthorized), json(401, unauthorized));
    const error = await syncUser(BASE, stubGetToken('a', 'b'), fetch, instantOptions()).catch((e: unknown) => e);
    assert.ok(error instanceof SyncUnauthorizedError);
    assert.ok(error instanceof SyncError);
    assert.equal(error.detail, 'bad signature');
    assert.equal(fetch.requests.length, 2);
  });

  it('throws SyncSignedOutError without a request when getToken returns null', async () => {
    const fetch = stubFetch();
    await assert.rejects(syncUser(BASE, stubGetToken(null), fetch, instantOptions()), SyncSignedOutError);
    assert.equal(fetch.requests.length, 0);
  });

  it('throws SyncSignedOutError when the refreshed token is null', async () => {
    const fetch = stubFetch(json(401, { error: 'unauthorized' }));
    await assert.rejects(syncUser(BASE, stubGetToken('tok', null), fetch, instantOptions()), SyncSignedOutError);
    assert.equal(fetch.requests.length, 1);
  });

  it('waits Retry-After seconds after a 503, then succeeds', async () => {
    const fetch = stubFetch(
      json(503, { error: 'unavailable', detail: 'db down' }, { 'Retry-After': '2' }),
      json(200, PROFILE),
    );
    const options = instantOptions();
    const result = await syncUser(BASE, stubGetToken('tok'), fetch, options);
    assert.equal(result.profile._id, PROFILE._id);
    assert.deepEqual(options.delays, [2000]);
  });

  it('caps a Retry-After wait at maxDelayMs', async () => {
    const fetch = stubFetch(json(503, {}, { 'Retry-After': '120' }), json(200, PROFILE));
    const options = instantOptions({ maxDelayMs: 5000 });
    await syncUser(BASE, stubGetToken('tok'), fetch, options);
    assert.deepEqual(options.delays, [5000]);
  });

  it('retries 429 (without Retry-After) and 502', async () => {
    const fetch = stubFetch(new Response('Too Many Requests', { status: 429 }), json(502, {}), json(200, PROFILE));
    const options = instantOptions({ baseDelayMs: 100 });
    await syncUser(BASE, stubGetToken('tok'), fetch, options);
    assert.equal(fetch.requests.length, 3);
    assert.deepEqual(options.delays, [100, 200]);
  });

  it('grows the backoff exponentially and caps it at maxDelayMs', async () => {
    const fetch = stubFetch(...Array.from({ length: 6 }, () => json(502, {})));
    const options = instantOptions({ maxAttempts: 6, baseDelayMs: 100, maxDelayMs: 700 });
    await assert.rejects(syncUser(BASE, stubGetToken('tok'), fetch, options), SyncUnavailableError);
    assert.deepEqual(options.delays, [100, 200, 400, 700, 700]);
  });

  it('jitters each backoff between half and all of its ceiling', async () => {
    const low = instantOptions({ baseDelayMs: 100, random: () => 0 });
    await syncUser(BASE, stubGetToken('tok'), stubFetch(json(502, {}), json(502, {}), json(200, PROFILE)), low);
    assert.deepEqual(low.delays, [50, 100]);
  });

  it('throws SyncUnavailableError with status and Retry-After once attempts are exhausted', async () => {
    const fetch = stubFetch(
      ...Array.from({ length: 3 }, () => json(503, { error: 'unavailable', detail: 'clerk down' }, { 'Retry-After': '7' })),
    );
    const options = instantOptions({ maxAttempts: 3 });
    const error = await syncUser(BASE, stubGetToken('tok'), fetch, options).catch((e: unknown) => e);
    assert.ok(error instanceof SyncUnavailableError);
    assert.equal(error.status, 503);
    assert.equal(error.retryAfterSeconds, 7);
    assert.equal(error.detail, 'clerk down');
    assert.equal(fetch.requests.length, 3);
    assert.deepEqual(options.delays, [7000, 7000]);
  });

  it('makes 4 attempts by default', async () => {
    const fetch = stubFetch(...Array.from({ length: 4 }, () => json(502, {})));
    await assert.rejects(syncUser(BASE, stubGetToken('tok'), fetch, instantOptions()), SyncUnavailableError);
    assert.equal(fetch.requests.length, 4);
  });

  it('throws SyncAccountGoneError on 404 without retrying', async () => {
    const fetch = stubFetch(json(404, { error: 'user not found', detail: 'Clerk has no such user' }));
    const error = await syncUser(BASE, stubGetToken('tok'), fetch, instantOptions()).catch((e: unknown) => e);
    assert.ok(error instanceof SyncAccountGoneError);
    assert.equal(error.detail, 'Clerk has no such user');
    assert.equal(fetch.requests.length, 1);
  });

  it('retries a network error, then succeeds', async () => {
    const fetch = stubFetch(new TypeError('fetch failed'), json(200, PROFILE));
    const options = instantOptions({ baseDelayMs: 100 });
    const result = await syncUser(BASE, stubGetToken('tok'), fetch, options);
    assert.equal(result.profile.clerkId, PROFILE.clerkId);
    assert.deepEqual(options.delays, [100]);
  });

  it('throws SyncNetworkError wrapping the last cause when the network always fails', async () => {
    const cause = new TypeError('Network request failed');
    const fetch = stubFetch(cause, cause, cause, cause);
    const error = await syncUser(BASE, stubGetToken('tok'), fetch, instantOptions()).catch((e: unknown) => e);
    assert.ok(error instanceof SyncNetworkError);
    assert.equal(error.cause, cause);
    assert.equal(fetch.requests.length, 4);
  });

  it('throws SyncHttpError with error and detail for 400 and 500', async () => {
    for (const status of [400, 500]) {
      const fetch = stubFetch(json(status, { error: 'bad request', detail: 'something specific' }, { 'Retry-After': '1' }));
      const error = await syncUser(BASE, stubGetToken('tok'), fetch, instantOptions()).catch((e: unknown) => e);
      assert.ok(error instanceof SyncHttpError);
      assert.equal(error.status, status);
      assert.equal(error.error, 'bad request');
      assert.equal(error.detail, 'something specific');
      assert.equal(fetch.requests.length, 1);
    }
  });

  it('throws SyncHttpError without fields for a non-JSON body', async () => {
    const fetch = stubFetch(new Response('<html>Payload Too Large</html>', { status: 413 }));
    const error = await syncUser(BASE, stubGetToken('tok'), fetch, instantOptions()).catch((e: unknown) => e);
    assert.ok(error instanceof SyncHttpError);
    assert.equal(error.status, 413);
    assert.equal(error.error, undefined);
    assert.equal(error.detail, undefined);
  });

  it('throws SyncHttpError when a 200 body is not a profile', async () => {
    const fetch = stubFetch(new Response('ok', { status: 200 }));
    await assert.rejects(syncUser(BASE, stubGetToken('tok'), fetch, instantOptions()), SyncHttpError);
  });

  it('rethrows the abort reason instead of retrying once the signal aborts', async () => {
    const controller = new AbortController();
    const reason = new Error('unmounted');
    const fetch = stubFetch(json(503, {}, { 'Retry-After': '1' }), json(200, PROFILE));
    const options = instantOptions({
      signal: controller.signal,
      sleep: async () => {
        controller.abort(reason);
      },
    });
    await assert.rejects(syncUser(BASE, stubGetToken('tok'), fetch, options), (e) => e === reason);
    assert.equal(fetch.requests.length, 1);
  });

  it('waits for real with the default sleep', async () => {
    const fetch = stubFetch(json(502, {}), json(200, PROFILE));
    const started = Date.now();
    await syncUser(BASE, stubGetToken('tok'), fetch, { baseDelayMs: 40, random: () => 1 });
    assert.ok(Date.now() - started >= 35);
  });
});
