-- wrk script: replay pre-signed Shopify orders/create deliveries (one line
-- each: "signature<TAB>webhook id<TAB>body"), each thread taking every Nth
-- line so no delivery is sent twice.  Args: FILE NTHREADS SHOP_DOMAIN.
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
  local domain = args[3] or "bench.myshopify.com"
  local k = 0
  for line in f:lines() do
    if k % step == tid then
      local sig, id, body = line:match("([^\t]+)\t([^\t]+)\t(.*)")
      n = n + 1
      reqs[n] = wrk.format("POST", nil, {
        ["X-Shopify-Hmac-Sha256"] = sig,
        ["X-Shopify-Webhook-Id"] = id,
        ["X-Shopify-Topic"] = "orders/create",
        ["X-Shopify-Shop-Domain"] = domain,
        ["Content-Type"] = "application/json"}, body)
    end
    k = k + 1
  end
  f:close()
end
function request()
  i = i % n + 1
  return reqs[i]
end
