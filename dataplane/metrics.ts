// Prometheus metrics of the dataplane (Fission's set, and the triggers').
// Labels are bounded: namespace, function, trigger, broker, method and status
// code — never a raw path or a message id.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

type QueueLabel = 'namespace' | 'trigger' | 'broker';

const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

export class Metrics {
  readonly registry = new Registry();
  readonly calls: Counter<'namespace' | 'function' | 'method' | 'code'>;
  readonly errors: Counter<'namespace' | 'function' | 'method' | 'code'>;
  readonly duration: Histogram<'namespace' | 'function' | 'method' | 'code'>;
  readonly overhead: Histogram<'namespace' | 'function'>;
  readonly responseSize: Histogram<'namespace' | 'function'>;
  readonly coldStarts: Counter<'namespace' | 'function'>;
  readonly coldStartSeconds: Histogram<'namespace' | 'function'>;
  readonly instanceAlive: Histogram<'namespace' | 'function'>;
  readonly warm: Gauge<'namespace' | 'environment'>;
  readonly specialized: Gauge<'namespace' | 'function'>;
  readonly busy: Gauge<'namespace' | 'function'>;
  readonly archivesRejected: Counter<'reason'>;
  readonly logLinesCut: Counter;
  readonly logBytesDropped: Counter;
  readonly timerFires: Counter<'namespace' | 'trigger'>;
  readonly timerDropped: Counter<'namespace' | 'trigger'>;
  readonly queueConsumed: Counter<QueueLabel>;
  readonly queueSucceeded: Counter<QueueLabel>;
  readonly queueRetried: Counter<QueueLabel>;
  readonly queueDeadLettered: Counter<QueueLabel>;
  readonly queuePublishFailed: Counter<QueueLabel | 'topic'>;
  readonly queueLag: Gauge<QueueLabel>;
  readonly watchEvents: Counter<'namespace' | 'trigger'>;
  readonly watchFailed: Counter<'namespace' | 'trigger'>;
  readonly asyncCalls: Counter<'namespace' | 'function' | 'outcome'>;
  /** Set by the queue triggers: each consumer's lag, read from its broker when the metrics are scraped. */
  consumerLag?: () => Promise<{ namespace: string; trigger: string; broker: string; lag?: number }[]>;

  constructor(options: { defaultMetrics?: boolean } = {}) {
    const r = [this.registry];
    const fnLabels = ['namespace', 'function'] as const;
    const callLabels = ['namespace', 'function', 'method', 'code'] as const;
    this.calls = new Counter({ name: 'spore_function_calls_total', help: 'Calls of functions', labelNames: callLabels, registers: r });
    this.errors = new Counter({ name: 'spore_function_errors_total', help: 'Calls answered with a 5xx status', labelNames: callLabels, registers: r });
    this.duration = new Histogram({ name: 'spore_function_duration_seconds', help: 'Time from request to end of response, through the router', labelNames: callLabels, buckets: LATENCY_BUCKETS, registers: r });
    this.overhead = new Histogram({ name: 'spore_function_overhead_seconds', help: "Time the router adds to a call, not counting the function's own time", labelNames: fnLabels, buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25], registers: r });
    this.responseSize = new Histogram({ name: 'spore_function_response_size_bytes', help: 'Response body size', labelNames: fnLabels, buckets: [0, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000], registers: r });
    this.coldStarts = new Counter({ name: 'spore_function_cold_starts_total', help: 'Instances specialized for a function', labelNames: fnLabels, registers: r });
    this.coldStartSeconds = new Histogram({ name: 'spore_function_cold_start_seconds', help: 'Time to specialize an instance (fetch, verify, extract, load)', labelNames: fnLabels, buckets: LATENCY_BUCKETS, registers: r });
    this.instanceAlive = new Histogram({ name: 'spore_function_instance_alive_seconds', help: 'Lifetime of specialized instances', labelNames: fnLabels, buckets: [1, 10, 60, 300, 900, 3600, 86400], registers: r });
    this.warm = new Gauge({ name: 'spore_pool_warm_instances', help: 'Generic instances ready to be specialized', labelNames: ['namespace', 'environment'], registers: r });
    this.specialized = new Gauge({ name: 'spore_function_specialized_instances', help: 'Instances specialized for a function', labelNames: fnLabels, registers: r });
    this.busy = new Gauge({ name: 'spore_function_busy_instances', help: 'Specialized instances serving at least one call', labelNames: fnLabels, registers: r });
    // reason is one of ArchiveRejection's few values
    this.archivesRejected = new Counter({ name: 'spore_archive_rejected_total', help: 'Package archives refused: archive_size, unpacked_size, files, not_a_file, url, checksum, unsafe_entry, invalid', labelNames: ['reason'], registers: r });
    // no labels: the provider that cuts a line knows its instance, not yet its function
    this.logLinesCut = new Counter({ name: 'spore_log_lines_cut_total', help: 'Log lines cut at the bound on bytes per line', registers: r });
    this.logBytesDropped = new Counter({ name: 'spore_log_bytes_dropped_total', help: 'Bytes of log lines dropped past the bound on bytes per line', registers: r });
    const timer = ['namespace', 'trigger'] as const;
    this.timerFires = new Counter({ name: 'spore_timer_fires_total', help: 'Firings of a timer trigger (a dropped one included)', labelNames: timer, registers: r });
    this.timerDropped = new Counter({ name: 'spore_timer_fires_dropped_total', help: 'Firings of a timer trigger dropped: too many waited for its calls in flight', labelNames: timer, registers: r });
    const queue = ['namespace', 'trigger', 'broker'] as const;
    this.queueConsumed = new Counter({ name: 'spore_queue_messages_consumed_total', help: 'Deliveries of messages to a queue trigger (a redelivery counts again)', labelNames: queue, registers: r });
    this.queueSucceeded = new Counter({ name: 'spore_queue_messages_succeeded_total', help: 'Messages whose call answered 2xx, then acknowledged', labelNames: queue, registers: r });
    this.queueRetried = new Counter({ name: 'spore_queue_messages_retried_total', help: 'Failed deliveries left to the broker to deliver again (within maxRetries)', labelNames: queue, registers: r });
    this.queueDeadLettered = new Counter({ name: 'spore_queue_messages_dead_lettered_total', help: 'Messages that failed their last delivery: published to errorTopic (dropped without one), then acknowledged', labelNames: queue, registers: r });
    // topic: "response" or "error", the role of the topic, not its name
    this.queuePublishFailed = new Counter({ name: 'spore_queue_publish_failed_total', help: 'Responses or errors the broker refused to take on responseTopic / errorTopic', labelNames: [...queue, 'topic'], registers: r });
    const lag = (this.queueLag = new Gauge({
      name: 'spore_queue_consumer_lag',
      help: "Messages on the broker not yet delivered to a queue trigger's consumer (NATS: num_pending)",
      labelNames: queue,
      registers: r,
      collect: async () => {
        if (!this.consumerLag) return;
        lag.reset(); // a trigger gone, or whose broker does not answer, shows no figure
        for (const q of await this.consumerLag()) if (q.lag !== undefined) lag.set({ namespace: q.namespace, trigger: q.trigger, broker: q.broker }, q.lag);
      },
    }));
    this.watchEvents = new Counter({ name: 'spore_watch_events_total', help: 'Changes a watch trigger sent to its function', labelNames: timer, registers: r });
    this.watchFailed = new Counter({ name: 'spore_watch_events_failed_total', help: "Changes a watch trigger sent whose call failed (not retried)", labelNames: timer, registers: r });
    // outcome: accepted, succeeded, retried, failed (into the dead letter)
    this.asyncCalls = new Counter({ name: 'spore_async_calls_total', help: 'Asynchronous calls by outcome: accepted, succeeded, retried, failed (into the dead letter)', labelNames: ['namespace', 'function', 'outcome'], registers: r });
    if (options.defaultMetrics) collectDefaultMetrics({ register: this.registry });
  }

  // Label sets are few (namespace × function × method × code), so their
  // children are cached: the hot path skips prom-client's label checks.
  private readonly callChildren = new Map<string, { calls: ReturnType<Metrics['calls']['labels']>; errors: ReturnType<Metrics['errors']['labels']>; duration: ReturnType<Metrics['duration']['labels']> }>();
  private readonly fnChildren = new Map<string, { overhead: ReturnType<Metrics['overhead']['labels']>; responseSize: ReturnType<Metrics['responseSize']['labels']> }>();

  /** Counts one call: calls, errors (5xx) and duration. */
  recordCall(namespace: string, fn: string, method: string, code: number, seconds: number): void {
    const key = `${namespace}\0${fn}\0${method}\0${code}`;
    let c = this.callChildren.get(key);
    if (!c) {
      const l = [namespace, fn, method, String(code)];
      c = { calls: this.calls.labels(...l), errors: this.errors.labels(...l), duration: this.duration.labels(...l) };
      this.callChildren.set(key, c);
    }
    c.calls.inc();
    if (code >= 500) c.errors.inc();
    c.duration.observe(seconds);
  }

  /** The router's own time and the response size of one call. */
  recordProxy(namespace: string, fn: string, overheadSeconds: number, bytes: number): void {
    const key = `${namespace}\0${fn}`;
    let c = this.fnChildren.get(key);
    if (!c) {
      c = { overhead: this.overhead.labels(namespace, fn), responseSize: this.responseSize.labels(namespace, fn) };
      this.fnChildren.set(key, c);
    }
    c.overhead.observe(overheadSeconds);
    c.responseSize.observe(bytes);
  }
}
