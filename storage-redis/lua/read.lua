#!lua flags=no-writes
-- read.lua — one Merkle question, answered atomically: the value or the children of a node.
--
-- KEYS[1]   the path node (base 'n::' path); KEYS[2] the change log
-- ARGV[1]   base; ARGV[2] path; ARGV[3] bucket nibbles as hex ('' for the path node);
-- ARGV[4]   'node' or 'children'; ARGV[5] '1': answer {'F'} while logged changes await the fold
-- Returns
--   {'F'}                          changes are pending: fold first
--   {'N'}                          nothing is stored at or above this bucket: the node is empty
--   {'V', value}                   (node) the stored value: acc (32) + count (8)
--   {'B', v0, ..., v15}            (children) the node is split: its 16 sub-bucket values, '' if empty
--   {'E', depth, node, s1, v1, ...} the node lies in (or is) the unsplit node `depth` nibbles deep:
--                                  that node as stored, then each child path's segment and value.
--                                  The caller filters entries by the remaining nibbles.

local base, path, hex, mode = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local call, ssub, sbyte, sunpack = redis.call, string.sub, string.byte, struct.unpack

if ARGV[5] == '1' and call('LLEN', KEYS[2]) > 0 then return {'F'} end

local raw = call('GET', KEYS[1])
local depth = 0
while true do
  if not raw then return {'N'} end
  local split = sbyte(raw, 45)
  if depth == #hex then
    if mode == 'node' then return {'V', ssub(raw, 1, 40)} end
    if split == 1 then
      local keys = {}
      for i = 0, 15 do keys[i + 1] = base .. 'n:' .. hex .. string.format('%x', i) .. ':' .. path end
      local vals = call('MGET', unpack(keys))
      local out = {'B'}
      for i = 1, 16 do out[i + 1] = vals[i] and ssub(vals[i], 1, 40) or '' end
      return out
    end
    break
  end
  if split ~= 1 then break end
  depth = depth + 1
  raw = call('GET', base .. 'n:' .. ssub(hex, 1, depth) .. ':' .. path)
end

-- An unsplit node: its child paths' values come from their own nodes. Leaf entries are only
-- stepped over (every string made here is hashed byte by byte), and a child's key is one
-- concatenation onto the prefix they share.
local out = {'E', depth, raw}
local segs, keys = {}, {}
local pos, len = 46, #raw
local child = base .. 'n::' .. (path == '' and '' or (path .. '.'))
while pos <= len do
  local tag = sbyte(raw, pos)
  local n = sunpack('>H', raw, pos + 1)
  if tag == 108 then
    pos = pos + 35 + n
  else
    local seg = ssub(raw, pos + 3, pos + 2 + n)
    pos = pos + 3 + n
    segs[#segs + 1] = seg
    keys[#keys + 1] = child .. seg
  end
end
for i = 1, #keys, 4000 do
  local last = math.min(i + 3999, #keys)
  local vals = call('MGET', unpack(keys, i, last))
  for j = 1, #vals do
    if vals[j] then
      out[#out + 1] = segs[i + j - 1]
      out[#out + 1] = ssub(vals[j], 1, 40)
    end
  end
end
return out
