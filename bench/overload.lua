-- Overload check (W1 at concurrency 1024): single-message POSTs, counting every
-- response's status and the 503s that come without Retry-After. The response() hook
-- costs throughput, so only this check uses it.
-- Environment: BENCH_USER, BENCH_TOKEN, BENCH_CHAT.
local common = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

common.fixed_request(
   "POST",
   common.messages_path(common.env("BENCH_USER"), common.env("BENCH_CHAT")),
   common.headers(common.env("BENCH_TOKEN"), true),
   common.single_body()
)

local threads = {}

function setup(thread)
   threads[#threads + 1] = thread
end

statuses = {}
unavailable_without_retry_after = 0

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
   if status == 503 and headers["retry-after"] == nil and headers["Retry-After"] == nil then
      unavailable_without_retry_after = unavailable_without_retry_after + 1
   end
end

function done(summary, latency, requests)
   local all, missing = {}, 0
   for _, thread in ipairs(threads) do
      for status, count in pairs(thread:get("statuses") or {}) do
         all[tostring(status)] = (all[tostring(status)] or 0) + count
      end
      missing = missing + (thread:get("unavailable_without_retry_after") or 0)
   end
   common.report(summary, latency, { statuses = all, unavailable_without_retry_after = missing })
end
