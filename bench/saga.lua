-- wrk script: submit one 2-step saga per request, wait_result on, each with a unique gid.
--
--   wrk -t1 -c16 -d10s --latency -s bench/saga.lua http://127.0.0.1:21789 -- PREFIX [BRANCH_URL]
--
-- PREFIX makes gids unique across runs against one server (gid = PREFIX-THREAD-COUNTER).
-- BRANCH_URL is the action and compensate URL of both steps; empty or absent means empty URLs,
-- which DTM treats as branches that succeed at once (upstream's benchEmptyUrl).
-- Any answer other than 200 counts as an error; done() prints one parseable line:
--   RESULT requests=N ok=N non200=N socket_errors=N duration_s=F rps=F ok_rps=F p50_ms=F p99_ms=F
-- and the first bad answer, if any, on a line starting with FIRST_BAD.

local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

local prefix, branch_url
local counter = 0
non200 = 0
first_bad = ""

-- Escapes what a URL or gid prefix could hold for a JSON string (no control characters).
local function json_escape(s)
  return (s:gsub('\\', '\\\\'):gsub('"', '\\"'))
end

local body_head, body_tail

function init(args)
  prefix = args[1] or ("bench-" .. os.time())
  branch_url = args[2] or ""
  local url = '"' .. json_escape(branch_url) .. '"'
  local step = '{"action":' .. url .. ',"compensate":' .. url .. '}'
  body_head = '{"gid":"' .. json_escape(prefix) .. "-" .. id .. "-"
  body_tail = '","trans_type":"saga","wait_result":true,"steps":[' .. step .. ',' .. step ..
    '],"payloads":["{}","{}"]}'
  wrk.method = "POST"
  wrk.path = "/api/dtmsvr/submit"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  counter = counter + 1
  return wrk.format(nil, nil, nil, body_head .. counter .. body_tail)
end

function response(status, headers, body)
  if status ~= 200 then
    non200 = non200 + 1
    if first_bad == "" then
      first_bad = status .. " " .. string.sub(body or "", 1, 300)
    end
  end
end

function done(summary, latency, requests)
  local bad, first = 0, ""
  for _, t in ipairs(threads) do
    bad = bad + (t:get("non200") or 0)
    local fb = t:get("first_bad") or ""
    if first == "" and fb ~= "" then
      first = fb
    end
  end
  local e = summary.errors
  local socket_errors = e.connect + e.read + e.write + e.timeout
  local seconds = summary.duration / 1e6
  local ok = summary.requests - bad
  -- Requests that timed out on the socket never got an answer, so they are not in requests.
  io.write(string.format(
    "RESULT requests=%d ok=%d non200=%d socket_errors=%d duration_s=%.3f rps=%.1f ok_rps=%.1f "
      .. "p50_ms=%.3f p99_ms=%.3f\n",
    summary.requests, ok, bad, socket_errors, seconds, summary.requests / seconds, ok / seconds,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
  if first ~= "" then
    io.write("FIRST_BAD " .. first:gsub("\n", " ") .. "\n")
  end
end
