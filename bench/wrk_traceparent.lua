-- wrk script for bench/http_bench.py: a fresh random W3C traceparent on every request, paced
-- per connection, and the latency percentiles printed as one JSON line at the end.
--
--   WRK_DELAY_MS=9.5 wrk -t2 -c100 -d10s -s bench/wrk_traceparent.lua http://127.0.0.1:PORT/work
--
-- Pacing: plain wrk has no rate control (wrk2 has; it is not packaged here). wrk calls delay()
-- after each response and waits that many milliseconds (integer) before the connection's next
-- request, so each connection runs at about 1000 / (WRK_DELAY_MS + latency) requests/s and the
-- whole run at connections times that. A fractional WRK_DELAY_MS is met on average by
-- returning floor or ceil at random. This is closed-loop pacing: if the server slows down the
-- offered rate drops a little, so the harness measures the achieved rate and reports it.
-- WRK_DELAY_MS unset or 0: no delay (as fast as the server answers).
--
-- Output (done()): a line "WRK_JSON {...}" with requests, duration_us, bytes, errors (connect,
-- read, write, status, timeout), non-2xx responses and latency p50/p90/p99/p99.9/max/mean in µs.

local delay_ms = tonumber(os.getenv("WRK_DELAY_MS") or "0") or 0
local hexdigits = "0123456789abcdef"
local thread_counter = 0

function setup(thread)
  thread_counter = thread_counter + 1
  thread:set("thread_no", thread_counter)
end

local function random_hex(n)
  local t = {}
  for i = 1, n do
    local d = math.random(1, 16)
    t[i] = string.sub(hexdigits, d, d)
  end
  return table.concat(t)
end

local function nonzero_hex(n)
  local s = random_hex(n)
  if s == string.rep("0", n) then s = string.sub(s, 1, n - 1) .. "1" end
  return s
end

function init(args)
  -- Each wrk thread has its own Lua state: seed each differently.
  math.randomseed(os.time() * 1000 + (thread_no or 0) * 7919 + math.floor(os.clock() * 1e6))
end

function request()
  local tp = "00-" .. nonzero_hex(32) .. "-" .. nonzero_hex(16) .. "-01"
  return wrk.format("GET", nil, { ["traceparent"] = tp })
end

function delay()
  if delay_ms <= 0 then return 0 end
  local lo = math.floor(delay_ms)
  if math.random() < delay_ms - lo then return lo + 1 end
  return lo
end

function done(summary, latency, requests)
  local e = summary.errors
  print(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"errors_connect":%d,' ..
    '"errors_read":%d,"errors_write":%d,"errors_status":%d,"errors_timeout":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f}',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
