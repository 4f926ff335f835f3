-- wrk script used by bench/bench.py: it defines only done(), so wrk's hot path
-- is unchanged, and prints wrk's summary as one JSON line that bench.py parses
-- (wrk's own human-readable report is printed before it and ignored).
-- Latencies are in microseconds, duration_us is wrk's own measured run time.

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests": %.0f, "bytes": %.0f, "duration_us": %.0f, ' ..
    '"errors": {"connect": %.0f, "read": %.0f, "write": %.0f, "status": %.0f, "timeout": %.0f}, ' ..
    '"latency_us": {"p50": %.0f, "p90": %.0f, "p99": %.0f, "max": %.0f, "mean": %.1f}}\n',
    summary.requests, summary.bytes, summary.duration,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
