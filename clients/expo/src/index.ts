export * from './syncUser';
export * from './useUserSync';
