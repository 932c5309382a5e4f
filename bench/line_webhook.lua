-- wrk script: replay pre-signed LINE webhook deliveries (one line each:
-- "signature<TAB>body"), each thread taking every Nth line so no event id
-- is sent twice.  Args: FILE NTHREADS.
local reqs = {}
local n = 0
local i = 0
local tcount = 0
function setup(thread)
  thread:set("tid", tcount)
  tcount = tcount + 1
end
function init(args)
  local f = io.open(args[1])
  local step = tonumber(args[2] or "2")
  local k = 0
  for line in f:lines() do
    if k % step == tid then
      local sig, body = line:match("([^\t]+)\t(.*)")
      n = n + 1
      reqs[n] = wrk.format("POST", nil, {["x-line-signature"] = sig, ["Content-Type"] = "application/json"}, body)
    end
    k = k + 1
  end
  f:close()
end
function request()
  i = i % n + 1
  return reqs[i]
end
