/** Labels Spore puts on what it applies: the app and the stage an object belongs to (its inventory). */
export const APP_LABEL = 'spore.dev/app';
export const STAGE_LABEL = 'spore.dev/stage';
/** The stage of the main branch (and of `spore up DIR`); previews get stages of their own. */
export const MAIN_STAGE = 'main';
/** Path prefix that reaches a preview stage's routes: /_stage/<stage>/… */
export const STAGE_PREFIX = '/_stage/';
