-- wrk script: POST one pre-generated body file over and over, and print the figures as JSON.
-- Set by bench/load.py through the environment:
--   BENCH_BODY_FILE, BENCH_CONTENT_TYPE, BENCH_CONTENT_ENCODING (optional), BENCH_PATH.
local f = assert(io.open(os.getenv("BENCH_BODY_FILE"), "rb"))
wrk.body = f:read("*a")
f:close()
wrk.method = "POST"
wrk.path = os.getenv("BENCH_PATH") or "/v1/facts"
wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE")
local encoding = os.getenv("BENCH_CONTENT_ENCODING")
if encoding and encoding ~= "" then
  wrk.headers["Content-Encoding"] = encoding
end

-- With BENCH_TRACK=1 (batch bodies: few requests/s, so a Lua call per answer costs
-- nothing measurable) each thread records when it started and when its last 2xx came. The
-- rate is then completed answers over that window, which does not count the requests still
-- in flight when wrk stops: with answers that take a second, a plain "requests / duration"
-- would undercount a slow server by up to half a latency per connection.
local threads = {}
local track = os.getenv("BENCH_TRACK") == "1"

setup = function(thread)
  table.insert(threads, thread)
end

if track then
  local ffi = require("ffi")
  ffi.cdef[[
    typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
    int clock_gettime(int clk_id, bench_timespec *tp);
  ]]
  local ts = ffi.new("bench_timespec")
  local function now_us()
    ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC
    return tonumber(ts.tv_sec) * 1000000 + tonumber(ts.tv_nsec) / 1000
  end
  init = function(args)
    started_us = now_us()
    last_ok_us = 0
    ok = 0
  end
  response = function(status, headers, body)
    if status >= 200 and status < 300 then
      ok = ok + 1
      last_ok_us = now_us()
    end
  end
end

done = function(summary, latency, requests)
  local tracked_ok, first_us, last_us = 0, nil, 0
  if track then
    for _, thread in ipairs(threads) do
      tracked_ok = tracked_ok + thread:get("ok")
      local s = thread:get("started_us")
      if first_us == nil or s < first_us then first_us = s end
      local l = thread:get("last_ok_us")
      if l > last_us then last_us = l end
    end
  end
  local window_us = (first_us and last_us > first_us) and (last_us - first_us) or 0
  io.write(string.format('BENCH_TRACK {"tracked_ok":%d,"window_us":%d}\n', tracked_ok, window_us))
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes_read":%d,' ..
    '"errors_connect":%d,"errors_read":%d,"errors_write":%d,"errors_status":%d,' ..
    '"errors_timeout":%d,"latency_p50_us":%d,"latency_p90_us":%d,"latency_p99_us":%d,' ..
    '"latency_max_us":%d,"latency_mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
