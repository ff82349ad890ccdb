-- Read an account's settled and reserved totals, counting only live instances'
-- reservations (the same rule as admit.lua). Read-only.
--
-- KEYS[1] account hash   ARGV[1] instance id   ARGV[2] instance key prefix
-- Reply: {exists, spend, tokens, reserved spend, reserved tokens}

local me = ARGV[1]
local h = redis.call('HGETALL', KEYS[1])
local spend, tokens, rs, rt = 0, 0, 0, 0
local live = {}
for k = 1, #h, 2 do
  local f, v = h[k], h[k + 1]
  if f == 'spend' then
    spend = tonumber(v) or 0
  elseif f == 'tokens' then
    tokens = tonumber(v) or 0
  else
    local p = string.sub(f, 1, 3)
    if p == 'rs:' or p == 'rt:' then
      local instance = string.sub(f, 4)
      local ok = live[instance]
      if ok == nil then
        ok = instance == me or redis.call('EXISTS', ARGV[2] .. instance) == 1
        live[instance] = ok
      end
      if ok and p == 'rs:' then
        rs = rs + (tonumber(v) or 0)
      elseif ok then
        rt = rt + (tonumber(v) or 0)
      end
    end
  end
end
return { #h > 0 and 1 or 0, spend, tokens, rs, rt }
