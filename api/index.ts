// The resource model: types, schemas, defaults and validation of the spore.dev kinds.
export * from './schema-kit.js';
export * from './kinds.js';
export * from './errors.js';
export * from './environment.js';
export * from './package.js';
export * from './function.js';
export * from './triggers.js';
export * from './workflow.js';
export * from './stage.js';
export * from './workflow-run.js';
export * from './schedule.js';
export * from './validate.js';
export * from './crd.js';
export * from './executor.js';
export * from './labels.js';
export * from './quantity.js';
export * from './platform.js';
