// What the router answers at its edges: one JSON error shape with the request
// id whatever the fault, and HEAD wherever GET is routed.
import http from 'node:http';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { environment, fn, harness, type Harness } from './harness.js';

let h: Harness;
beforeEach(async () => {
  h = await harness();
});
afterEach(async () => {
  await h.close();
});

/** A raw request, so that what an HTTP library would refuse to send (a bad %-escape) reaches the router. */
function raw(method: string, path: string): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${h.url}${path}`, { method }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

const HELLO = { 'index.mjs': `export default () => new Response('hello', { headers: { 'x-fn': 'yes' } });` };

describe('the router at its edges', () => {
  it('answers methods it does not route (TRACE, PROPFIND) with its JSON error and the request id', async () => {
    for (const method of ['TRACE', 'PROPFIND']) {
      const r = await raw(method, '/anything');
      expect(r.status, method).toBe(404);
      const body = JSON.parse(r.body);
      expect(body).toMatchObject({ status: 404, error: 'NotFound', message: `no route for ${method} /anything` });
      expect(body.requestId).toMatch(/^[0-9a-f-]{36}$/);
      expect(r.headers['x-spore-request-id']).toBe(body.requestId);
    }
  });

  it('answers a path that does not decode with a 400 in the same shape', async () => {
    await h.apply([environment('node', 'node'), ...fn('hello', HELLO, { route: '/hello/:name' })]);
    const r = await raw('GET', '/hello/%E0%A4%A');
    expect(r.status).toBe(400);
    const body = JSON.parse(r.body);
    expect(body).toMatchObject({ status: 400, error: 'BadRequest' });
    expect(body.requestId).toBe(r.headers['x-spore-request-id']);
  });

  it('serves HEAD on a GET route: the headers of GET, no body', async () => {
    await h.apply([environment('node', 'node'), ...fn('hello', HELLO, { route: '/hello' })]);
    const r = await raw('HEAD', '/hello');
    expect(r.status).toBe(200);
    expect(r.headers['x-fn']).toBe('yes');
    expect(r.body).toBe('');
    expect((await raw('DELETE', '/hello')).headers.allow?.split(', ')).toContain('HEAD'); // and a 405 says so
  });
});
