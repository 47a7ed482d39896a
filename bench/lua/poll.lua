-- wrk script: GET /v1/generation/{id} for ids picked at random from the file
-- BENCH_IDS (one per line, written by bench/bulkload --ids), each connection
-- waiting BENCH_POLL_DELAY_MS (10) between its requests, so a few connections
-- make a light, steady poll load beside the submit load. wrk times a request
-- from its first byte written, so the delay is not in the latency.
-- done() prints the same JSON line as post.lua.
local ids = {}
local path = os.getenv("BENCH_IDS")
if path then
  for line in io.lines(path) do
    if #line > 0 then ids[#ids + 1] = line end
  end
end
local pause = tonumber(os.getenv("BENCH_POLL_DELAY_MS") or "10")

function setup(thread)
  thread:set("seed", math.random(1, 1e9))
end

function init(args)
  math.randomseed((seed or 1) + os.time())
end

function delay()
  return pause
end

function request()
  local id = ids[math.random(1, #ids)]
  return wrk.format("GET", "/v1/generation/" .. id)
end

function done(summary, latency, requests)
  local e = summary.errors
  local secs = summary.duration / 1e6
  local ok = summary.requests - e.status
  io.write(string.format(
    '{"requests":%d,"seconds":%.3f,"rate":%.0f,"non2xx":%d,"errors":%d,' ..
    '"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f}\n',
    summary.requests, secs, ok / secs, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000))
end
