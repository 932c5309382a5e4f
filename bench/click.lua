-- wrk script: GET personalised /c/{token} paths (one per line), each
-- thread starting at its own offset and cycling through the whole file,
-- so every link and every friend is clicked.  Args: FILE.
local paths = {}
local n = 0
local i = 0
local tcount = 0
function setup(thread)
  thread:set("tid", tcount)
  tcount = tcount + 1
end
function init(args)
  local f = assert(io.open(args[1]))
  for line in f:lines() do
    if #line > 0 then
      n = n + 1
      paths[n] = wrk.format("GET", line, {["User-Agent"] = "wrk-click-bench"})
    end
  end
  f:close()
  i = (tid or 0) * math.floor(n / 2)
end
function request()
  i = i % n + 1
  return paths[i]
end
