// Uses an npm package (slugify), bundled into the function's archive at synth.
import slugify from 'slugify';

export default async function slug(req: Request): Promise<Response> {
  const text = req.method === 'POST' ? await req.text() : (new URL(req.url).searchParams.get('text') ?? '');
  return Response.json({ slug: slugify(text, { lower: true, strict: true }) });
}
