#!lua
-- heal.lua — remove entries an audit found corrupt, keeping the Merkle shadow exact.
-- put.lua logs the digest it reads from a stored value as the leaf's old digest; for a value
-- changed behind the store's back that digest is not what the shadow holds (or the value is
-- gone, or not an item at all), so the audit hands in the shadow's own leaf digest instead.
-- An entry is removed only if it is still exactly what the audit saw: a write since then (whose
-- log entry described the value it replaced) makes the script leave it alone.
--
-- KEYS[1..n]   the data key of entry i (distinct)
-- KEYS[n+1]    the change log (format: put.lua)
-- KEYS[n+2]    the count of changes not yet folded
-- KEYS[n+3]    the write epoch, incremented when an entry is removed (optimistic writers
--              WATCH it: a batch that read an entry before this removal must not commit)
-- ARGV[2i-1]   entry i as the audit saw it: '0' (no string value) or '1' followed by its bytes
-- ARGV[2i]     the shadow's leaf digest of entry i (32 bytes), '' when the shadow has none
-- Returns {i, ...}: the entries removed (1-based).

local n = #KEYS - 3
local call, pcall, ssub = redis.call, redis.pcall, string.sub
local log, nl, changes, done = {}, 0, 0, {}

for i = 1, n do
  local k, seen, leaf = KEYS[i], ARGV[2 * i - 1], ARGV[2 * i]
  local c = pcall('GET', k)
  local foreign = type(c) == 'table' -- another type of key in the items' namespace
  if foreign then c = false end
  local same
  if ssub(seen, 1, 1) == '0' then
    same = not c
  else
    same = c and c == ssub(seen, 2)
  end
  if same then
    if c or foreign then call('DEL', k) end
    if #leaf == 32 then
      changes = changes + 1
      log[nl + 1] = '\1'
      log[nl + 2] = k
      log[nl + 3] = '\0'
      log[nl + 4] = leaf
      nl = nl + 4
    end
    done[#done + 1] = i
  end
end

if #done > 0 then call('INCR', KEYS[n + 3]) end
if changes > 0 then
  call('RPUSH', KEYS[n + 1], table.concat(log))
  call('INCRBY', KEYS[n + 2], changes)
end
return done
