-- wrk script for the heartbeat benchmark. `-- <keys-file> <mode> <threads> [<pause-ms>]`:
-- mode "heartbeat" posts a valid heartbeat, each request from the next tenant of the
-- keys file (each thread starts at its own offset); mode "trivial" GETs the path as it
-- is. heartbeat_paced.lua adds the pause: each connection waits that long before its
-- next request. done() prints one JSON line the bench parses.
local threads = {}
local counter = 0

function setup(thread)
  thread:set("index", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

local requests_list = {}
local position = 1
pause_ms = 0

local body = '{"disk_percent": 41.5, "memory_percent": 63.2, "load": 0.42, "uptime_seconds": 86400, ' ..
  '"containers": [' ..
  '{"name": "nginx", "state": "running", "health": "healthy"}, ' ..
  '{"name": "postgres", "state": "running", "health": "healthy"}, ' ..
  '{"name": "redis", "state": "running", "health": null}, ' ..
  '{"name": "openclaw", "state": "running", "health": "healthy"}, ' ..
  '{"name": "safety-wrapper", "state": "running", "health": "healthy"}, ' ..
  '{"name": "secrets-proxy", "state": "running", "health": "healthy"}, ' ..
  '{"name": "nextcloud", "state": "running", "health": "healthy"}, ' ..
  '{"name": "gitea", "state": "running", "health": null}], ' ..
  '"versions": {"agent": "1.4.2", "openclaw": "2.3.0", "safety-wrapper": "1.1.0", "secrets-proxy": "0.9.4"}, ' ..
  '"tls_expires_at": "2027-01-01T00:00:00Z"}'

function init(args)
  local path = args[1]
  local mode = args[2] or "heartbeat"
  pause_ms = tonumber(args[4] or "0")
  if mode ~= "heartbeat" then
    requests_list = { wrk.format("GET", nil, nil, nil) }
    return
  end
  for line in io.lines(path) do
    local key = line:match("^%d+%s+(%S+)")
    if key then
      table.insert(requests_list, wrk.format("POST", nil, {
        ["Authorization"] = "Bearer " .. key,
        ["Content-Type"] = "application/json",
      }, body))
    end
  end
  local count = #requests_list
  local threads_total = tonumber(args[3] or "1")
  position = math.floor(count * (index or 0) / threads_total) + 1
end

function request()
  local req = requests_list[position]
  position = position + 1
  if position > #requests_list then position = 1 end
  return req
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
