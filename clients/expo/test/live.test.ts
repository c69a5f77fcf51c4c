/**
 * Runs `syncUser` against a real service. The Python test suite starts one and
 * sets the env vars below; without `SYNC_SERVICE_URL` every test is skipped.
 *
 * - `SYNC_SERVICE_URL`: the service's base URL.
 * - `SYNC_SESSION_TOKEN`: a valid session token for a user Clerk knows.
 * - `SYNC_GONE_TOKEN`: a valid session token for a user Clerk does not have.
 * - `SYNC_EXPIRED_TOKEN`: a token the service rejects with 401.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { type GetToken, type SyncOptions, SyncAccountGoneError, syncUser } from '../src/syncUser.js';

const baseUrl = process.env.SYNC_SERVICE_URL ?? '';
const skip = !baseUrl;

function requiredEnv(name: string): string {
  const value = process.env[name];
  assert.ok(value, `${name} must be set when SYNC_SERVICE_URL is`);
  return value;
}

/** The `sub` claim of a JWT, read without verifying the signature. */
function subjectOf(token: string): string {
  const payload = token.split('.')[1];
  assert.ok(payload, 'session token is not a JWT');
  const claims: unknown = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'));
  assert.ok(typeof claims === 'object' && claims !== null && 'sub' in claims && typeof claims.sub === 'string');
  return claims.sub;
}

const noWait: SyncOptions = { sleep: async () => {} };

describe('syncUser against a live service', { skip }, () => {
  it('syncs the signed-in user', async () => {
    const token = requiredEnv('SYNC_SESSION_TOKEN');
    const { profile, created } = await syncUser(baseUrl, async () => token, fetch, noWait);
    assert.equal(profile.clerkId, subjectOf(token));
    assert.equal(typeof created, 'boolean');
  });

  it('recovers from a rejected token with one skipCache refresh', async () => {
    const expired = requiredEnv('SYNC_EXPIRED_TOKEN');
    const valid = requiredEnv('SYNC_SESSION_TOKEN');
    let skipCacheCalls = 0;
    const getToken: GetToken = async (opts) => {
      if (opts?.skipCache) {
        skipCacheCalls += 1;
        return valid;
      }
      return expired;
    };
    const { profile } = await syncUser(baseUrl, getToken, fetch, noWait);
    assert.equal(profile.clerkId, subjectOf(valid));
    assert.equal(skipCacheCalls, 1);
  });

  it('reports an account Clerk no longer has', async () => {
    const gone = requiredEnv('SYNC_GONE_TOKEN');
    await assert.rejects(syncUser(baseUrl, async () => gone, fetch, noWait), SyncAccountGoneError);
  });

  it('retries past an injected 503 honouring Retry-After', async () => {
    const token = requiredEnv('SYNC_SESSION_TOKEN');
    let calls = 0;
    const faultyFetch: typeof fetch = async (input, init) => {
      calls += 1;
      if (calls === 1) {
        return new Response(JSON.stringify({ error: 'unavailable', detail: 'injected' }), {
          status: 503,
          headers: { 'Content-Type': 'application/json', 'Retry-After': '1' },
        });
      }
      return fetch(input, init);
    };
    const delays: number[] = [];
    const { profile } = await syncUser(baseUrl, async () => token, faultyFetch, {
      sleep: async (ms) => {
        delays.push(ms);
      },
    });
    assert.equal(profile.clerkId, subjectOf(token));
    assert.deepEqual(delays, [1000]);
    assert.equal(calls, 2);
  });

  it('retries past an injected network error', async () => {
    const token = requiredEnv('SYNC_SESSION_TOKEN');
    let calls = 0;
    const faultyFetch: typeof fetch = async (input, init) => {
      calls += 1;
      if (calls === 1) throw new TypeError('fetch failed (injected)');
      return fetch(input, init);
    };
    const { profile } = await syncUser(baseUrl, async () => token, faultyFetch, noWait);
    assert.equal(profile.clerkId, subjectOf(token));
    assert.equal(calls, 2);
  });
});
