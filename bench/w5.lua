-- W5: many users and chats at once. Each request picks one of this wrk thread's users
-- and one of their chats at random; BENCH_WRITE_SHARE of the requests (0.2) append one
-- message, the others read the chat's newest page (?limit=100&before=<large id>).
--
-- Environment: BENCH_USERS_FILE (one "user token chat chat chat chat" line per user,
-- written by run.sh), BENCH_THREADS (wrk's -t; thread i of n takes users i, i+n, ...),
-- BENCH_WRITE_SHARE (optional).
local common = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

local users_file = common.env("BENCH_USERS_FILE")
local thread_count = tonumber(common.env("BENCH_THREADS"))
local write_share = tonumber(common.env("BENCH_WRITE_SHARE", "0.2"))
local read_query = "?limit=100&before=9223372036854775807"
local body = common.single_body()

-- Main state: number the threads and keep them for done().
local threads = {}

function setup(thread)
   thread:set("thread_index", #threads)
   threads[#threads + 1] = thread
end

-- Thread state.
local mine = {}
reads, writes = 0, 0

function init(args)
   local index = 0
   for line in io.lines(users_file) do
      local fields = {}
      for field in line:gmatch("%S+") do fields[#fields + 1] = field end
      if #fields >= 3 and index % thread_count == thread_index then
         local chats = {}
         for i = 3, #fields do chats[#chats + 1] = fields[i] end
         mine[#mine + 1] = {
            user = fields[1],
            chats = chats,
            get_headers = common.headers(fields[2], false),
            post_headers = common.headers(fields[2], true),
         }
      end
      index = index + 1
   end
   if #mine == 0 then error("bench: no users for wrk thread " .. thread_index) end
   math.randomseed(os.time() * 1000 + thread_index)
end

function request()
   local user = mine[math.random(#mine)]
   local path = common.messages_path(user.user, user.chats[math.random(#user.chats)])
   if math.random() < write_share then
      writes = writes + 1
      return wrk.format("POST", path, user.post_headers, body)
   end
   reads = reads + 1
   return wrk.format("GET", path .. read_query, user.get_headers, nil)
end

function done(summary, latency, requests)
   local total_reads, total_writes = 0, 0
   for _, thread in ipairs(threads) do
      total_reads = total_reads + (thread:get("reads") or 0)
      total_writes = total_writes + (thread:get("writes") or 0)
   end
   common.report(summary, latency, { reads = total_reads, writes = total_writes })
end
