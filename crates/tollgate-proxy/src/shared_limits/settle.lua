-- Settle finished requests: move this instance's reservations to actual spend and tokens,
-- and correct token-per-minute limiters by (actual - estimated) tokens.
--
-- KEYS[1]              once-marker key ('' in ARGV[3] = no marker)
-- KEYS[2..ns+1]        account hashes
-- KEYS[ns+2..ns+nc+1]  token rate limiter keys
-- ARGV[1] instance id   ARGV[2] account TTL (ms)   ARGV[3] once-marker TTL (ms, '' = none)
-- ARGV[4] ns   ARGV[5] nc
-- then per settlement: reserved spend, reserved tokens, actual spend, actual tokens
-- then per correction: limit per minute, estimated tokens, actual tokens
--
-- Reply: 1 when applied, 0 when the once-marker shows it was applied before.

local PERIOD = 60000000

local me = ARGV[1]
local account_ttl = ARGV[2]
local ns = tonumber(ARGV[4])
local nc = tonumber(ARGV[5])

if ARGV[3] ~= '' then
  if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[3]) then
    return 0
  end
end

-- Lowers a reservation, never below zero; a field at zero is removed.
local function release(key, field, amount)
  if amount <= 0 then
    return
  end
  local left = redis.call('HINCRBY', key, field, -amount)
  if left <= 0 then
    redis.call('HDEL', key, field)
  end
end

local a = 6
for j = 1, ns do
  local key = KEYS[1 + j]
  release(key, 'rs:' .. me, tonumber(ARGV[a]))
  release(key, 'rt:' .. me, tonumber(ARGV[a + 1]))
  if tonumber(ARGV[a + 2]) > 0 then
    redis.call('HINCRBY', key, 'spend', ARGV[a + 2])
  end
  if tonumber(ARGV[a + 3]) > 0 then
    redis.call('HINCRBY', key, 'tokens', ARGV[a + 3])
  end
  redis.call('PEXPIRE', key, account_ttl)
  a = a + 4
end

if nc > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  for i = 1, nc do
    local key = KEYS[1 + ns + i]
    local limit = tonumber(ARGV[a])
    local delta = tonumber(ARGV[a + 2]) - tonumber(ARGV[a + 1])
    if limit > 0 and delta ~= 0 then
      local tat = tonumber(redis.call('GET', key)) or now
      if tat < now then
        tat = now
      end
      tat = tat + delta * PERIOD / limit
      if tat <= now then
        redis.call('DEL', key)
      else
        redis.call('SET', key, string.format('%.3f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
      end
    end
    a = a + 3
  end
end
return 1
