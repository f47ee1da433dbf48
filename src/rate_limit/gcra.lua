-- GCRA for several limits at once, all-or-nothing: the arithmetic of gcra.rs `decide`, line by
-- line, on Redis' own clock (so every gateway reads the same time).
--   KEYS[i]        limit i's key
--   ARGV[2i - 1]   its interval (microseconds per request at the sustained rate)
--   ARGV[2i]       its tolerance (interval × (burst − 1))
-- Answers {1, now, tat_1, ..., tat_n} when every limit allows (and stores the new TATs), or
-- {0, i, wait} when limit i refuses (and stores nothing). Times are integer microseconds, exact
-- in Lua's doubles (below 2^53).
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local tats = {}
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i - 1])
  local tolerance = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then
    tat = now
  end
  local allowed_from = tat - tolerance
  if now < allowed_from then
    return {0, i, allowed_from - now}
  end
  tats[i] = tat + interval
end
local answer = {1, now}
for i = 1, #KEYS do
  -- Kept until the key is full again, then it expires by itself. Formatted, because Lua's
  -- default number-to-string conversion keeps only 14 digits.
  local ttl_ms = math.ceil((tats[i] - now) / 1000)
  redis.call('SET', KEYS[i], string.format('%.0f', tats[i]), 'PX', ttl_ms)
  answer[#answer + 1] = tats[i]
end
return answer
