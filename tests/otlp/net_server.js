// An instrumented HTTP/1.1 server for isoscope's network tests (tests/integration/test_network.py),
// meant to run inside a network namespace. It is a plain `net` server that parses HTTP/1.1
// itself, so that its SERVER span can start when the request's first byte arrives (or, with
// --slow-read-ms, when the connection arrives) and so cover the time the request's data waited
// in the kernel. Spans go through the real OpenTelemetry JS SDK (sdk-trace-node, BatchSpanProcessor,
// OTLP/gRPC exporter) to isoscope's receiver; each SERVER span is the child of the inbound
// `traceparent` (W3CTraceContextPropagator).
//
// usage: node net_server.js --port N --endpoint HOST:PORT [--host 0.0.0.0] [--service NAME]
//                           [--work-ms MS] [--slow-read-ms MS] [--response-bytes N]
//
//   --work-ms MS        CPU time burnt by this thread per request (default 2)
//   --slow-read-ms MS   accept each connection paused (net pauseOnConnect: nothing is read, the
//                       request's bytes stay in the socket's receive queue) and resume reading
//                       MS ms later; the span of the connection's first request starts at the
//                       connection's arrival. Later requests on a kept-alive connection are read
//                       at once.
//   --response-bytes N  response body size (padding after the JSON, default: just the JSON)
//
// Response: 200, keep-alive unless the request said `Connection: close`, body
// {"traceId","spanId","parentSpanId","cpuMs","wallMs","waitMs"} (+ padding). Prints
// {"listening": port, "pid": pid} once bound. SIGTERM/SIGINT: close, flush the SDK, exit 0.
'use strict';

const net = require('node:net');
const { arg, makeTracer, burn, nowHr, hrMs } = require('./otel_setup');

const port = Number(arg('port', '0'));
const host = arg('host', '0.0.0.0');
const endpoint = arg('endpoint', process.env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT || '');
const service = arg('service', 'isoscope-net-server');
const workMs = Number(arg('work-ms', '2'));
const slowReadMs = Number(arg('slow-read-ms', '0'));
const responseBytes = Number(arg('response-bytes', '0'));
if (!endpoint) {
  console.error('usage: node net_server.js --port N --endpoint HOST:PORT [--work-ms MS] [--slow-read-ms MS]');
  process.exit(2);
}

const { api, tracer, shutdown } = makeTracer({ service, endpoint, tracerName: 'isoscope-net-test' });

// One request, fully read: answer it and end its span.
function handle(sock, reqLine, headers, started, readAt) {
  const [method, target] = reqLine.split(' ');
  const parent = api.propagation.extract(api.ROOT_CONTEXT, headers);
  const span = tracer.startSpan(`${method} ${(target || '/').split('?')[0]}`, {
    kind: api.SpanKind.SERVER,
    startTime: started,
    attributes: {
      'http.request.method': method,
      'url.path': target,
      'test.wait_ms': readAt - hrMs(started),
    },
  }, parent);
  const b = burn(workMs);
  span.setAttribute('test.cpu_us', b.cpuUs);
  const c = span.spanContext();
  const p = api.trace.getSpanContext(parent);
  let body = JSON.stringify({
    traceId: c.traceId,
    spanId: c.spanId,
    parentSpanId: p ? p.spanId : '',
    cpuMs: b.cpuUs / 1000,
    wallMs: hrMs(nowHr()) - hrMs(started),
    waitMs: readAt - hrMs(started),
  });
  if (responseBytes > body.length) body += ' '.repeat(responseBytes - body.length);
  const close = (headers.connection || '').toLowerCase() === 'close';
  const head = `HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n` +
               `content-length: ${Buffer.byteLength(body)}\r\n` +
               `connection: ${close ? 'close' : 'keep-alive'}\r\n\r\n`;
  sock.write(head + body);
  span.end(nowHr());
  if (close) sock.end();
}

const server = net.createServer({ pauseOnConnect: slowReadMs > 0, noDelay: true }, (sock) => {
  let buf = Buffer.alloc(0);
  let started = null;       // HrTime when the current request began (first byte / connection)
  let readAt = 0;           // ms when its first byte was read
  let need = -1;            // body bytes still expected for the parsed head, -1: no head yet
  let head = null;
  sock.setNoDelay(true);
  sock.on('error', () => {});
  if (slowReadMs > 0) {
    started = nowHr();
    setTimeout(() => sock.resume(), slowReadMs);
  }
  sock.on('data', (chunk) => {
    if (started === null) started = nowHr();
    if (readAt === 0) readAt = hrMs(nowHr());
    buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
    for (;;) {
      if (need < 0) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const lines = buf.subarray(0, end).toString('latin1').split('\r\n');
        const headers = {};
        for (const l of lines.slice(1)) {
          const i = l.indexOf(':');
          if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
        }
        head = { line: lines[0], headers };
        need = Number(headers['content-length'] || 0);
        buf = buf.subarray(end + 4);
      }
      if (buf.length < need) return;
      buf = buf.subarray(need);
      const h = head;
      const s = started;
      const r = readAt;
      need = -1;
      head = null;
      // The next request on this connection starts with its own first byte.
      started = buf.length ? nowHr() : null;
      readAt = buf.length ? hrMs(nowHr()) : 0;
      handle(sock, h.line, h.headers, s, r);
    }
  });
});
server.listen(port, host, () => {
  process.stdout.write(JSON.stringify({ listening: server.address().port, pid: process.pid }) + '\n');
});

let stopping = false;
async function stop() {
  if (stopping) return;
  stopping = true;
  server.close();
  await shutdown();
  process.exit(0);
}
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, stop);
