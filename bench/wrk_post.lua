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

done = function(summary, latency, requests)
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
