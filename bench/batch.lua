-- W2 / W3: a batch of BENCH_BATCH messages per request, {"messages": [{"content",
-- "role"}, ...]}, to one chat of one user.
-- Environment: BENCH_USER, BENCH_TOKEN, BENCH_CHAT, BENCH_BATCH.
local common = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

common.fixed_request(
   "POST",
   common.messages_path(common.env("BENCH_USER"), common.env("BENCH_CHAT")),
   common.headers(common.env("BENCH_TOKEN"), true),
   common.batch_body(tonumber(common.env("BENCH_BATCH")))
)

function done(summary, latency, requests)
   common.report(summary, latency)
end
