import { useAuth } from '@clerk/clerk-expo';
import { useQuery } from '@tanstack/react-query';

import { SyncAccountGoneError, syncUser, type SyncOptions, type UserProfile } from './syncUser';

export interface UserSyncState {
  /** The synced profile; `null` while signed out or before the first sync succeeds. */
  profile: UserProfile | null;
  /** Whether the last sync created the user document; `null` until a sync succeeds. */
  created: boolean | null;
  /** True while a sync (the first one or a `resync`) is in flight. */
  isSyncing: boolean;
  /** The last sync's failure, usually a `SyncError` subclass. */
  error: Error | null;
  /** Syncs again, e.g. after the user edited their Clerk profile. */
  resync: () => Promise<void>;
}

/**
 * Syncs the signed-in Clerk user with the service once per user, and signs the
 * app out when the service says Clerk no longer has that account.
 *
 * `retry` is off because `syncUser` already retries what is worth retrying;
 * the result never goes stale because the document only changes when the app
 * asks (`resync`) or a webhook reaches the service.
 *
 * @param baseUrl the service's base URL, e.g. `process.env.EXPO_PUBLIC_API_URL`.
 */
export function useUserSync(
  baseUrl: string,
  options?: Omit<SyncOptions, 'signal'>,
): UserSyncState {
  const { isSignedIn, userId, getToken, signOut } = useAuth();

  const query = useQuery({
    queryKey: ['userSync', userId],
    queryFn: async ({ signal }) => {
      try {
        return await syncUser(baseUrl, getToken, fetch, { ...options, signal });
      } catch (error) {
        // The sign-out's own failure must not hide why it was attempted.
        if (error instanceof SyncAccountGoneError) await signOut().catch(() => undefined);
        throw error;
      }
    },
    enabled: isSignedIn === true && Boolean(userId),
    retry: false,
    staleTime: Infinity,
  });

  return {
    profile: query.data?.profile ?? null,
    created: query.data?.created ?? null,
    isSyncing: query.isFetching,
    error: query.error,
    resync: async () => {
      await query.refetch();
    },
  };
}
