// Shared pieces of the instrumented node scripts of isoscope's tests and benchmarks
// (tests/otlp/http_server.js, net_server.js, net_client.js; bench/plain_http_server.js uses
// only arg()).
//
//   arg(name, dflt)           value after `--name` on the command line, else dflt
//   otlpUrl(endpoint)         HOST:PORT -> http://HOST:PORT (a URL with a scheme is kept)
//   makeTracer({service, endpoint, tracerName, maxQueueSize, exportDelayMs})
//                             the real OpenTelemetry JS SDK: NodeTracerProvider with resource
//                             service.name=service, one BatchSpanProcessor (queue maxQueueSize,
//                             default 10000; batches of 64; every 200 ms) over the OTLP/gRPC
//                             trace exporter to endpoint, W3CTraceContextPropagator registered
//                             as the global propagator. exportDelayMs > 0 (diagnostics only)
//                             holds each export batch that long before handing it to the
//                             exporter. Returns {api, tracer, provider, shutdown}; shutdown()
//                             flushes and shuts down the SDK, logging `flush: <message>` on
//                             stderr on failure (never rejects).
//   cpuNowUs(), burn(ms)      CPU time of this thread (µs) and a busy loop burning ms of it
//   nowHr(), hrMs(t)          wall clock as OpenTelemetry HrTime [s, ns], and HrTime -> ms
//
// The OpenTelemetry packages (tests/otlp/package.json, found through NODE_PATH as set by
// tests/otlp/node_env.py) are loaded only by makeTracer(), so scripts without OpenTelemetry can
// use the rest without them.
'use strict';

const { performance } = require('node:perf_hooks');

function arg(name, dflt) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : dflt;
}

function otlpUrl(endpoint) {
  return /^https?:\/\//.test(endpoint) ? endpoint : `http://${endpoint}`;
}

function delayed(inner, exportDelayMs) {
  if (!(exportDelayMs > 0)) return inner;
  return {
    export: (spans, done) => setTimeout(() => inner.export(spans, done), exportDelayMs),
    shutdown: () => new Promise((r) => setTimeout(r, exportDelayMs + 50)).then(() => inner.shutdown()),
    forceFlush: () => (inner.forceFlush ? inner.forceFlush() : Promise.resolve()),
  };
}

function makeTracer({ service, endpoint, tracerName, maxQueueSize = 10000, exportDelayMs = 0 }) {
  const api = require('@opentelemetry/api');
  const { W3CTraceContextPropagator } = require('@opentelemetry/core');
  const { NodeTracerProvider } = require('@opentelemetry/sdk-trace-node');
  const { BatchSpanProcessor } = require('@opentelemetry/sdk-trace-base');
  const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-grpc');
  const { resourceFromAttributes } = require('@opentelemetry/resources');

  const exporter = new OTLPTraceExporter({ url: otlpUrl(endpoint) });
  const provider = new NodeTracerProvider({
    resource: resourceFromAttributes({ 'service.name': service }),
    spanProcessors: [new BatchSpanProcessor(delayed(exporter, exportDelayMs), {
      maxQueueSize,
      maxExportBatchSize: 64,
      scheduledDelayMillis: 200,
    })],
  });
  provider.register({ propagator: new W3CTraceContextPropagator() });
  api.propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  const tracer = api.trace.getTracer(tracerName, '1.0.0');

  async function shutdown() {
    try {
      await provider.forceFlush();
      await provider.shutdown();
    } catch (e) {
      console.error(`flush: ${e && e.message}`);
    }
  }
  return { api, tracer, provider, shutdown };
}

// CPU time of this (the main) thread in µs where Node has it, else of the process.
const cpuNowUs = typeof process.threadCpuUsage === 'function'
  ? () => { const u = process.threadCpuUsage(); return u.user + u.system; }
  : () => { const u = process.cpuUsage(); return u.user + u.system; };

function burn(ms) {
  const start = cpuNowUs();
  const target = ms * 1000;
  let x = 0;
  while (cpuNowUs() - start < target) {
    for (let i = 0; i < 2000; i++) x = (x * 1103515245 + 12345) % 2147483648;
  }
  return { cpuUs: cpuNowUs() - start, x };
}

// Wall clock as OpenTelemetry HrTime [s, ns] (same source for a span's start and end).
function nowHr() {
  const ms = performance.timeOrigin + performance.now();
  const s = Math.floor(ms / 1000);
  return [s, Math.round((ms - s * 1000) * 1e6)];
}
const hrMs = (t) => t[0] * 1000 + t[1] / 1e6;

module.exports = { arg, otlpUrl, makeTracer, cpuNowUs, burn, nowHr, hrMs };
