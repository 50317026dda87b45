// The packer lives in api/ (the reconciler's build step packs too); users of
// the constructs keep importing it from here.
export * from '../api/archive.js';
