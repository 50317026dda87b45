// An example Spore app. `npm run synth` writes its manifests and archives to
// dist/; `spore up` (or `npm start` at the repository root) serves it locally.
import { App, Chart } from 'cdk8s';
import { Environment, NodeFunction, PythonFunction, HttpTrigger, Workflow } from 'spore';

const app = new App();
const chart = new Chart(app, 'shop');

const node = Environment.node(chart, 'node');
const python = Environment.python(chart, 'python', { poolSize: 2 });

// A Web handler (Request → Response) with a path parameter.
// Node handlers are asynchronous: one instance serves many calls at once.
const hello = new NodeFunction(chart, 'hello', { environment: node, entry: 'functions/hello.ts', requestsPerInstance: 50 });
hello.addRoute('GET', '/hello/:name');

// A function that imports an npm package: it is bundled into the archive.
const slug = new NodeFunction(chart, 'slug', { environment: node, entry: 'functions/slug.ts' });
slug.addRoute(['GET', 'POST'], '/slug');

// A function written for Fission runs unchanged.
const legacy = new NodeFunction(chart, 'fission-hello', { environment: node, entry: 'functions/fission-hello.js' });
legacy.addRoute('GET', '/fission');

// Python: a folder with main.py (and a requirements.txt, if it has one).
const pyHello = new PythonFunction(chart, 'py-hello', { environment: python, path: 'functions/python-hello' });
pyHello.addRoute('GET', '/py/hello');

// A timer: runs every minute.
const tick = new NodeFunction(chart, 'tick', { environment: node, entry: 'functions/tick.ts' });
tick.addSchedule('@every 1m');

// A queue consumer: one call per message on the NATS subject "orders".
const orders = new NodeFunction(chart, 'process-order', { environment: node, entry: 'functions/process-order.ts' });
orders.addQueue('orders', { url: 'nats://127.0.0.1:4222', responseTopic: 'orders.done', errorTopic: 'orders.failed', maxRetries: 3 });

// A canary: 90% of /greeting goes to v1, 10% to v2.
const v1 = new NodeFunction(chart, 'greeting-v1', { environment: node, entry: 'functions/greeting-v1.ts' });
const v2 = new NodeFunction(chart, 'greeting-v2', { environment: node, entry: 'functions/greeting-v2.ts' });
new HttpTrigger(chart, 'greeting', {
  path: '/greeting',
  functions: [
    { function: v1, weight: 90 },
    { function: v2, weight: 10 },
  ],
});

// A workflow: two functions at once (Node and Python), their outputs joined.
// GET /signup?name=Ada%20Lovelace answers the workflow's output.
const signup = new Workflow(chart, 'signup', {
  tasks: {
    handle: { run: slug, inputs: '{$.Invocation.Inputs.query.name}' },
    python: { run: pyHello },
    welcome: { run: 'compose', inputs: { user: '{$.Tasks.handle.Output.slug}', greeting: '{$.Tasks.python.Output.message}' }, requires: ['handle', 'python'] },
  },
  output: 'welcome',
});
new HttpTrigger(chart, 'signup-route', { methods: ['GET'], path: '/signup', workflow: signup });

app.synth();
