// `spore publish`: the rendered manifests of an app, committed onto a branch for Argo CD.
import { resolve } from 'node:path';
import { publishRendered } from '../reconciler/publish.js';

export async function publishCommand(dir: string, o: { branch: string; push?: string | boolean }): Promise<void> {
  const push = o.push === true ? 'origin' : o.push || undefined;
  const r = await publishRendered(resolve(dir), { branch: o.branch, push });
  const what = r.changed ? `committed ${r.commit.slice(0, 12)}` : `unchanged at ${r.commit.slice(0, 12)}`;
  console.log(`spore: ${r.objects} objects rendered from ${r.source.slice(0, 12)}; branch ${r.branch}: ${what}${push ? `, pushed to ${push}` : ''}`);
  if (!push) console.log(`spore: push it with: git push origin ${r.branch}`);
}
