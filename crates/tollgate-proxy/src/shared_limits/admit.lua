-- Admit one request: check every rate limit (GCRA) and every budget, then, only if all
-- pass, advance the rate limiters and add this instance's reservations. All or nothing.
--
-- KEYS[1..nr]          rate limiter keys (a string holding the TAT, microseconds)
-- KEYS[nr+1..nr+nb]    account hashes (spend, tokens, rs:<instance>, rt:<instance>)
-- ARGV[1] instance id   ARGV[2] instance key prefix   ARGV[3] heartbeat TTL (ms)
-- ARGV[4] account TTL (ms)   ARGV[5] nr   ARGV[6] nb
-- then per rate check: limit per minute, cost
-- then per budget: limit spend ('' = none), limit tokens ('' = none), baseline spend,
--                  baseline tokens, spend to reserve, tokens to reserve
--
-- Reply: {status, check, retry_after_ms, never, dimension, then per rate check:
--         limit, remaining, reset_after_ms}
-- status 0 admitted, 1 rate limited, 2 over budget; check is 0-based (rate index for 1,
-- budget index for 2); dimension 0 spend, 1 tokens.

local PERIOD = 60000000 -- one minute in microseconds: the window and the burst
local TOLERANCE = 1 -- microseconds of float noise forgiven in the admission test

local me = ARGV[1]
local inst_prefix = ARGV[2]
local heartbeat_ttl = ARGV[3]
local account_ttl = ARGV[4]
local nr = tonumber(ARGV[5])
local nb = tonumber(ARGV[6])

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

-- Units of `limit` still free at TAT `tat`, consistent with the admission test.
local function remaining(limit, tat)
  if limit <= 0 then
    return 0
  end
  local used = math.max(tat - now, 0)
  local free = math.floor((PERIOD + TOLERANCE - used) * limit / PERIOD)
  return math.min(math.max(free, 0), limit)
end

local function reset_ms(tat)
  return math.ceil(math.max(tat - now, 0) / 1000)
end

-- Rate limits. A key named twice sees the first check's tentative TAT.
local tats = {}
local new_tats = {}
local states = {}
local rate_fail, rate_retry, rate_never = -1, -1, false
for i = 1, nr do
  local key = KEYS[i]
  local limit = tonumber(ARGV[5 + 2 * i])
  local cost = tonumber(ARGV[6 + 2 * i])
  local tat = tats[key]
  if tat == nil then
    tat = tonumber(redis.call('GET', key)) or now
  end
  if tat < now then
    tat = now
  end
  if limit <= 0 or cost > limit then
    if not rate_never then
      rate_fail, rate_retry, rate_never = i - 1, 0, true
    end
    states[i] = { limit, remaining(limit, tat), reset_ms(tat) }
  else
    local new_tat = tat + cost * PERIOD / limit
    local over = new_tat - now - PERIOD
    if over > TOLERANCE then
      local retry = math.max(math.ceil(over / 1000), 1)
      if not rate_never and retry > rate_retry then
        rate_fail, rate_retry = i - 1, retry
      end
      states[i] = { limit, remaining(limit, tat), reset_ms(tat) }
    else
      tats[key] = new_tat
      new_tats[i] = new_tat
      states[i] = { limit, remaining(limit, new_tat), reset_ms(new_tat) }
    end
  end
end

-- Budgets. Re-seeding from the baseline and dropping dead instances' reservations happen
-- whatever the outcome: both only make the hash truer.
local live = {}
local function alive(instance)
  if instance == me then
    return true
  end
  local v = live[instance]
  if v == nil then
    v = redis.call('EXISTS', inst_prefix .. instance) == 1
    live[instance] = v
  end
  return v
end

local pending_spend, pending_tokens = {}, {}
local budget_fail, budget_dim = -1, 0
local base = 7 + 2 * nr
for j = 1, nb do
  local key = KEYS[nr + j]
  local a = base + 6 * (j - 1)
  local limit_spend = tonumber(ARGV[a])
  local limit_tokens = tonumber(ARGV[a + 1])
  local baseline_spend = tonumber(ARGV[a + 2])
  local baseline_tokens = tonumber(ARGV[a + 3])
  local want_spend = tonumber(ARGV[a + 4])
  local want_tokens = tonumber(ARGV[a + 5])

  local h = redis.call('HGETALL', key)
  local spend, tokens, rs, rt = 0, 0, 0, 0
  local dead = {}
  for k = 1, #h, 2 do
    local f, v = h[k], h[k + 1]
    if f == 'spend' then
      spend = tonumber(v) or 0
    elseif f == 'tokens' then
      tokens = tonumber(v) or 0
    else
      local p = string.sub(f, 1, 3)
      if p == 'rs:' or p == 'rt:' then
        if alive(string.sub(f, 4)) then
          if p == 'rs:' then
            rs = rs + (tonumber(v) or 0)
          else
            rt = rt + (tonumber(v) or 0)
          end
        else
          dead[#dead + 1] = f
        end
      end
    end
  end
  if #dead > 0 then
    redis.call('HDEL', key, unpack(dead))
  end
  if baseline_spend > spend then
    redis.call('HSET', key, 'spend', ARGV[a + 2])
    spend = baseline_spend
  end
  if baseline_tokens > tokens then
    redis.call('HSET', key, 'tokens', ARGV[a + 3])
    tokens = baseline_tokens
  end
  redis.call('PEXPIRE', key, account_ttl)

  rs = rs + (pending_spend[key] or 0)
  rt = rt + (pending_tokens[key] or 0)
  if budget_fail < 0 then
    -- An account at its limit (a bill above its reservation can take it past) admits
    -- nothing, not even a free request: as the per-instance check.
    if limit_spend and (spend >= limit_spend or spend + rs + want_spend > limit_spend) then
      budget_fail, budget_dim = j - 1, 0
    elseif limit_tokens and (tokens >= limit_tokens or tokens + rt + want_tokens > limit_tokens) then
      budget_fail, budget_dim = j - 1, 1
    end
  end
  pending_spend[key] = (pending_spend[key] or 0) + want_spend
  pending_tokens[key] = (pending_tokens[key] or 0) + want_tokens
end

local reply
if budget_fail >= 0 then
  return { 2, budget_fail, 0, 0, budget_dim }
elseif rate_fail >= 0 then
  reply = { 1, rate_fail, rate_retry, rate_never and 1 or 0, 0 }
else
  reply = { 0, 0, 0, 0, 0 }
  for i = 1, nr do
    local tat = new_tats[i]
    if tat ~= nil then
      redis.call('SET', KEYS[i], string.format('%.3f', tat), 'PX', reset_ms(tat) + 1000)
    end
  end
  for j = 1, nb do
    local key = KEYS[nr + j]
    local a = base + 6 * (j - 1)
    if tonumber(ARGV[a + 4]) > 0 then
      redis.call('HINCRBY', key, 'rs:' .. me, ARGV[a + 4])
    end
    if tonumber(ARGV[a + 5]) > 0 then
      redis.call('HINCRBY', key, 'rt:' .. me, ARGV[a + 5])
    end
  end
  if nb > 0 then
    -- Reservations of an instance without a heartbeat are dropped by the next reader;
    -- admitting proves this one alive.
    redis.call('SET', inst_prefix .. me, '1', 'PX', heartbeat_ttl)
  end
end
for i = 1, nr do
  local s = states[i]
  reply[#reply + 1] = s[1]
  reply[#reply + 1] = s[2]
  reply[#reply + 1] = s[3]
end
return reply
