// Written for Fission's Node.js environment: it runs unchanged on Spore.
// (.cjs: this example app is an ES module package, and this file is CommonJS.)
module.exports = async function (context) {
  const who = (context.request.query && context.request.query.who) || 'Fission';
  return {
    status: 200,
    headers: { 'content-type': 'text/plain' },
    body: `Hello from a ${who}-style function\n`,
  };
};
