#!lua
-- put.lua — newer-wins batch write (or unconditional remove) of items. The Merkle shadow is
-- kept exact by appending every change of an item's shadow digest to the change log in the
-- same script (atomic with the data); the fold (Rust, under a lock) applies the log to the
-- nodes before any Merkle read. Layout and cost model: storage-redis/README.md.
--
-- KEYS[1..n]      data key of op i (an id may repeat: ops apply in order)
-- KEYS[n+1]       the change log (a list of blobs, one per batch)
-- KEYS[n+2]       the count of changes not yet folded
-- KEYS[n+3]       the write epoch, incremented when anything is written (optimistic writers
--                 WATCH it: see src/txn.rs)
-- ARGV[1]         one byte per op: 'S' set, 'X' set with TTL, 'R' remove
-- ARGV[2]         '1' when an id repeats in the batch, else '0'
-- ARGV[2+i]       op i: the encoded item ('' for a remove)
-- ARGV[2+n+j]     the TTL in ms of the j-th 'X' op
-- Log blob: per change  flags (1: old digest follows, 2: new digest follows) | key | NUL |
--           old digest (32) | new digest (32)   (keys never hold a NUL: ids and prefixes have no
--           control characters)
-- Returns {applied, stale, pending changes}. Raises 'CORRUPT ...' before writing anything when
-- a stored value (other than one being removed) is not an item in this format.

local n = #KEYS - 3
local kinds, dups = ARGV[1], ARGV[2] == '1'
local call, sunpack, ssub, sbyte = redis.call, struct.unpack, string.sub, string.byte
local unpack, min = unpack, math.min
local CHUNK = 4000
local S, X, R = 83, 88, 82

local function newer(nv, ov)
  local a1, a2 = sunpack('>I4I4', nv, 3)
  local b1, b2 = sunpack('>I4I4', ov, 3)
  if a1 ~= b1 then return a1 > b1 end
  if a2 ~= b2 then return a2 > b2 end
  if ssub(nv, 11, 42) ~= ssub(ov, 11, 42) then
    for i = 11, 39, 4 do
      local x = sunpack('>I4', nv, i)
      local y = sunpack('>I4', ov, i)
      if x ~= y then return x > y end
    end
  end
  return sbyte(nv, 2) % 2 > sbyte(ov, 2) % 2
end

local old = {}
for i = 1, n, CHUNK do
  local part = call('MGET', unpack(KEYS, i, min(i + CHUNK - 1, n)))
  for j = 1, #part do old[i + j - 1] = part[j] end
end

local cur = {}                    -- with repeats: key -> current value (false: absent)
local finv, fint, ordk = {}, {}, {} -- with repeats: key -> final value / TTL, keys in order
local mset, dels, tk, tv, tt = {}, {}, {}, {}, {}
local FLAG = {'\1', '\2', '\3'}
local log, nl = {}, 0
local applied, stale, changes, nttl = 0, 0, 0, 0

-- Record the final state of key k: value v (false: removed), TTL ttl (false: none).
local function final(k, v, ttl)
  if not v then
    dels[#dels + 1] = k
  elseif ttl then
    local j = #tk + 1
    tk[j], tv[j], tt[j] = k, v, ttl
  else
    local j = #mset
    mset[j + 1], mset[j + 2] = k, v
  end
end

for i = 1, n do
  local k, kind = KEYS[i], sbyte(kinds, i)
  local c
  if dups and cur[k] ~= nil then c = cur[k] else c = old[i] end
  local bad = false
  if c and (#c < 84 or sbyte(c, 1) ~= 1) then
    if kind ~= R then error({err = 'CORRUPT stored value of ' .. k .. ' is not an item in this format'}) end
    c, bad = false, true
  end
  local nv, ttl = nil, false
  if kind == R then
    if c or bad then nv = false end
  else
    if kind == X then nttl = nttl + 1; ttl = ARGV[2 + n + nttl] end
    local v = ARGV[2 + i]
    if (not c) or newer(v, c) then nv = v; applied = applied + 1 else stale = stale + 1 end
  end
  if nv ~= nil then
    local od = c and sbyte(c, 2) == 2
    local nd = nv and sbyte(nv, 2) == 2
    if od or nd then
      changes = changes + 1
      log[nl + 1] = FLAG[(od and 1 or 0) + (nd and 2 or 0)]
      log[nl + 2] = k
      log[nl + 3] = '\0'
      nl = nl + 3
      if od then nl = nl + 1; log[nl] = ssub(c, 51, 82) end
      if nd then nl = nl + 1; log[nl] = ssub(nv, 51, 82) end
    end
    if dups then
      cur[k] = nv
      if finv[k] == nil then ordk[#ordk + 1] = k end
      finv[k], fint[k] = nv, ttl
    else
      final(k, nv, ttl)
    end
  end
end
if dups then
  for _, k in ipairs(ordk) do final(k, finv[k], fint[k]) end
end

for j = 1, #tk do call('SET', tk[j], tv[j], 'PX', tt[j]) end
for i = 1, #mset, CHUNK do call('MSET', unpack(mset, i, min(i + CHUNK - 1, #mset))) end
for i = 1, #dels, CHUNK do call('DEL', unpack(dels, i, min(i + CHUNK - 1, #dels))) end
if #tk + #mset + #dels > 0 then call('INCR', KEYS[n + 3]) end

local pending = 0
if changes > 0 then
  call('RPUSH', KEYS[n + 1], table.concat(log))
  pending = call('INCRBY', KEYS[n + 2], changes)
else
  pending = tonumber(call('GET', KEYS[n + 2]) or '0')
end
return {applied, stale, pending}
