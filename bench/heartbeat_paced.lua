-- heartbeat.lua at a set pace: each connection waits pause_ms (the fourth argument)
-- before each request. wrk sends every request through a timer once a script has
-- delay(), so the unpaced runs keep a script without it.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "heartbeat.lua")

function delay()
  return pause_ms
end
