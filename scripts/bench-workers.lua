-- wrk script: counts responses per worker (the x-worker header) and prints them at the end as
-- "WORKERS pid=count pid=count ...", for the benchmark's balance figures.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  counts = {}
end

function response(status, headers, body)
  local w = headers["x-worker"] or "none"
  counts[w] = (counts[w] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    local c = thread:get("counts")
    for w, n in pairs(c) do total[w] = (total[w] or 0) + n end
  end
  local out = "WORKERS"
  for w, n in pairs(total) do out = out .. " " .. w .. "=" .. n end
  print(out)
end
