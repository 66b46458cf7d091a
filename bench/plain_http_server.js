// A plain node:http server for bench/http_bench.py (BENCH_HTTP_SERVER=plain): no OpenTelemetry,
// so only the agent's kernel-side cost (the read probes that find traceparent headers, the
// scheduler probes) reaches the request path.
//
// usage: node plain_http_server.js --port N [--host 127.0.0.1]
// Answers every request 200 with {"traceparent": <the request's header or "">}. Prints
// {"listening": port, "pid": pid} on stdout once bound. SIGTERM/SIGINT: close and exit 0.
'use strict';

const http = require('node:http');
// Only the command-line helper; the OpenTelemetry packages are never loaded here.
const { arg } = require('../tests/otlp/otel_setup');

const port = Number(arg('port', '0'));
const host = arg('host', '127.0.0.1');

const server = http.createServer((req, res) => {
  const body = JSON.stringify({ traceparent: req.headers.traceparent || '' });
  req.resume();
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
});
server.keepAliveTimeout = 5000;
server.listen(port, host, () => {
  process.stdout.write(JSON.stringify({ listening: server.address().port, pid: process.pid }) + '\n');
});
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    server.close();
    if (server.closeAllConnections) server.closeAllConnections();
    process.exit(0);
  });
}
