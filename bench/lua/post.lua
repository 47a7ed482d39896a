-- wrk script: POST a chat completion request of BENCH_BODY_BYTES (1024)
-- bytes to BENCH_PATH (/v1/slow/chat/completions), byte for byte the body
-- bench/benchutil.h's bu_chat_body() makes. done() prints one JSON line that
-- bench/run reads: {"requests","seconds","rate","non2xx","errors",
-- "p50_ms","p90_ms","p99_ms","max_ms"}; rate counts 2xx answers only.
local bytes = tonumber(os.getenv("BENCH_BODY_BYTES") or "1024")
local head = '{"model":"load-test","messages":[{"role":"user","content":"'
local tail = '"}]}'
local pad = "abcdefgh "
local parts = {}
for i = #head, bytes - #tail - 1 do
  local k = i % 9 + 1
  parts[#parts + 1] = pad:sub(k, k)
end

wrk.method = "POST"
wrk.path = os.getenv("BENCH_PATH") or "/v1/slow/chat/completions"
wrk.headers["Content-Type"] = "application/json"
wrk.body = head .. table.concat(parts) .. tail

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
