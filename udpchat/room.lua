-- The room's rules, run inside Redis: udpchat.room.Room, step for step, over
-- keys instead of Python objects, so that every daemon of a group applies
-- them to one state, atomically.  udpchat.redisroom parses the datagrams and
-- calls this script once per batch; tests/test_redisroom.py checks it
-- against the same model as the memory room (tests/model.py).
--
-- KEYS[1]: the group's key prefix (--room).
-- ARGV: now, max_reply_bytes, max_members, max_pending, idle_timeout,
--   max_members_per_group ("" for none), sessions_only ("1"/"0"), then seven
--   values per request: source, group ("" for none), datagram length, op,
--   and three fields (see udpchat.redisroom.RedisRoom.encode).
-- Returns {replies, events, member count, lines held}: a reply is a string,
-- or false for none; an event is {kind, source, name, other}.
--
-- Keys, under the prefix P:
--   P:meta     hash: end (the next line's number), first (the oldest held),
--              next_id, heard (a counter ordering P:silent), next_expiry
--   P:log      stream: line number n has id 0-(n+1), fields a (author id,
--              "" for none) and l (the line); at most 2 * max_pending
--   P:m:ID     string: one member, a JSON array (see load and save)
--   P:own:ID   list: the numbers of the member's own lines at or after its
--              position (it never reads them), oldest first
--   P:src      hash: source -> id;      P:names   hash: name -> id
--   P:ids      sorted set: id by id (join order)
--   P:silent   sorted set: id by the heard counter (longest silent first)
--   P:groups   hash: group of addresses -> members
--   P:tokens   hash: token -> id;       P:nonces  hash: nonce -> id

local P = KEYS[1]
local META, LOG, SRC, NAMES, IDS = P .. ':meta', P .. ':log', P .. ':src', P .. ':names', P .. ':ids'
local SILENT, GROUPS, TOKENS, NONCES = P .. ':silent', P .. ':groups', P .. ':tokens', P .. ':nonces'

local now = tonumber(ARGV[1])
local max_reply_bytes = tonumber(ARGV[2])
local max_members = tonumber(ARGV[3])
local max_pending = tonumber(ARGV[4])
local idle_timeout = tonumber(ARGV[5])
local per_group = tonumber(ARGV[6])
local sessions_only = ARGV[7] == '1'
local capacity = 2 * max_pending

local ILLEGAL = 'Illegal message'

local meta = redis.call('HMGET', META, 'end', 'first', 'next_id', 'heard', 'next_expiry')
local END = tonumber(meta[1]) or 0
local FIRST = tonumber(meta[2]) or 0
local first_before = FIRST
local NEXT_ID = tonumber(meta[3]) or 0
local HEARD = tonumber(meta[4]) or 0
local NEXT_EXPIRY = tonumber(meta[5]) or 0
if idle_timeout == 0 then
  NEXT_EXPIRY = math.huge
end

local events = {}
local cache = {}  -- id -> member, loaded once per batch
local dirty = {}  -- id -> member to save at the end

local function decimal(n)
  return string.format('%d', n)
end

-- Numbers that a client sends (up to 19 digits, past what a Lua number
-- holds exactly) stay strings, compared as canonical decimals.
local function less(a, b)
  if #a ~= #b then
    return #a < #b
  end
  return a < b
end

-- Members -----------------------------------------------------------------

-- A member is one string, a JSON array of its fields (one GET and one SET
-- per batch, where a hash of fields cost twice as much): every string in it
-- is UTF-8 (names, as parsed, and ASCII).
local function load(id)
  local member = cache[id]
  if member then
    return member
  end
  local f = cjson.decode(redis.call('GET', P .. ':m:' .. id))
  member = {
    id = id, src = f[1], name = f[2], grp = f[3], pos = f[4], dropped = f[5],
    seen = f[6], nown = f[7],
    -- A session's fields; "" or false for none (a reply after a poll, a
    -- budget once the address has shown it receives).
    tok = f[8], nonce = f[9], seq = f[10], reply = f[11] or nil, told = f[12],
    budget = f[13] or nil, rto = f[14], heard = f[15], zs = f[16] or nil,
  }
  cache[id] = member
  return member
end

local function mark(member)
  if not member.gone then
    dirty[member.id] = member
  end
end

local function save(member)
  redis.call('SET', P .. ':m:' .. member.id, cjson.encode({
    member.src, member.name, member.grp, member.pos, member.dropped,
    member.seen, member.nown, member.tok, member.nonce, member.seq,
    member.reply or false, member.told, member.budget or false, member.rto,
    member.heard, member.zs or false,
  }))
end

local function member_at(source)
  local id = redis.call('HGET', SRC, source)
  if id then
    return load(id)
  end
  return nil
end

-- Heard from: the member goes to the end of the silent order, which its
-- heard number gives.  P:silent holds a time at or before the member was
-- last heard (so that expire() finds every member that may be due, and
-- checks each), rewritten only once it is a tenth of the idle timeout old,
-- and once per batch: a batch's requests share one time, so that only its
-- first can find anyone to expire.
local heard = {}  -- id -> member whose time in P:silent is to be written
local slack = idle_timeout / 10

local function touch(member)
  member.seen = now
  HEARD = HEARD + 1
  member.heard = HEARD
  if idle_timeout > 0 and (member.zs == nil or now - member.zs > slack) then
    member.zs = now
    heard[member.id] = member
  end
  mark(member)
end

local function report(kind, source, name, other)
  events[#events + 1] = {kind, source, name, other or ''}
end

local function leave_group(group)
  if group ~= '' and redis.call('HINCRBY', GROUPS, group, -1) <= 0 then
    redis.call('HDEL', GROUPS, group)
  end
end

-- The shared log (udpchat.sharedlog) ----------------------------------------

local function own_key(member)
  return P .. ':own:' .. member.id
end

local function line_id(sequence)
  return '0-' .. decimal(sequence + 1)
end

local function forget_oldest()
  -- The log is full: its oldest line goes.  If its author had not passed
  -- it, the author did not lose it: its position steps over it.
  local sequence = FIRST
  local entry = redis.call('XRANGE', LOG, line_id(sequence), line_id(sequence))[1]
  local author = entry and entry[2][2] or ''
  if author ~= '' then
    local member = cache[author]
    if member == nil and redis.call('EXISTS', P .. ':m:' .. author) == 1 then
      member = load(author)
    end
    if member and member.nown > 0
        and redis.call('LINDEX', own_key(member), 0) == decimal(sequence) then
      redis.call('LPOP', own_key(member))
      member.nown = member.nown - 1
      member.pos = member.pos + 1
      mark(member)
    end
  end
  FIRST = sequence + 1  -- the stream is trimmed to it at the end of the batch
end

local function append(line, author)
  local sequence = END
  redis.call('XADD', LOG, line_id(sequence), 'a', author and author.id or '', 'l', line)
  END = sequence + 1
  if author then
    if author.pos == sequence then
      -- It has read everything else: it skips its own line now.
      author.pos = sequence + 1
    else
      redis.call('RPUSH', own_key(author), sequence)
      author.nown = author.nown + 1
    end
    mark(author)
  end
  if END - FIRST > capacity then
    forget_oldest()
  end
end

local function own_lines(member)
  if member.nown == 0 then
    return {}
  end
  return redis.call('LRANGE', own_key(member), 0, -1)
end

local function pass_own(member, count)
  -- Its first count own lines are behind it now.
  if count > 0 then
    redis.call('LTRIM', own_key(member), count, -1)
    member.nown = member.nown - count
  end
end

local function advance(member, position)
  if member.nown > 0 then
    local passed = 0
    for _, sequence in ipairs(own_lines(member)) do
      if tonumber(sequence) >= position then
        break
      end
      passed = passed + 1
    end
    pass_own(member, passed)
  end
  member.pos = position
  mark(member)
end

local function discard(member, keep)
  -- Past every forgotten line, then past all unread lines but the newest
  -- keep: how many (not its own) the member lost.
  local lost = 0
  local position = member.pos
  if position < FIRST then
    lost = FIRST - position
    position = FIRST
  end
  local excess = END - position - member.nown - keep
  if excess > 0 then
    lost = lost + excess
    local own = own_lines(member)
    local passed = 1
    while excess > 0 do
      if own[passed] and tonumber(own[passed]) == position then
        passed = passed + 1
      else
        excess = excess - 1
      end
      position = position + 1
    end
    pass_own(member, passed - 1)
  end
  member.pos = position
  mark(member)
  return lost
end

local function look(member, max_bytes)
  -- The lines after the member's position, not its own, as many whole
  -- ones as fit into max_bytes joined by newlines; and the position past
  -- them (and past any own lines among or after them).
  local own = {}
  for _, sequence in ipairs(own_lines(member)) do
    own[tonumber(sequence)] = true
  end
  local taken, size = {}, -1
  local position = member.pos
  while position < END do
    local entries = redis.call('XRANGE', LOG, line_id(position), '+', 'COUNT', 64)
    if #entries == 0 then
      break  -- not reached: every line from the position on is held
    end
    for _, entry in ipairs(entries) do
      if not own[position] then
        local line = entry[2][4]
        if size + 1 + #line > max_bytes then
          return table.concat(taken, '\n'), position
        end
        size = size + 1 + #line
        taken[#taken + 1] = line
      end
      position = position + 1
    end
  end
  return table.concat(taken, '\n'), END
end

-- Replies -------------------------------------------------------------------

local function dropped_notice(count)
  if count == 1 then
    return '[1 line dropped]'
  end
  return '[' .. decimal(count) .. ' lines dropped]'
end

local function refused(seq, reason)
  return seq .. ' refused ' .. reason
end

local function member_list(except, max_bytes)
  -- The other members' names, newest first, as wire.member_list builds
  -- them; and how many there are.
  local ids = redis.call('ZREVRANGE', IDS, 0, -1)
  local total = #ids - (except and 1 or 0)
  local shown, size, complete = {}, 0, true
  for _, id in ipairs(ids) do
    if id ~= except then
      local name = load(id).name
      local grown = size + #name + (#shown > 0 and 2 or 0)
      if grown > max_bytes then
        complete = false
        break
      end
      shown[#shown + 1] = name
      size = grown
    end
  end
  if not complete then
    while true do
      local tail = 'and ' .. decimal(total - #shown) .. ' more'
      if #shown == 0 or size + 2 + #tail <= max_bytes then
        shown[#shown + 1] = tail
        break
      end
      local gone = table.remove(shown)
      size = size - #gone - (#shown > 0 and 2 or 0)
    end
  end
  return table.concat(shown, ', '), total
end

local function budgeted(member, reply)
  -- Until its address has shown it receives, a session member is sent at
  -- most three times what came from there (RFC 9000, section 8).
  local budget = member.budget
  if budget == nil or reply == nil then
    return reply
  end
  if #reply > budget then
    return nil
  end
  member.budget = budget - #reply
  mark(member)
  return reply
end

-- Membership ----------------------------------------------------------------

local function admission_refusal(group, name)
  if redis.call('HEXISTS', NAMES, name) == 1 then
    return 'name taken'
  end
  if redis.call('HLEN', SRC) >= max_members then
    return 'room full'
  end
  if group ~= '' and per_group
      and (tonumber(redis.call('HGET', GROUPS, group)) or 0) >= per_group then
    return 'group full'
  end
  return nil
end

local function admit(source, name, group, session)
  append(name .. ' has joined', nil)
  local id = decimal(NEXT_ID)
  NEXT_ID = NEXT_ID + 1
  local member = {
    id = id, src = source, name = name, grp = group, pos = END, dropped = 0,
    seen = now, nown = 0, tok = '', nonce = '', seq = '0', reply = nil,
    told = 0, budget = nil, rto = '',
  }
  if session then
    for key, value in pairs(session) do
      member[key] = value
    end
  end
  cache[id] = member
  redis.call('HSET', SRC, source, id)
  redis.call('HSET', NAMES, name, id)
  redis.call('ZADD', IDS, id, id)
  if group ~= '' then
    redis.call('HINCRBY', GROUPS, group, 1)
  end
  touch(member)
  report('joined', source, name)
  return member
end

local function remove(member)
  redis.call('HDEL', SRC, member.src)
  redis.call('ZREM', IDS, member.id)
  redis.call('HDEL', NAMES, member.name)
  redis.call('ZREM', SILENT, member.id)
  heard[member.id] = nil
  leave_group(member.grp)
  if member.tok ~= '' then
    redis.call('HDEL', TOKENS, member.tok)
    redis.call('HDEL', NONCES, member.nonce)
  end
  redis.call('DEL', own_key(member), P .. ':m:' .. member.id)
  member.gone = true
  dirty[member.id] = nil
  cache[member.id] = nil
  append(member.name .. ' has left the group', nil)
end

local function expire()
  -- Those silent for the idle timeout go, longest silent first.
  local due, earliest = {}, now + idle_timeout
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', SILENT, '-inf', now - idle_timeout)) do
    local member = load(id)
    if member.seen + idle_timeout <= now then
      due[#due + 1] = member
    else
      -- Heard from since its time in P:silent was written.
      member.zs = member.seen
      heard[id] = member
      mark(member)
      earliest = math.min(earliest, member.seen + idle_timeout)
    end
  end
  table.sort(due, function(a, b) return a.heard < b.heard end)
  for _, member in ipairs(due) do
    remove(member)
    report('expired', member.src, member.name)
  end
  local next = redis.call('ZRANGEBYSCORE', SILENT, '(' .. tostring(now - idle_timeout), '+inf',
    'WITHSCORES', 'LIMIT', 0, 1)
  if next[2] then
    earliest = math.min(earliest, tonumber(next[2]) + idle_timeout)
  end
  NEXT_EXPIRY = earliest
end

-- Requests 1 to 5 -------------------------------------------------------------

local function join(source, group, member, name)
  if member or sessions_only then
    return ILLEGAL
  end
  if admission_refusal(group, name) then
    return ILLEGAL
  end
  local names = member_list(nil, max_reply_bytes)
  admit(source, name, group, nil)
  return names
end

local function say(member, text)
  append(member.name .. ': ' .. text, member)
  return ''
end

local function rename(member, name)
  if redis.call('HEXISTS', NAMES, name) == 1 then
    return nil
  end
  local old = member.name
  append(old .. ' changed his name to ' .. name, member)
  redis.call('HDEL', NAMES, old)
  redis.call('HSET', NAMES, name, member.id)
  member.name = name
  mark(member)
  report('renamed', member.src, old, name)
  return ''
end

local function leave(member)
  remove(member)
  report('left', member.src, member.name)
  return ''
end

local function fetch(member)
  local position = member.pos
  if position < FIRST or END - position - member.nown > max_pending then
    member.dropped = member.dropped + discard(member, max_pending)
  elseif position == END and member.dropped == 0 then
    return ''
  end
  mark(member)
  if member.dropped == 0 then
    local text, next_position = look(member, max_reply_bytes)
    advance(member, next_position)
    return text
  end
  local notice = dropped_notice(member.dropped)
  member.dropped = 0
  local text, next_position = look(member, max_reply_bytes - #notice - 1)
  advance(member, next_position)
  if text ~= '' then
    return notice .. '\n' .. text
  end
  return notice
end

-- Sessions --------------------------------------------------------------------

local function heard_from(member, length)
  touch(member)
  if member.budget then
    member.budget = member.budget + 3 * length
  end
end

local function register(source, group, member, length, nonce, name, token)
  local known = redis.call('HGET', NONCES, nonce)
  if known then
    -- A repeat: the same answer, as long as the session has not gone on.
    known = load(known)
    if known.seq ~= '0' then
      return nil
    end
    heard_from(known, length)
    return budgeted(known, known.reply)
  end
  if member then
    return refused('0', 'already a member')
  end
  local reason = admission_refusal(group, name)
  if reason then
    return refused('0', reason)
  end
  if redis.call('HEXISTS', TOKENS, token) == 1 then
    return nil  -- a broken source of tokens: no reply, as to a bug
  end
  member = admit(source, name, group, {
    tok = token, nonce = nonce, budget = 3 * length, rto = source,
  })
  redis.call('HSET', TOKENS, token, member.id)
  redis.call('HSET', NONCES, nonce, member.id)
  local head = '0 ' .. token .. ' ' .. decimal(member.pos)
  local room = math.min(max_reply_bytes, member.budget) - #head - 1
  local names, others = member_list(member.id, room)
  if others > 0 and #names <= room then
    head = head .. '\n' .. names
  end
  member.reply = head
  return budgeted(member, head)
end

local function move(member, source, group)
  -- Roaming: the member's address changed.  Nobody else is told.
  local old = member.src
  redis.call('HDEL', SRC, old)
  redis.call('HSET', SRC, source, member.id)
  leave_group(member.grp)
  member.src = source
  member.grp = group
  if group ~= '' then
    redis.call('HINCRBY', GROUPS, group, 1)
  end
  member.budget = 0
  mark(member)
  report('moved', source, member.name, old)
end

local function session_fetch(member, seq, wanted, repeated)
  if less(decimal(END), wanted) then
    return refused(seq, 'position ahead')
  end
  local position = tonumber(wanted)
  if position > member.pos then
    -- The lines before it arrived: release them.
    if position < FIRST then
      member.dropped = member.dropped + FIRST - position
      position = FIRST
    end
    advance(member, position)
  end
  if member.pos < FIRST or END - member.pos - member.nown > max_pending then
    member.dropped = member.dropped + discard(member, max_pending)
  end
  local head = seq .. ' ' .. decimal(END)
  local told = repeated and member.told or member.dropped
  if member.pos == END and told == 0 then
    member.told = 0
    return head
  end
  local budget = max_reply_bytes - #head - 1
  if member.budget then
    budget = math.min(budget, member.budget - #head - 1)
  end
  -- A repeat tells of as many dropped lines as the first reply did.
  member.told = told
  local text, next_position
  if told ~= 0 then
    local notice = dropped_notice(told)
    text, next_position = look(member, math.max(budget - #notice - 1, 0))
    if text ~= '' then
      text = notice .. '\n' .. text
    else
      text = notice
    end
  else
    text, next_position = look(member, math.max(budget, 0))
  end
  if next_position ~= END then
    head = seq .. ' ' .. decimal(next_position)
  end
  if text ~= '' then
    return head .. '\n' .. text
  end
  return head
end

local function session(source, group, address_member, length, op, token, seq, argument)
  local id = redis.call('HGET', TOKENS, token)
  if not id then
    return seq .. ' unknown'
  end
  local member = load(id)
  if less(seq, member.seq) then
    return nil
  end
  if source ~= member.src then
    if address_member then
      return refused(seq, 'address in use')
    end
    move(member, source, group)
  end
  heard_from(member, length)
  local repeated = seq == member.seq
  if not repeated then
    if member.budget and member.rto == source then
      member.budget = nil  -- it got the last reply: it receives
    end
    member.seq = seq
    if member.told ~= 0 then
      -- The dropped-lines notice in the last reply arrived.
      member.dropped = member.dropped - member.told
      member.told = 0
    end
  elseif op ~= '8' then
    if member.reply == nil then
      return nil  -- the number of a poll: a confused client
    end
    return budgeted(member, member.reply)
  end
  member.rto = source
  local reply
  if op == '8' then
    member.reply = nil  -- a repeat is answered anew
    reply = session_fetch(member, seq, argument, repeated)
  elseif op == '7' then
    say(member, argument)
    reply = seq
    member.reply = reply
  elseif op == '9' then
    if rename(member, argument) then
      reply = seq
    else
      reply = refused(seq, 'name taken')
    end
    member.reply = reply
  else
    leave(member)
    reply = seq
    member.reply = reply
  end
  return budgeted(member, reply)
end

-- One request -----------------------------------------------------------------

local MEMBERLESS = {['6'] = true, ['7'] = true, ['8'] = true, ['9'] = true, ['0'] = true}

local function receive(source, group, length, op, a, b, c)
  if now >= NEXT_EXPIRY then
    expire()
  end
  local member = member_at(source)
  if member and member.tok == '' then
    touch(member)
  end
  if op == 'x' then
    -- Illegal; exactly "Illegal message" (a server's reply) is not
    -- answered, lest two servers answer each other forever.
    if a == '1' then
      return nil
    end
    return ILLEGAL
  end
  if member == nil then
    if op ~= '1' and not MEMBERLESS[op] then
      return ILLEGAL
    end
  elseif member.tok ~= '' and not MEMBERLESS[op] then
    return ILLEGAL  -- only its token acts for a session member
  end
  if op == '1' then
    return join(source, group, member, a)
  elseif op == '2' then
    return say(member, a)
  elseif op == '3' then
    return rename(member, a) or ILLEGAL
  elseif op == '4' then
    return leave(member)
  elseif op == '5' then
    return fetch(member)
  elseif op == '6' then
    return register(source, group, member, length, a, b, c)
  end
  return session(source, group, member, length, op, a, b, c)
end

local replies = {}
for i = 8, #ARGV, 7 do
  local reply = receive(ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3],
    ARGV[i + 4], ARGV[i + 5], ARGV[i + 6])
  replies[#replies + 1] = reply or false
end
if #ARGV < 8 and now >= NEXT_EXPIRY then
  expire()  -- a sweep, with no request
end

for _, member in pairs(dirty) do
  save(member)
end
for id, member in pairs(heard) do
  redis.call('ZADD', SILENT, member.zs, id)
end
if FIRST > first_before then
  redis.call('XTRIM', LOG, 'MINID', line_id(FIRST))
end
redis.call('HSET', META, 'end', decimal(END), 'first', decimal(FIRST),
  'next_id', decimal(NEXT_ID), 'heard', decimal(HEARD),
  'next_expiry', NEXT_EXPIRY == math.huge and '0' or tostring(NEXT_EXPIRY))
return {replies, events, redis.call('HLEN', SRC), END - FIRST}
