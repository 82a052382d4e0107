-- wrk: what an <audio> element asks of a library (bench/media.sh), over
-- nine files: `bytes=0-` at tune-in (a third of the requests), `bytes=N-`
-- after a seek into the middle (a third), and 256 KiB windows `bytes=N-M`
-- as a player reading ahead asks for them (a third).
local files = { "long.mp3" }
for i = 1, 8 do files[#files + 1] = "t" .. i .. ".mp3" end
-- Sizes are not known to wrk; offsets stay within the 30 s files' 480 KB.
local span = 400000
local n = 0

function setup(thread)
  thread:set("seed", math.random(1, 1e9))
end

function init(args)
  math.randomseed(seed or 1)
end

function request()
  n = n + 1
  local path = "/media/" .. files[math.random(#files)]
  local kind = n % 3
  local range
  if kind == 0 then
    range = "bytes=0-"
  elseif kind == 1 then
    range = string.format("bytes=%d-", math.random(0, span))
  else
    local from = math.random(0, span)
    range = string.format("bytes=%d-%d", from, from + 262143)
  end
  return wrk.format("GET", path, { ["Range"] = range })
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'JSON {"bytes":%d,"requests":%d,"seconds":%f,"errors":%d,"non2xx":%d,"p99_ms":%f}\n',
    summary.bytes, summary.requests, summary.duration / 1e6,
    e.connect + e.read + e.write + e.timeout, e.status, latency:percentile(99) / 1000))
end
