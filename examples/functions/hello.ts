// A Web handler: a Request in, a Response out. Path parameters arrive as
// X-Spore-Param-<name> headers.
export default function hello(req: Request): Response {
  const name = req.headers.get('x-spore-param-name') ?? 'world';
  return new Response(`Hello, ${name}!\n`, { headers: { 'content-type': 'text/plain; charset=utf-8' } });
}
