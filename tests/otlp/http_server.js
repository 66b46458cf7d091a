// An instrumented HTTP server for isoscope's span-correlation tests: node:http with the real
// OpenTelemetry JS SDK (sdk-trace-node, a BatchSpanProcessor and the OTLP/gRPC trace exporter),
// exporting to isoscope's receiver.
//
// usage: node http_server.js --port N --endpoint HOST:PORT [--service NAME] [--work-ms MS]
//                            [--host 127.0.0.1] [--export-delay-ms MS]
// (--endpoint may also come from OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT)
//
// For every request: the parent context is extracted from the incoming `traceparent` header
// (W3CTraceContextPropagator, registered as the global propagator), a SERVER span "GET /work" is
// started as its child, the request burns --work-ms of CPU time of this thread (default 15 ms),
// the span ends and the response is 200 with {"traceId","spanId","parentSpanId","cpuMs","wallMs"}.
// Prints {"listening": port} on stdout once bound. SIGTERM/SIGINT: close the server, flush and
// shut down the SDK, exit 0.
'use strict';

const http = require('node:http');
const { arg, makeTracer, burn } = require('./otel_setup');

const port = Number(arg('port', '0'));
const host = arg('host', '127.0.0.1');
const endpoint = arg('endpoint', process.env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ||
                                 process.env.OTEL_EXPORTER_OTLP_ENDPOINT || '');
const service = arg('service', 'isoscope-http-test');
const workMs = Number(arg('work-ms', '15'));
// Diagnostics only: hold each export batch this long before handing it to the exporter.
const exportDelayMs = Number(arg('export-delay-ms', '0'));
if (!endpoint) {
  console.error('usage: node http_server.js --port N --endpoint HOST:PORT [--service NAME] [--work-ms MS]');
  process.exit(2);
}

const { api, tracer, shutdown } = makeTracer({
  service, endpoint, tracerName: 'isoscope-http-test', exportDelayMs,
});

const server = http.createServer((req, res) => {
  const wallStart = process.hrtime.bigint();
  const parent = api.propagation.extract(api.ROOT_CONTEXT, req.headers);
  const span = tracer.startSpan(`${req.method} ${req.url.split('?')[0]}`, {
    kind: api.SpanKind.SERVER,
    attributes: { 'http.request.method': req.method, 'url.path': req.url },
  }, parent);
  const done = () => {
    const b = burn(workMs);
    span.setAttribute('test.cpu_us', b.cpuUs);
    span.end();
    const c = span.spanContext();
    const p = api.trace.getSpanContext(parent);
    const body = JSON.stringify({
      traceId: c.traceId,
      spanId: c.spanId,
      parentSpanId: p ? p.spanId : '',
      cpuMs: b.cpuUs / 1000,
      wallMs: Number(process.hrtime.bigint() - wallStart) / 1e6,
    });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  };
  req.resume();  // drain any body
  if (req.complete) done(); else req.on('end', done);
});
server.keepAliveTimeout = 5000;
server.listen(port, host, () => {
  process.stdout.write(JSON.stringify({ listening: server.address().port, pid: process.pid }) + '\n');
});

let stopping = false;
async function stop() {
  if (stopping) return;
  stopping = true;
  server.close();
  if (server.closeAllConnections) server.closeAllConnections();
  await shutdown();
  process.exit(0);
}
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, stop);
