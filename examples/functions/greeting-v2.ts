export default () => new Response('Hello from v2 (canary)\n');
