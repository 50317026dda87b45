export default () => new Response('Hello from v1\n');
