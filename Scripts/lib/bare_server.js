'use strict';
// The benchmark's peer for warm invocations: the same Node handler called by
// Node's own http server in one process, with no sandbox, no signature check,
// no logs and no audit. It answers any POST with the handler's result as JSON,
// so `petrel load --endpoint` can drive it exactly as it drives petreld.
// Usage: node bare_server.js HANDLER_DIR PORT (prints READY).
const http = require('http');
const path = require('path');

const { handler } = require(path.join(process.argv[2], 'index.js'));
const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', async () => {
    let status = 200;
    let out;
    try {
      const body = Buffer.concat(chunks).toString();
      out = JSON.stringify(await handler(body ? JSON.parse(body) : {}, {}));
    } catch (e) {
      status = 500;
      out = JSON.stringify({ errorMessage: String(e) });
    }
    res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(out) });
    res.end(out);
  });
});
server.keepAliveTimeout = 60000;
server.listen(Number(process.argv[3]), '127.0.0.1', () => console.log('READY'));
