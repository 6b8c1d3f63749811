-- POST /predict with raw image bodies, rotating through the files listed (one path a line)
-- in the file named after `--`; with a second argument "form", each file in a multipart/form-data
-- body's `file` field instead (as the README's curl sends it). Requests are built once per thread,
-- so sending costs no Lua work.
-- done() prints one line "BENCH_JSON {...}" that bench/load.py parses.

local bodies = {}
local next_index = 0
local thread_count = 0

function setup(thread)
  -- Threads start at different files, so concurrent requests are not all the same image.
  thread:set("thread_id", thread_count)
  thread_count = thread_count + 1
end

local function content_type(path)
  local lower = path:lower()
  if lower:match("%.png$") then return "image/png" end
  return "image/jpeg"
end

local BOUNDARY = "bench-form-boundary-7d41c3a9"

local function form(path, body)
  local name = path:match("([^/]+)$")
  local payload = "--" .. BOUNDARY .. "\r\n"
    .. 'Content-Disposition: form-data; name="file"; filename="' .. name .. '"\r\n'
    .. "Content-Type: " .. content_type(path) .. "\r\n\r\n"
    .. body .. "\r\n--" .. BOUNDARY .. "--\r\n"
  return { ["Content-Type"] = "multipart/form-data; boundary=" .. BOUNDARY }, payload
end

function init(args)
  local list = assert(io.open(args[1], "r"), "cannot open the file list " .. tostring(args[1]))
  local multipart = args[2] == "form"
  for path in list:lines() do
    if path ~= "" then
      local file = assert(io.open(path, "rb"), "cannot open " .. path)
      local body = file:read("*a")
      file:close()
      local headers = { ["Content-Type"] = content_type(path) }
      if multipart then headers, body = form(path, body) end
      bodies[#bodies + 1] = wrk.format("POST", "/predict", headers, body)
    end
  end
  list:close()
  assert(#bodies > 0, "the file list is empty")
  next_index = (thread_id or 0) * 7 % #bodies
end

function request()
  next_index = next_index % #bodies + 1
  return bodies[next_index]
end

function done(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "connect_errors": %d, "read_errors": %d, '
      .. '"write_errors": %d, "status_errors": %d, "timeouts": %d, "mean_us": %.1f, "p50_us": %d, '
      .. '"p90_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
