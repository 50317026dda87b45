// Called by a timer; what it prints goes to the function's logs (`spore logs tick`).
export default function tick(): Response {
  console.log(`tick at ${new Date().toISOString()}`);
  return new Response('ok\n');
}
