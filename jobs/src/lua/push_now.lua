-- Pushes one task to run now, straight onto the active list. Runs inside MULTI/EXEC, right
-- after the HSETNX that stored the task's payload: the payload never passes through Lua (Redis
-- copied a 34 kB batch into a Lua string and back, a third of its time per push, see
-- docs/decisions.md "Ingestion hot path").
--
-- apalis-redis 1.0.0's batch_push.lua (its push_tasks) stamps every task with run_at >= now and
-- so puts every task into the scheduled set; each fetch then promotes all due ones with a single
-- Lua unpack(), which fails ("too many results to unpack") once about 8,000 are due: a backlog
-- after an outage would stop every worker. This script writes the same metadata as
-- batch_push.lua does for an unscheduled task (rpush onto the active list, signal), so the
-- scheduled set only ever holds delayed tasks and retries. docs/apalis.md, "Pushing".
--
-- A task whose metadata already exists was pushed before (a retried push): nothing changes.
--
-- KEYS[1]: the metadata prefix     KEYS[2]: the active task list    KEYS[3]: the signal list
-- KEYS[4] (optional): a counter to increment when the task is new (kept an hour): the session's
--   ingestion jobs not yet persisted, counted here so a retried push never counts twice
-- ARGV[1]: task id   ARGV[2]: attempts   ARGV[3]: max attempts   ARGV[4]: metadata JSON
-- ARGV[5]: "1" to publish an availability event
local meta_key = KEYS[1] .. ":" .. ARGV[1]
if redis.call("exists", meta_key) == 1 then
    return 0
end
local meta = {"attempts", tonumber(ARGV[2]), "max_attempts", tonumber(ARGV[3]), "status", "Pending",
              "idempotency_key", ""}
if ARGV[4] and #ARGV[4] > 2 then
    local ok, decoded = pcall(cjson.decode, ARGV[4])
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
redis.call("hset", meta_key, unpack(meta))
redis.call("rpush", KEYS[2], ARGV[1])
if ARGV[5] == "1" then
    redis.call("publish", "tasks:" .. KEYS[2] .. ":available", ARGV[1])
end
redis.call("del", KEYS[3])
redis.call("lpush", KEYS[3], 1)
if KEYS[4] then
    redis.call("incr", KEYS[4])
    redis.call("expire", KEYS[4], 3600)
end
return 1
