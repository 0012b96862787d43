#!lua
-- unlock.lua — release the fold lock if the caller (ARGV[1], its token) still holds it.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
