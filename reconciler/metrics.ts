// Prometheus metrics of the reconciler: syncs, their steps, failures, healed
// drift, previews and webhooks. Labels are bounded: a stage is `main` or
// `preview` (pull-request numbers would grow without end), never its name.
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { syncKind, type SyncRecord } from '../store/index.js';

const STEP_BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600];

export type StageType = 'main' | 'preview';

export class ReconcilerMetrics {
  readonly registry = new Registry();
  private readonly syncs: Counter<'stage_type' | 'kind' | 'result'>;
  private readonly duration: Histogram<'stage_type' | 'result'>;
  private readonly steps: Histogram<'step'>;
  private readonly failures: Counter<'stage_type' | 'step'>;
  private readonly healed: Counter<'stage_type'>;
  private readonly lastSuccess: Gauge<'stage_type'>;
  private readonly webhooks: Counter<'result'>;

  constructor(previews: () => number) {
    const r = [this.registry];
    this.syncs = new Counter({ name: 'spore_syncs_total', help: 'Syncs by stage type, kind (revision, drift, rollback, teardown) and result', labelNames: ['stage_type', 'kind', 'result'], registers: r });
    this.duration = new Histogram({ name: 'spore_sync_duration_seconds', help: 'Time of a whole sync (fetch to apply)', labelNames: ['stage_type', 'result'], buckets: STEP_BUCKETS, registers: r });
    this.steps = new Histogram({ name: 'spore_sync_step_duration_seconds', help: 'Time of each step of a sync: fetch, checkout, install, render, validate, apply', labelNames: ['step'], buckets: STEP_BUCKETS, registers: r });
    this.failures = new Counter({ name: 'spore_sync_failures_total', help: 'Rejected revisions by the step that failed', labelNames: ['stage_type', 'step'], registers: r });
    this.healed = new Counter({ name: 'spore_sync_healed_objects_total', help: 'Objects put back after an out-of-band change', labelNames: ['stage_type'], registers: r });
    this.lastSuccess = new Gauge({ name: 'spore_sync_last_success_timestamp_seconds', help: 'When a sync last succeeded', labelNames: ['stage_type'], registers: r });
    this.webhooks = new Counter({ name: 'spore_webhooks_total', help: 'Webhooks by what became of them: accepted, ignored (an event that syncs nothing), refused (signature), invalid (payload), duplicate (a delivery id seen before)', labelNames: ['result'], registers: r });
    new Gauge({ name: 'spore_preview_stages', help: 'Live preview stages', registers: r, collect() { this.set(previews()); } });
  }

  recordSync(record: SyncRecord, stageType: StageType): void {
    const kind = syncKind(record);
    this.syncs.inc({ stage_type: stageType, kind, result: record.result });
    if (kind === 'teardown') return;
    this.duration.observe({ stage_type: stageType, result: record.result }, record.durationMs / 1000);
    for (const [step, ms] of Object.entries(record.timings ?? {})) this.steps.observe({ step }, ms / 1000);
    if (record.error) this.failures.inc({ stage_type: stageType, step: record.error.step });
    if (record.healed?.length) this.healed.inc({ stage_type: stageType }, record.healed.length);
    if (record.result === 'succeeded') this.lastSuccess.set({ stage_type: stageType }, (record.startedAt + record.durationMs) / 1000);
  }

  recordWebhook(result: 'accepted' | 'ignored' | 'refused' | 'invalid' | 'duplicate'): void {
    this.webhooks.inc({ result });
  }
}
