// Called once per message on the "orders" subject; the response is published to "orders.done".
interface Order {
  id: string;
  items: { sku: string; quantity: number; price: number }[];
}

export default async function processOrder(req: Request): Promise<Response> {
  const order = (await req.json()) as Order;
  if (!order?.id || !Array.isArray(order.items)) return Response.json({ error: 'an order needs an id and items' }, { status: 400 });
  const total = order.items.reduce((sum, item) => sum + item.quantity * item.price, 0);
  return Response.json({ id: order.id, total, status: 'accepted' });
}
