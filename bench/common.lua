-- Shared by the wrk scripts of bench/run.sh: the message text every workload sends,
-- the request path and headers, and a done() that prints the run as one JSON line
-- (prefixed "BENCH_JSON ") for bench/report.py.
--
-- Each script loads it with dofile(), from $BENCH_LUA_DIR (run.sh sets it).

local M = {}

-- The same text as bench_sqlite's and bench_echo's default, and as report.py seeds.
M.text = "Benchmark message: the quick brown fox jumps over the lazy dog while the chat store appends it to a conversation."

-- A required environment variable (or its default).
function M.env(name, default)
   local value = os.getenv(name)
   if value == nil or value == "" then
      if default ~= nil then return default end
      error("bench: the environment variable " .. name .. " is not set")
   end
   return value
end

function M.messages_path(user, chat)
   return "/api/users/" .. user .. "/chats/" .. chat .. "/messages"
end

function M.headers(token, json)
   local headers = { ["Cookie"] = "neptun-session=" .. token }
   if json then headers["Content-Type"] = "application/json" end
   return headers
end

-- {"message": TEXT, "actor": "user"}
function M.single_body()
   return '{"message": "' .. M.text .. '", "actor": "user"}'
end

-- {"messages": [{"content": TEXT, "role": "user" | "assistant"} x n]}
function M.batch_body(n)
   local items = {}
   for i = 1, n do
      local role = (i % 2 == 1) and "user" or "assistant"
      items[i] = '{"content": "' .. M.text .. '", "role": "' .. role .. '"}'
   end
   return '{"messages": [' .. table.concat(items, ", ") .. ']}'
end

-- Points wrk's fixed request at path with headers and body (no request() function, so
-- wrk builds the request once and generating load costs as little as possible).
function M.fixed_request(method, path, headers, body)
   wrk.method = method
   wrk.path = path
   for name, value in pairs(headers) do wrk.headers[name] = value end
   wrk.body = body
end

local function encode(value)
   local kind = type(value)
   if kind == "table" then
      local parts = {}
      for k, v in pairs(value) do
         parts[#parts + 1] = string.format("%q", tostring(k)) .. ":" .. encode(v)
      end
      return "{" .. table.concat(parts, ",") .. "}"
   elseif kind == "number" then
      if value ~= value or value == math.huge or value == -math.huge then return "null" end
      return string.format("%.17g", value)
   elseif kind == "boolean" then
      return tostring(value)
   elseif value == nil then
      return "null"
   end
   return string.format("%q", tostring(value))
end

-- Prints wrk's summary, latency percentiles (microseconds) and `extra` as one line.
function M.report(summary, latency, extra)
   local result = {
      requests = summary.requests,
      duration_us = summary.duration,
      bytes = summary.bytes,
      errors = {
         connect = summary.errors.connect,
         read = summary.errors.read,
         write = summary.errors.write,
         -- Responses with a status above 399: wrk's "Non-2xx or 3xx responses".
         status = summary.errors.status,
         timeout = summary.errors.timeout,
      },
      latency_us = {
         mean = latency.mean,
         stdev = latency.stdev,
         p50 = latency:percentile(50),
         p90 = latency:percentile(90),
         p99 = latency:percentile(99),
         p999 = latency:percentile(99.9),
         max = latency.max,
      },
      extra = extra or {},
   }
   io.write("BENCH_JSON ", encode(result), "\n")
end

return M
