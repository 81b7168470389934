-- POST one hook request body; print exact latency percentiles as one JSON line when done.
--   WRK_BODY=/path/body.json wrk -t1 -c10 -d10s --latency -s scripts/wrk/post.lua http://127.0.0.1:PORT/cds-services/hip-weakness
-- Optional WRK_LIMIT=N and WRK_DONE=/path: the thread stops after N responses and creates WRK_DONE;
-- the caller then sends wrk SIGINT (wrk's main thread otherwise sleeps for the whole -d duration).
-- Non-2xx answers are counted by wrk as summary.errors.status.

local path = os.getenv("WRK_BODY")
if path == nil then
  error("WRK_BODY is not set")
end
local f = assert(io.open(path, "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"

local limit = tonumber(os.getenv("WRK_LIMIT") or "")
if limit ~= nil then
  local seen = 0
  function response(status, headers, body)
    seen = seen + 1
    if seen == limit then
      wrk.thread:stop()
      local marker = os.getenv("WRK_DONE")
      if marker ~= nil then
        local m = io.open(marker, "w")
        if m ~= nil then
          m:write("done\n")
          m:close()
        end
      end
    end
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f,' ..
    '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean,
    e.connect, e.read, e.write, e.status, e.timeout))
end
