-- wrk: GET of one whole 4.8 MB file on every request (bench/media.sh).
wrk.path = "/media/long.mp3"

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'JSON {"bytes":%d,"requests":%d,"seconds":%f,"errors":%d,"non2xx":%d,"p99_ms":%f}\n',
    summary.bytes, summary.requests, summary.duration / 1e6,
    e.connect + e.read + e.write + e.timeout, e.status, latency:percentile(99) / 1000))
end
