-- nslab's wrk script: a request count or a duration, answers counted per server, one JSON line.
--
--   wrk -t T -c C -d CEILING -s wrk_report.lua URL COUNT SECONDS PROGRESS T C/T
--
-- COUNT > 0: the threads share COUNT requests; SECONDS > 0: each thread sends for SECONDS
-- seconds. Either way a thread that is done sends no more requests (a connection that would
-- carry one gets an empty request: nothing is written, so the server sees no request), waits for
-- the answers still in flight, stops its event loop and writes "nslab-done ID" to stderr; the
-- launcher then ends wrk with SIGINT (its main thread sleeps until CEILING otherwise). So exactly
-- COUNT requests are sent, and none is abandoned in flight; a thread whose request was lost to an
-- error ends once all its connections are idle. Without keep-alive each of the C connections ends
-- as a fresh one that carried nothing (wrk reconnects as soon as an answer says "Connection: close"),
-- and a director counts those C too.
-- PROGRESS=1: "nslab-progress ID ANSWERED" on stderr about 4 times a second per thread.
--
-- The answers are counted per server: the X-Served-By header, else the body's first line (the
-- built-in http app answers with its node's name). done() prints one JSON line on stdout:
-- {"nslab_wrk": 1, "requests", "answered", "ok" (status < 400), "in_time" (ok within SECONDS),
-- "by_server", "errors": {connect, read, write, status, timeout}, "latency_ms": {p50, p90, p99, max},
-- "duration_s", "bytes"}.

-- Before it starts, wrk tests the target with a connection of its own. To a service's VIP that is one
-- more connection the director schedules and counts, so the launcher may leave the test out.
if os.getenv("NSLAB_WRK_NO_PROBE") == "1" then
   function wrk.resolve(host, service)
      wrk.addrs = wrk.lookup(host, service)
   end
end

local ffi_ok, ffi = pcall(require, "ffi")
local clock
if ffi_ok then
   ffi.cdef [[
      typedef struct { long tv_sec; long tv_nsec; } nslab_timespec;
      int clock_gettime(int clk_id, nslab_timespec *tp);
   ]]
   local ts = ffi.new("nslab_timespec")
   clock = function()
      ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
      return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
   end
else
   clock = os.time -- whole seconds: a duration run then ends on a second boundary
end

-- main state: one entry per thread, read back in done()
local threads = {}

function setup(thread)
   threads[#threads + 1] = thread
   thread:set("id", #threads)
end

-- thread state; the globals are read back by done() through thread:get
local req, share, seconds, progress, conns = nil, 0, 0, false, 1
local issued, idle, deadline, shown, phantom = 0, 0, nil, 0, false
answered, ok, in_time, first, last, stopped, by_server = 0, 0, 0, nil, nil, false, {}

function init(args)
   local count, nthreads = tonumber(args[1]) or 0, tonumber(args[4]) or 1
   seconds = tonumber(args[2]) or 0
   progress = args[3] == "1"
   conns = tonumber(args[5]) or 1
   if count > 0 then -- this thread's share of the count: the first (count % threads) take one more
      share = math.floor(count / nthreads) + ((id <= count % nthreads) and 1 or 0)
   end
   req = wrk.format()
   -- wrk calls request() once on the first thread's state to check the request it builds, before
   -- the thread runs: that call sends nothing and must not count.
   phantom = (id == 1)
end

local function finished()
   if share > 0 then
      return issued >= share
   end
   return deadline ~= nil and clock() >= deadline
end

local function finish()
   if not stopped then
      stopped = true
      last = clock()
      io.stderr:write(string.format("nslab-done %d %d\n", id, answered))
      io.stderr:flush()
      wrk.thread:stop()
   end
end

function request()
   if phantom then
      phantom = false
      return req
   end
   if first == nil then
      first = clock()
      if seconds > 0 then deadline = first + seconds end
   end
   if stopped or finished() then
      -- This connection stays idle. Once every connection of the thread is idle (a request lost
      -- to an error is never answered) or every request is answered, the thread is done.
      idle = idle + 1
      if idle >= conns or answered >= issued then finish() end
      return ""
   end
   issued = issued + 1
   return req
end

function response(status, headers, body)
   answered = answered + 1
   if status < 400 then
      ok = ok + 1
      if deadline and clock() < deadline then in_time = in_time + 1 end
      local server = headers["X-Served-By"] or headers["x-served-by"]
      if server == nil then
         server = string.sub(string.match(body, "^%s*([^\r\n]*)") or "?", 1, 64)
      end
      by_server[server] = (by_server[server] or 0) + 1
   end
   if progress and answered % 8 == 0 then
      local now = clock()
      if now - shown >= 0.25 then
         shown = now
         io.stderr:write(string.format("nslab-progress %d %d\n", id, answered))
      end
   end
   if finished() and answered >= issued then finish() end
end

-- main state again
local function quote(s)
   s = string.gsub(tostring(s), '[%c"\\]', function(c) return string.format("\\u%04x", string.byte(c)) end)
   return '"' .. s .. '"'
end

local function ms(us)
   return string.format("%.3f", us / 1000)
end

function done(summary, latency, requests)
   local by, n_answered, n_ok, n_in_time, t0, t1 = {}, 0, 0, 0, nil, nil
   for _, t in ipairs(threads) do
      for server, n in pairs(t:get("by_server") or {}) do
         by[server] = (by[server] or 0) + n
      end
      n_answered = n_answered + (t:get("answered") or 0)
      n_ok = n_ok + (t:get("ok") or 0)
      n_in_time = n_in_time + (t:get("in_time") or 0)
      local f, l = t:get("first"), t:get("last")
      if f and (t0 == nil or f < t0) then t0 = f end
      if l and (t1 == nil or l > t1) then t1 = l end
   end
   -- a thread that was stopped by wrk itself (the ceiling) has no `last`: then wrk's own runtime
   local duration = summary.duration / 1e6
   if t0 and t1 and #threads > 0 then
      local all = true
      for _, t in ipairs(threads) do
         if not t:get("stopped") then all = false end
      end
      if all then duration = t1 - t0 end
   end
   local servers = {}
   for server, n in pairs(by) do
      servers[#servers + 1] = quote(server) .. ": " .. n
   end
   local e = summary.errors
   local lat = "null"
   if summary.requests > 0 then
      lat = string.format('{"p50": %s, "p90": %s, "p99": %s, "max": %s}', ms(latency:percentile(50)),
         ms(latency:percentile(90)), ms(latency:percentile(99)), ms(latency.max))
   end
   io.write(string.format('{"nslab_wrk": 1, "requests": %d, "answered": %d, "ok": %d, "in_time": %d, "by_server": {%s}, '
      .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
      .. '"latency_ms": %s, "duration_s": %.4f, "bytes": %d}\n',
      summary.requests, n_answered, n_ok, n_in_time, table.concat(servers, ", "), e.connect, e.read, e.write, e.status,
      e.timeout, lat, duration, summary.bytes))
   io.flush()
end
