-- wrk script: POST heartbeats with pre-issued viewer tickets (TICKETS file: "issueId ticket"
-- per line), each thread walking the list from its own offset. DELAY_MS (optional) paces each
-- connection, for runs at a chosen rate. done() (summary.lua) prints one JSON line for scripts/bench.
local tickets = {}
local threads = {}
local thread_count = 0

function setup(thread)
  thread:set("offset", thread_count)
  thread_count = thread_count + 1
  table.insert(threads, thread)
end

-- Requests are formatted once in init(): formatting each one in Lua cost the generator more
-- CPU than the server's trivial route does, on cores it shares with the server.
function init(args)
  for line in io.lines(os.getenv("TICKETS")) do
    local issue, ticket = line:match("^(%S+) (%S+)$")
    if issue then
      tickets[#tickets + 1] = wrk.format("POST", "/api/issues/" .. issue .. "/heartbeat",
        { ["Authorization"] = "Ticket " .. ticket, ["Content-Length"] = "0" }, nil)
    end
  end
  index = (offset * 7919) % #tickets
  delay_ms = tonumber(os.getenv("DELAY_MS") or "0")
end

function request()
  index = index % #tickets + 1
  return tickets[index]
end

function delay()
  return delay_ms
end

dofile("scripts/benchmark/summary.lua")
