export * from './types.js';
export { SqliteStore, type SqliteStoreOptions } from './sqlite.js';
export { canonical, digest } from './canonical.js';
