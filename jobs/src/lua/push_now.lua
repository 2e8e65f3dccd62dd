-- Pushes one task to run now, straight onto the active list.
--
-- apalis-redis 1.0.0's batch_push.lua (its push_tasks) stamps every task with run_at >= now and
-- so puts every task into the scheduled set; each fetch then promotes all due ones with a single
-- Lua unpack(), which fails ("too many results to unpack") once about 8,000 are due: a backlog
-- after an outage would stop every worker. This script writes the same task hash and metadata
-- as batch_push.lua does for an unscheduled task (rpush onto the active list, signal), so the
-- scheduled set only ever holds delayed tasks and retries. docs/apalis.md, "Pushing".
--
-- KEYS[1]: the task data hash      KEYS[2]: the metadata prefix
-- KEYS[3]: the active task list    KEYS[4]: the signal list
-- KEYS[5] (optional): a counter to increment when the task is new (kept an hour): the session's
--   ingestion jobs not yet persisted, counted here so a retried push never counts twice
-- ARGV[1]: task id   ARGV[2]: task data   ARGV[3]: attempts   ARGV[4]: max attempts
-- ARGV[5]: metadata JSON   ARGV[6]: "1" to publish an availability event
local set = redis.call("hsetnx", KEYS[1], ARGV[1], ARGV[2])
if set == 1 then
    local meta = {"attempts", tonumber(ARGV[3]), "max_attempts", tonumber(ARGV[4]), "status", "Pending",
                  "idempotency_key", ""}
    if ARGV[5] and #ARGV[5] > 0 then
        local ok, decoded = pcall(cjson.decode, ARGV[5])
        if ok and type(decoded) == "table" then
            for k, v in pairs(decoded) do
                if type(v) == "table" then
                    v = cjson.encode(v)
                end
                table.insert(meta, k)
                table.insert(meta, tostring(v))
            end
        end
    end
    redis.call("hmset", KEYS[2] .. ":" .. ARGV[1], unpack(meta))
    redis.call("rpush", KEYS[3], ARGV[1])
    if ARGV[6] == "1" then
        redis.call("publish", "tasks:" .. KEYS[3] .. ":available", ARGV[1])
    end
    redis.call("del", KEYS[4])
    redis.call("lpush", KEYS[4], 1)
    if KEYS[5] then
        redis.call("incr", KEYS[5])
        redis.call("expire", KEYS[5], 3600)
    end
end
return set
