// Written for Fission's Node.js environment: it runs unchanged on Spore.
// A .js file is CommonJS unless it uses ES module syntax itself, as in Fission,
// even though this app's package.json says "type": "module".
module.exports = async function (context) {
  const who = (context.request.query && context.request.query.who) || 'Fission';
  return {
    status: 200,
    headers: { 'content-type': 'text/plain' },
    body: `Hello from a ${who}-style function\n`,
  };
};
