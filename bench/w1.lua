-- W1: one message per request, {"message", "actor"}, to one chat of one user.
-- Environment: BENCH_USER, BENCH_TOKEN, BENCH_CHAT.
local common = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

common.fixed_request(
   "POST",
   common.messages_path(common.env("BENCH_USER"), common.env("BENCH_CHAT")),
   common.headers(common.env("BENCH_TOKEN"), true),
   common.single_body()
)

function done(summary, latency, requests)
   common.report(summary, latency)
end
