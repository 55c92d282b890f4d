-- wrk script for the trivial-route baseline: same generator, same JSON summary as heartbeat.lua.
dofile("scripts/benchmark/summary.lua")
