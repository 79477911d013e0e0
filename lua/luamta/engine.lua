-- luamta.engine: builds a policy state (configuration + rule modules) and runs one stage through the rules.
-- The C core (src/lua/lb.c) calls boot() once per Lua state and run() in a fresh coroutine for every stage.
local core = require "luamta.core"

local M = {}

local STAGES = { "connect", "helo", "auth", "mail", "rcpt", "data", "message", "close", "route", "auth_attempt",
  "auth_failed" }
local is_stage = {}
for _, name in ipairs(STAGES) do is_stage[name] = true end

local by_stage = {}        -- stage -> array of { name = rule name, fn = handler }
for _, name in ipairs(STAGES) do by_stage[name] = {} end
local running = setmetatable({}, { __mode = "k" })   -- coroutine -> name of the rule it is in

-- A rule must load in bounded time too: a module whose top level loops forever would hang a reload. The budget
-- is the core's (core.budget), the same count hook that bounds stage runs, so coroutines, pcall and patterns at a
-- module's top level are bounded as they are in handlers.
local LOAD_BUDGET = 50000000

-- What the engine itself needs from the libraries the sandbox takes away, kept before it closes.
local io_open, loadfile_t, searchpath = io.open, loadfile, package.searchpath
local raw_setmetatable, raw_load, raw_collectgarbage, raw_xpcall = setmetatable, load, collectgarbage, xpcall

local function file_exists(path)
  local f = io_open(path, "r")
  if f then f:close() return true end
  return false
end

local function load_rule(name, path, errors)
  local chunk, err = loadfile_t(path, "t")
  if not chunk then
    errors[#errors + 1] = err
    return nil
  end
  core.budget(LOAD_BUDGET)
  -- No traceback: a load error is a configuration problem, and its message already names file:line or key.
  local ok, mod = pcall(chunk)
  if core.budget() then ok, mod = false, "rule module takes too long to load" end
  if not ok then
    errors[#errors + 1] = ("%s: rule module %q failed to load: %s"):format(path, name, tostring(mod))
    return nil
  end
  if type(mod) ~= "table" then
    errors[#errors + 1] = ("%s: rule module %q returned %s; expected a table of stage handlers")
      :format(path, name, type(mod))
    return nil
  end
  for key, value in pairs(mod) do
    if is_stage[key] and type(value) ~= "function" then
      errors[#errors + 1] = ("%s: rule module %q: %s is a %s; expected a function")
        :format(path, name, tostring(key), type(value))
    end
  end
  return mod
end

-- The sandbox (docs/rules.md, "Limits and errors"). open_sandbox() runs before the first rule module loads, so a
-- module's top level has no more than its handlers: string, table, math, utf8, coroutine, os.time/clock/date,
-- load (text chunks only) and require (our library and rules_dir, text files only). io, debug, os.execute and the
-- rest of os, dofile, loadfile, C modules and binary chunks are gone; setmetatable refuses __gc (a finalizer runs
-- where no count hook can stop it); collectgarbage answers only "count"; xpcall's message handler is not run once
-- the budget is spent. freeze_globals() runs after loading.
local function text_only(mode)
  if mode ~= nil and mode ~= "t" then error("load: only text chunks (mode \"t\") are allowed in rules", 3) end
  return "t"
end

local function open_sandbox()
  _G.io, package.loaded.io = nil, nil
  _G.debug, package.loaded.debug = nil, nil
  local os_time, os_clock, os_date = os.time, os.clock, os.date
  _G.os = { time = os_time, clock = os_clock, date = os_date }
  package.loaded.os = _G.os
  _G.dofile, _G.loadfile = nil, nil
  _G.load = function(chunk, name, mode, env)
    mode = text_only(mode)
    if env == nil then return raw_load(chunk, name, mode) end
    return raw_load(chunk, name, mode, env)
  end
  _G.setmetatable = function(t, mt)
    if type(mt) == "table" and rawget(mt, "__gc") ~= nil then
      error("setmetatable: __gc metamethods are not allowed in rules", 2)
    end
    return raw_setmetatable(t, mt)
  end
  _G.collectgarbage = function(opt)
    if opt ~= "count" then error("collectgarbage: rules may only ask for \"count\"", 2) end
    return raw_collectgarbage("count")
  end
  -- An error raised by the count hook reaches xpcall's message handler while Lua still has hooks off (the
  -- handler runs before the stack unwinds), so a handler that loops could never be stopped: once the budget is
  -- spent, the rule's handler is skipped and the error goes on up.
  _G.xpcall = function(f, handler, ...)
    if type(handler) ~= "function" then return raw_xpcall(f, handler, ...) end
    return raw_xpcall(f, function(e)
      if core.budget_spent() then return e end
      return handler(e)
    end, ...)
  end
  package.loadlib = nil
  package.cpath = ""
  -- require: Lua files only, read as text (the stock searcher would load a precompiled chunk)
  package.searchers[2] = function(name)
    local path, err = searchpath(name, package.path)
    if not path then return "\n\t" .. err end
    local chunk, lerr = loadfile_t(path, "t")
    if not chunk then error(("error loading module '%s' from file '%s':\n\t%s"):format(name, path, lerr), 2) end
    return chunk, path
  end
  package.searchers[3], package.searchers[4] = nil, nil
end

local function freeze_globals()
  raw_setmetatable(_G, {
    __newindex = function(_, key) error("assignment to undeclared global '" .. tostring(key) .. "'", 2) end,
    __index = function(_, key) error("undeclared global '" .. tostring(key) .. "'", 2) end,
  })
end

-- boot(path, opts) -> cfg, nil, warnings | nil, errors, warnings
-- opts: hostname, ncpu, sysconfdir, datadir, role ("worker", "router" or "check"), and for luamta test the
-- scenario file whose config table is laid over the file's.
function M.boot(path, opts)
  local config = require "luamta.config"
  if opts.scenario then      -- luamta test: the scenario's config table goes over the file's
    local scn, err = require("luamta.scenario").load(opts.scenario)
    if not scn then return nil, { err }, {} end
    opts.overlay = scn.config
  end
  local cfg, errors, warnings = config.load(path, opts)
  if not cfg then return nil, errors, warnings end
  warnings = warnings or {}
  core.set_config(cfg)

  local rules_dir = cfg.server.rules_dir
  local dirs = { rules_dir, opts.datadir .. "/rules" }
  package.path = rules_dir .. "/?.lua;" .. package.path
  -- server.rules, then server.extra_rules (modules added after the defaults without restating them)
  local names, keys = {}, {}
  for _, key in ipairs { "rules", "extra_rules" } do
    for i, name in ipairs(cfg.server[key] or {}) do
      names[#names + 1] = name
      keys[#keys + 1] = ("server.%s[%d]"):format(key, i)
    end
  end
  if opts.role == "router" then names, keys = { "routing" }, { "routing" } end
  errors = {}
  local loaded = {}
  local enforcer              -- the first module that enforces relay control
  open_sandbox()
  for i, name in ipairs(names) do
    local path_found
    for _, dir in ipairs(dirs) do
      if file_exists(dir .. "/" .. name .. ".lua") then
        path_found = dir .. "/" .. name .. ".lua"
        break
      end
    end
    if loaded[name] then
      errors[#errors + 1] = ("%s: %s: rule module %q is listed twice"):format(path, keys[i], name)
    elseif not path_found then
      errors[#errors + 1] = ("%s: %s: rule module %q not found; looked in %s")
        :format(path, keys[i], name, table.concat(dirs, " and "))
    else
      loaded[name] = true
      local mod = load_rule(name, path_found, errors)
      if mod and type(mod.check_warnings) == "function" and opts.role ~= "router" then
        -- A module may explain its configuration to `luamta check` (and to the log at start).
        local ok, list = pcall(mod.check_warnings)
        if ok and type(list) == "table" then
          for _, w in ipairs(list) do warnings[#warnings + 1] = path .. ": " .. tostring(w) end
        elseif not ok then
          errors[#errors + 1] = ("%s: rule module %q: check_warnings failed: %s"):format(path_found, name, tostring(list))
        end
      end
      if mod and (mod.enforces_relay == true or name == "relay") then   -- a shadowing relay.lua counts too
        enforcer = enforcer or name
      end
      if mod then
        for _, stage in ipairs(STAGES) do
          if type(mod[stage]) == "function" then
            local list = by_stage[stage]
            list[#list + 1] = { name = name, fn = mod[stage] }
          end
        end
      end
    end
  end
  -- Postfix refuses to start without reject_unauth_destination; so do we without a module that controls relay,
  -- unless the configuration says in so many words that this is an open relay (docs/admin.md, "Relay control").
  if opts.role ~= "router" and not enforcer and #errors == 0 and cfg.inbound.relay.enforce ~= "none" then
    errors[#errors + 1] = ("%s: server.rules: no rule module enforces relay control, so anyone could relay "
      .. "through this server; expected the bundled \"relay\" in server.rules (add site modules with "
      .. "server.extra_rules instead of restating the list), a module that sets M.enforces_relay = true, or "
      .. "inbound.relay.enforce = \"none\" for an open relay"):format(path)
  end
  if #errors > 0 then return nil, errors, warnings end
  freeze_globals()
  return cfg, nil, warnings
end

-- has(stage): true when some rule handles stage, so that the core can skip stages nobody watches.
function M.has(stage)
  return #by_stage[stage] > 0
end

-- current_rule(co): the rule that coroutine co is running, for error reports.
function M.current_rule(co)
  return running[co]
end

-- run(stage, ...) -> rule name, verdict | nothing. The first rule that returns a verdict decides.
function M.run(stage, ...)
  local list = by_stage[stage]
  local co = coroutine.running()
  local tracing = core.debugging()    -- luamta simulate and log.level = "debug" show every rule's answer
  for i = 1, #list do
    local rule = list[i]
    running[co] = rule.name
    local verdict = rule.fn(...)
    if verdict == nil and tracing then
      core.log("debug", ("stage=%s rule=%s: no opinion"):format(stage, rule.name))
    end
    if verdict ~= nil then
      if type(verdict) ~= "table" or type(verdict.action) ~= "string" then
        error(("rule %q: %s handler returned a %s; expected a verdict (mta.accept, mta.reject, ...) or nothing")
          :format(rule.name, stage, type(verdict)), 0)
      end
      running[co] = nil
      return rule.name, verdict
    end
  end
  running[co] = nil
end

return M
