// Prometheus metrics of workflow runs, on the dataplane's registry. Labels are
// bounded: namespace, workflow, and the top-level task id (a task inside
// control flow counts under the task that holds it).
import { Counter, Histogram, type Registry } from 'prom-client';

const BUCKETS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800];

export class WorkflowMetrics {
  private readonly runs: Counter<'namespace' | 'workflow' | 'state'>;
  private readonly runSeconds: Histogram<'namespace' | 'workflow' | 'state'>;
  private readonly tasks: Counter<'namespace' | 'workflow' | 'task' | 'state'>;
  private readonly taskSeconds: Histogram<'namespace' | 'workflow' | 'task'>;

  constructor(registry: Registry) {
    const registers = [registry];
    this.runs = new Counter({ name: 'spore_workflow_runs_total', help: 'Workflow runs ended, by state (succeeded, failed)', labelNames: ['namespace', 'workflow', 'state'], registers });
    this.runSeconds = new Histogram({ name: 'spore_workflow_run_duration_seconds', help: 'Time from the start of a run to its end', labelNames: ['namespace', 'workflow', 'state'], buckets: BUCKETS, registers });
    this.tasks = new Counter({ name: 'spore_workflow_tasks_total', help: 'Workflow tasks ended, by state (succeeded, failed: after their retries)', labelNames: ['namespace', 'workflow', 'task', 'state'], registers });
    this.taskSeconds = new Histogram({ name: 'spore_workflow_task_duration_seconds', help: 'Time from the start of a task to its end, retries included', labelNames: ['namespace', 'workflow', 'task'], buckets: BUCKETS, registers });
  }

  run(namespace: string, workflow: string, state: string, seconds: number): void {
    this.runs.inc({ namespace, workflow, state });
    this.runSeconds.observe({ namespace, workflow, state }, seconds);
  }

  task(namespace: string, workflow: string, task: string, state: string, seconds: number): void {
    this.tasks.inc({ namespace, workflow, task, state });
    this.taskSeconds.observe({ namespace, workflow, task }, seconds);
  }
}
