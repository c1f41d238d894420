-- wrk script shared by every scenario (bench/loadgen.py writes the data file).
--   BENCH_DATA     a Lua file returning { {method, path, {headers}, body-or-nil}, ... }
--   BENCH_OUT      where done() writes the summary as JSON
--   BENCH_RATE     optional: total requests per second, paced on a fixed schedule
--   BENCH_THREADS  wrk's -t (to split BENCH_RATE between threads)
-- Each thread rotates through the requests from its own offset. With BENCH_RATE the
-- schedule is fixed (a late answer does not push the next send back), but latency is
-- measured from the actual send: no coordinated-omission correction as in wrk2.

local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local counter = 1
local threads = {}

function setup(thread)
  thread:set("tid", counter)
  table.insert(threads, thread)
  counter = counter + 1
end

local requests, index, interval, next_at

function init(args)
  local data = dofile(os.getenv("BENCH_DATA"))
  requests = {}
  for i, r in ipairs(data) do
    requests[i] = wrk.format(r[1], r[2], r[3], r[4])
  end
  local nthreads = tonumber(os.getenv("BENCH_THREADS") or "1")
  index = ((tid - 1) * math.floor(#requests / nthreads)) % #requests
  local rate = tonumber(os.getenv("BENCH_RATE") or "0")
  if rate > 0 then
    interval = 1000.0 * nthreads / rate
  end
end

function request()
  index = index % #requests + 1
  return requests[index]
end

if os.getenv("BENCH_RATE") and tonumber(os.getenv("BENCH_RATE")) > 0 then
  function delay()
    local now = now_ms()
    if next_at == nil then next_at = now end
    next_at = next_at + interval
    local wait = next_at - now
    if wait < 0 then return 0 end
    return wait
  end
end

function done(summary, latency, requests_)
  local e = summary.errors
  local f = assert(io.open(os.getenv("BENCH_OUT"), "w"))
  f:write(string.format(
    '{"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"p50": %d, "p90": %d, "p95": %d, "p99": %d, "max": %d, "mean": %.1f}}',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(95),
    latency:percentile(99), latency.max, latency.mean))
  f:close()
end
