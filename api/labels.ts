/** Labels Spore puts on what it applies: the app and the stage an object belongs to (its inventory). */
export const APP_LABEL = 'spore.dev/app';
export const STAGE_LABEL = 'spore.dev/stage';
/** The stage of the main branch (and of `spore up DIR`); previews get stages of their own. */
export const MAIN_STAGE = 'main';
/** Path prefix that reaches a preview stage's routes: /_stage/<stage>/… */
export const STAGE_PREFIX = '/_stage/';

/** Any text as a DNS-1123 label (lowercase letters, digits, inner dashes), at most `max` characters; '' if nothing is left. */
export function dnsLabel(from: string, max = 63): string {
  return from.toLowerCase().replace(/[^a-z0-9-]+/g, '-').replace(/^-+/, '').slice(0, max).replace(/-+$/, '');
}

/** An app's name for its inventory label, from a folder or repository name. */
export function appName(from: string): string {
  return dnsLabel(from.replace(/\.git$/i, '')) || 'app';
}
