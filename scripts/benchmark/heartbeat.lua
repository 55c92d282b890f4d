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

function init(args)
  for line in io.lines(os.getenv("TICKETS")) do
    local issue, ticket = line:match("^(%S+) (%S+)$")
    if issue then tickets[#tickets + 1] = { "/api/issues/" .. issue .. "/heartbeat", "Ticket " .. ticket } end
  end
  index = (offset * 7919) % #tickets
  delay_ms = tonumber(os.getenv("DELAY_MS") or "0")
end

function request()
  index = index % #tickets + 1
  local entry = tickets[index]
  return wrk.format("POST", entry[1], { ["Authorization"] = entry[2], ["Content-Length"] = "0" }, nil)
end

function delay()
  return delay_ms
end

dofile("scripts/benchmark/summary.lua")
