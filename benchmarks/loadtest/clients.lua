-- wrk script of the load test: each request names one client in X-Client,
-- drawn at random among LT_CLIENTS clients named LT_PREFIX<n> (a single
-- client when LT_CLIENTS is 1). done() prints one line of JSON: status
-- counts over every thread, latency percentiles, socket errors.
local prefix = os.getenv("LT_PREFIX") or "client"
local clients = tonumber(os.getenv("LT_CLIENTS") or "1000")
local path = os.getenv("LT_PATH") or "/api/calls"
local threads = {}
local next_id = 1

function setup(thread)
    thread:set("id", next_id)
    next_id = next_id + 1
    table.insert(threads, thread)
end

function init(args)
    statuses = {}
    math.randomseed(id * 7919 + os.time())
end

function request()
    local client = prefix .. math.random(clients)
    return wrk.format("GET", path, { ["X-Client"] = client, ["X-Tenant"] = "all" })
end

function response(status, headers, body)
    statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
    local total = {}
    for _, thread in ipairs(threads) do
        for status, count in pairs(thread:get("statuses")) do
            total[status] = (total[status] or 0) + count
        end
    end
    local parts = {}
    for status, count in pairs(total) do
        table.insert(parts, string.format('"%d":%d', status, count))
    end
    local e = summary.errors
    io.write(string.format(
        'LOADTEST {"requests":%d,"duration_us":%d,"statuses":{%s},' ..
        '"errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},' ..
        '"latency_us":{"p50":%d,"p99":%d,"p999":%d,"max":%d}}\n',
        summary.requests, summary.duration, table.concat(parts, ","),
        e.connect, e.read, e.write, e.timeout,
        latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max))
end
