-- W4: the newest 100 messages of a large chat, GET ...?limit=100&before=BENCH_BEFORE.
-- Environment: BENCH_USER, BENCH_TOKEN, BENCH_CHAT, BENCH_BEFORE (an id above the
-- chat's newest).
local common = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

common.fixed_request(
   "GET",
   common.messages_path(common.env("BENCH_USER"), common.env("BENCH_CHAT"))
      .. "?limit=100&before=" .. common.env("BENCH_BEFORE"),
   common.headers(common.env("BENCH_TOKEN"), false),
   nil
)

function done(summary, latency, requests)
   common.report(summary, latency)
end
