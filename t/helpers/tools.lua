-- t/helpers/tools.lua - the external programs the tests run, and the Debian package of each. A helper that runs a
-- program asks need() first: when the program is missing the spec fails with "install PACKAGE", never skips.
-- ./bootstrap installs every package named here (t/integration/tools_spec.lua checks that it names them all).
--
--   local tools = require "t.helpers.tools"
--   local swaks = tools.need("swaks")                 -- the path, or an error: "install swaks (swaks is missing)"
--   tools.need_perl("Net::SSLeay")                     -- a Perl module, likewise
--   tools.need_python("smtplib")                       -- a Python module, likewise
local M = {}

-- program (or module) -> Debian package
M.PROGRAMS = {
  swaks = "swaks", openssl = "openssl", dnsmasq = "dnsmasq-base", ["smtp-sink"] = "postfix",
  ["smtp-source"] = "postfix", python3 = "python3", ss = "iproute2", ps = "procps", pgrep = "procps",
  timeout = "coreutils", setsid = "util-linux", unshare = "util-linux", promtool = "prometheus",
  ["fail2ban-regex"] = "fail2ban", ["fail2ban-server"] = "fail2ban", ["fail2ban-client"] = "fail2ban",
  pflogsumm = "pflogsumm", dovecot = "dovecot-core",
  ["dovecot-lmtp"] = "dovecot-lmtpd",
  setpriv = "util-linux", make = "make", strace = "strace", faketime = "faketime",
  ["systemd-analyze"] = "systemd", man = "man-db",
  ["redis-server"] = "redis-server", ["redis-cli"] = "redis-tools", rspamd = "rspamd",
}
M.PROGRAMS["lua5.4"] = "lua5.4"
M.PERL = { ["Net::SSLeay"] = "libnet-ssleay-perl" }
M.PYTHON = {}

local found = {}

local function sh_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function succeeds(cmd)
  local ok = os.execute(cmd .. " >/dev/null 2>&1")
  return ok == true or ok == 0
end

local function missing(what, package, level)
  error(("install %s (%s is missing)"):format(package, what), level + 1)
end

-- need(program, path) -> the path to run (path: where the program lives when it is not on PATH, as /usr/sbin)
function M.need(program, path)
  local package = M.PROGRAMS[program] or error("tools helper: no package is known for " .. program, 2)
  local key = path or program
  if found[key] == nil then
    if path then
      found[key] = succeeds("test -x " .. sh_quote(path))
    else
      found[key] = succeeds("command -v " .. sh_quote(program))
    end
  end
  if not found[key] then missing(path or program, package, 2) end
  return path or program
end

function M.need_perl(module)
  local package = M.PERL[module] or error("tools helper: no package is known for Perl's " .. module, 2)
  local key = "perl:" .. module
  if found[key] == nil then found[key] = succeeds("perl -M" .. module .. " -e 1") end
  if not found[key] then missing("Perl's " .. module, package, 2) end
end

function M.need_python(module)
  local package = M.PYTHON[module] or "python3"
  local key = "python:" .. module
  if found[key] == nil then found[key] = succeeds("python3 -c " .. sh_quote("import " .. module)) end
  if not found[key] then missing("Python's " .. module, package, 2) end
end

-- packages() -> every Debian package named above, sorted (for the bootstrap check)
function M.packages()
  local set, list = {}, {}
  for _, t in ipairs { M.PROGRAMS, M.PERL, M.PYTHON } do
    for _, p in pairs(t) do set[p] = true end
  end
  for p in pairs(set) do list[#list + 1] = p end
  table.sort(list)
  return list
end

return M
