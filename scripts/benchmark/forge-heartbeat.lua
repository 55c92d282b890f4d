-- wrk script: POST Forge heartbeats as Forge Remote delivers them: the invocation token as
-- Bearer, the system token in x-forge-oauth-system, the viewer's user token in
-- x-forge-oauth-user (the app asks Jira once per viewer and issue whether they may see it,
-- then keeps the answer), {"tabId": …} as the body. FORGE_TOKENS holds
-- "tabId token systemToken userToken" per line; each thread walks the list from its own offset.
-- done() (summary.lua) prints one JSON line for scripts/bench.
local requests = {}
local thread_count = 0

function setup(thread)
  thread:set("offset", thread_count)
  thread_count = thread_count + 1
end

-- Formatted once in init(), as heartbeat.lua does: the generator shares the server's cores.
function init(args)
  for line in io.lines(os.getenv("FORGE_TOKENS")) do
    local tab, token, system, user = line:match("^(%S+) (%S+) (%S+) (%S+)$")
    if tab then
      local body = '{"tabId":"' .. tab .. '"}'
      requests[#requests + 1] = wrk.format("POST", "/forge/heartbeat", {
        ["Authorization"] = "Bearer " .. token,
        ["x-forge-oauth-system"] = system,
        ["x-forge-oauth-user"] = user,
        ["Content-Type"] = "application/json",
        ["Content-Length"] = tostring(#body),
      }, body)
    end
  end
  index = (offset * 7919) % #requests
end

function request()
  index = index % #requests + 1
  return requests[index]
end

dofile("scripts/benchmark/summary.lua")
